"""The per-step uniform (docs/bundle-format.md, "The step uniform"): 128 bytes, rewritten before
every sampler step. Its layout is declared in ditformat/layout.py (STEP_FIELDS), which also generates the WGSL
`Step` struct, web/bundle-layout.js (packStep, used by web/schedule.js) and wasm/bundle-layout.h."""
from __future__ import annotations

import math
import struct

import numpy as np

from .layout import FLOATS, MAX_BRANCHES, STEP_BYTES, STEP_FIELDS, STEP_FLAGS, U32S  # noqa: F401

FLAG_CLIP, FLAG_DDPM, FLAG_NOISE, FLAG_V = (STEP_FLAGS[k] for k in ("clip", "ddpm", "noise", "v"))


def step_fields(tables: dict, i: int, *, seed: int, K: int = 1, J: int = 1, N: int = 1, var_branch: int = 0,
                coef=(1.0,), sampler: str = "ddim", eta: float = 0.0, clip_x0: bool = True, tau: float = 0.0,
                prediction: str = "eps") -> dict:
    """Every field of the step uniform for sampler index i; floats are float64 here, rounded at packing."""
    abar, ap = tables["abar"][i], tables["abar_prev"][i]
    sigma = eta * math.sqrt((1 - ap) / (1 - abar)) * math.sqrt(1 - abar / ap) if sampler == "ddim" else 0.0
    noisy = i > 0 and (sampler == "ddpm" or sigma > 0)
    flags = ((FLAG_CLIP if clip_x0 else 0) | (FLAG_DDPM if sampler == "ddpm" else 0) | (FLAG_NOISE if noisy else 0)
             | (FLAG_V if prediction == "v" else 0))
    return {"t": int(tables["t"][i]), "i": int(i), "seed": int(seed) & 0xFFFFFFFF, "zero": 0, "K": K, "J": J, "N": N,
            "var_branch": var_branch, "flags": flags,
            "sqrt_abar": tables["sqrt_abar"][i], "sqrt_1m_abar": tables["sqrt_1m_abar"][i],
            "coef1": tables["coef1"][i], "coef2": tables["coef2"][i], "log_beta": tables["log_beta"][i],
            "log_post_var": tables["log_post_var"][i], "sqrt_abar_prev": math.sqrt(ap),
            "ddim_dir": math.sqrt(max(1 - ap - sigma ** 2, 0.0)), "sigma": sigma,
            "perturb": tau * math.sqrt(1.0 - abar), "coef": [float(c) for c in coef]}


def rounded(fields: dict) -> dict:
    """The fields as the GPU sees them (f32), for the torch references."""
    out = dict(fields)
    for k in FLOATS:
        out[k] = float(np.float32(fields[k]))
    out["coef"] = [float(np.float32(c)) for c in fields["coef"]]
    return out


def pack_step(f: dict) -> bytes:
    if len(f["coef"]) > MAX_BRANCHES:
        raise ValueError(f"at most {MAX_BRANCHES} guidance branches, got {len(f['coef'])}")
    raw = b""
    for name, ty, count in STEP_FIELDS:
        if count > 1:
            values = list(f[name]) + [0] * (count - len(f[name]))
        else:
            values = [0 if name.startswith("_") or name == "zero" else f[name]]
        raw += struct.pack(f"<{count}{'I' if ty == 'u32' else 'f'}", *values)
    assert len(raw) == STEP_BYTES
    return raw

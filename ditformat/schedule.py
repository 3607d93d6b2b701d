"""The noise schedule and the respaced sampler tables, float64 numpy (no torch).

The same arithmetic, operation for operation, as dit_model/diffusion.py's Diffusion (tests check the
tables bit for bit) and web/schedule.js's samplerTables. i = 0 is the least noisy index; t[i] is the
original timestep the model is called with."""
from __future__ import annotations

import numpy as np

NUM_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02          # the DDPM linear schedule
PREDICTIONS = ("eps", "v")                 # what the network's first C output channels are


def linear_betas(T: int = NUM_TIMESTEPS) -> np.ndarray:
    return np.linspace(BETA_START, BETA_END, T, dtype=np.float64)


def respaced_timesteps(steps: int, T: int = NUM_TIMESTEPS) -> np.ndarray:
    """S_i = round(i (T - 1) / (N - 1)), i = 0 .. N-1 (numpy's round: half to even)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    if steps == 1:
        return np.array([T - 1])
    return np.round(np.arange(steps) * (T - 1) / (steps - 1)).astype(np.int64)


def sampler_tables(steps: int, base_betas=None) -> dict:
    """float64 per-index tables of a `steps`-step respaced sampler, as lists (JSON-ready)."""
    base = linear_betas() if base_betas is None else np.asarray(base_betas, np.float64)
    base_abar = np.cumprod(1.0 - base)
    t = respaced_timesteps(steps, len(base))
    abar = base_abar[t]
    abar_prev = np.append(1.0, abar[:-1])
    betas = 1.0 - abar / abar_prev
    alphas = 1.0 - betas
    pv = betas * (1.0 - abar_prev) / (1.0 - abar)
    log_post_var = np.log(np.append(pv[1], pv[1:])) if len(pv) > 1 else np.log(np.maximum(pv, 1e-20))
    return {"t": [int(v) for v in t], "sqrt_abar": np.sqrt(abar).tolist(), "sqrt_1m_abar": np.sqrt(1.0 - abar).tolist(),
            "coef1": (betas * np.sqrt(abar_prev) / (1.0 - abar)).tolist(),
            "coef2": ((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)).tolist(),
            "log_beta": np.log(betas).tolist(), "log_post_var": log_post_var.tolist(),
            "abar": abar.tolist(), "abar_prev": abar_prev.tolist()}

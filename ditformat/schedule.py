"""The noise schedule and the respaced sampler tables, float64 (numpy, no torch).

A bundle carries no tables: its manifest names the schedule (`sampler`: linear betas from beta_start to
beta_end over num_timesteps) and each runtime computes the tables of a step count itself, with this
module (wgpu-py) or web/schedule.js (the page), operation for operation the same IEEE-754 float64
arithmetic, so both give the exporter's tables bit for bit (tests/test_format.py checks every step count
1..1000). Only +, -, *, / and sqrt are used (correctly rounded everywhere, never fused: numpy's
element-wise ops and JavaScript do not contract a*b+c); the logarithm is `portable_log` below, built from
those operations, because np.log (SIMD code chosen per CPU) and JavaScript's Math.log (left to the
engine) differ from each other in the last bit for ~2.5% of the table entries.
i = 0 is the least noisy index; t[i] is the original timestep the model is called with."""
from __future__ import annotations

import numpy as np

from .schema import SCHEMA

NUM_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02          # the DDPM linear schedule
PREDICTIONS = tuple(SCHEMA["types"]["prediction"]["enum"])   # what the network's first C output channels are: eps, v
SCHEDULE = {"schedule": "linear", "num_timesteps": NUM_TIMESTEPS, "beta_start": BETA_START, "beta_end": BETA_END}

SQRT_HALF = 0.7071067811865476
LN2_HI = 6.93147180369123816490e-01        # ln 2 split so that e * LN2_HI is exact for |e| < 2^20
LN2_LO = 1.90821492927058770002e-10
LOG_TERMS = 12                             # atanh series terms: s^2 <= 0.0295, 0.0295^12 < 1e-18


def linear_betas(T: int = NUM_TIMESTEPS, start: float = BETA_START, end: float = BETA_END) -> np.ndarray:
    """start + i (end - start) / (T - 1), the last one exactly `end` (numpy's linspace, written out)."""
    i = np.arange(T, dtype=np.float64)
    b = i * ((end - start) / (T - 1)) + start if T > 1 else np.array([start])
    b[-1] = end
    return b


def portable_log(x) -> np.ndarray:
    """ln x (x > 0, normal) to about 1 ulp from IEEE +, -, *, / only, the same bits on every machine:
    x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m - 1) / (m + 1), as a Horner
    series in s^2; ln x = e LN2_HI + (ln m + e LN2_LO). web/schedule.js portableLog is the twin."""
    x = np.asarray(x, np.float64)
    m, e = np.frexp(x)                      # exact: m in [0.5, 1)
    small = m < SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = np.where(small, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    r = np.full_like(z, 2.0 / (2 * LOG_TERMS + 1))
    for k in range(LOG_TERMS - 1, 0, -1):
        r = r * z + 2.0 / (2 * k + 1)
    ln_m = 2.0 * s + s * (z * r)
    return e * LN2_HI + (ln_m + e * LN2_LO)


def respaced_timesteps(steps: int, T: int = NUM_TIMESTEPS) -> np.ndarray:
    """S_i = round(i (T - 1) / (N - 1)), i = 0 .. N-1 (numpy's round: half to even)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    if steps == 1:
        return np.array([T - 1])
    return np.round(np.arange(steps) * (T - 1) / (steps - 1)).astype(np.int64)


def schedule_betas(schedule: dict | None = None) -> np.ndarray:
    """The base betas a manifest's `sampler` names (only the linear schedule exists)."""
    s = SCHEDULE if schedule is None else schedule
    if s.get("schedule") != "linear":
        raise ValueError(f"unknown noise schedule {str(s.get('schedule'))[:40]!r}")
    return linear_betas(int(s["num_timesteps"]), float(s["beta_start"]), float(s["beta_end"]))


def respaced(steps: int, base_betas: np.ndarray) -> dict:
    """The float64 arrays of a `steps`-step process respaced from `base_betas` (per sampler index i, 0 = least
    noisy): t (the original timestep), abar, abar_prev, betas, posterior_variance, log_post_var (the posterior
    log-variance, clipped at i = 0), coef1, coef2 (posterior mean coefficients of x0 and x_t), log_beta. The one
    implementation: sampler_tables (the runtimes) and dit_model.diffusion.Diffusion (training, torch sampling)."""
    base_abar = np.cumprod(1.0 - np.asarray(base_betas, np.float64))   # sequential products, as web/schedule.js
    t = respaced_timesteps(steps, len(base_abar))
    abar = base_abar[t]
    abar_prev = np.append(1.0, abar[:-1])
    betas = 1.0 - abar / abar_prev
    alphas = 1.0 - betas
    pv = betas * (1.0 - abar_prev) / (1.0 - abar)
    log_post_var = portable_log(np.append(pv[1], pv[1:])) if len(pv) > 1 else portable_log(np.maximum(pv, 1e-20))
    return {"t": t, "abar": abar, "abar_prev": abar_prev, "betas": betas, "posterior_variance": pv,
            "log_post_var": log_post_var, "coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar), "log_beta": portable_log(betas)}


def sampler_tables(steps: int, schedule: dict | None = None) -> dict:
    """float64 per-index tables of a `steps`-step respaced sampler, as lists (JSON-ready)."""
    r = respaced(steps, schedule_betas(schedule))
    abar = r["abar"]
    return {"t": [int(v) for v in r["t"]], "sqrt_abar": np.sqrt(abar).tolist(),
            "sqrt_1m_abar": np.sqrt(1.0 - abar).tolist(), "coef1": r["coef1"].tolist(), "coef2": r["coef2"].tolist(),
            "log_beta": r["log_beta"].tolist(), "log_post_var": r["log_post_var"].tolist(),
            "abar": abar.tolist(), "abar_prev": r["abar_prev"].tolist()}

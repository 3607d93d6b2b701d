"""Gaussian diffusion as in DDPM / Improved DDPM / ADM, with 0-based timesteps
t = 0 .. T-1 (t = 0 is the least noisy; abar_t = prod_{s<=t} (1 - beta_s)).

Tables are float64 numpy; per-sample values are gathered and cast to the tensor's dtype.
A `Diffusion` is either the base process (T = 1000) or a respaced one (N steps), whose
`timestep_map[i]` is the original t the model is called with.

The network's first C output channels are either eps (the paper) or v = sqrt(abar) eps -
sqrt(1 - abar) x0 (Salimans & Ho, "Progressive distillation"): from x_t = sqrt(abar) x0 +
sqrt(1 - abar) eps it follows that x0 = sqrt(abar) x_t - sqrt(1 - abar) v and eps = sqrt(1 - abar)
x_t + sqrt(abar) v, so a v-model is sampled by the same DDPM / DDIM updates. At high noise an
eps-model's x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies its error by up to 1 / sqrt(abar)
(~160 at t = 999): v keeps the x0 estimate well conditioned at every t.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ditformat.schedule import NUM_TIMESTEPS, PREDICTIONS, linear_betas, respaced

LOSS_WEIGHTINGS = ("none", "min-snr")


class Diffusion:
    def __init__(self, steps: int = NUM_TIMESTEPS, base_betas: np.ndarray | None = None, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        base = linear_betas() if base_betas is None else np.asarray(base_betas, np.float64)
        # the tables of ditformat.schedule.respaced: the runtimes' sampler tables, bit for bit
        r = respaced(steps, base)
        self.timestep_map = r["t"]                                           # S_i
        self.betas = r["betas"]                                              # betas'[i]
        self.alphas = 1.0 - self.betas
        self.abar, self.abar_prev = r["abar"], r["abar_prev"]
        self.num_timesteps = len(self.betas)
        self.sqrt_abar = np.sqrt(self.abar)
        self.sqrt_1m_abar = np.sqrt(1.0 - self.abar)
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = r["posterior_variance"]
        self.posterior_log_variance_clipped = r["log_post_var"]
        self.coef1, self.coef2 = r["coef1"], r["coef2"]
        self.log_betas = r["log_beta"]
        self.snr = self.abar / (1.0 - self.abar)                             # signal-to-noise ratio abar / (1 - abar)

    @staticmethod
    def _at(table: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped (N, 1, 1, 1) to broadcast over x."""
        v = torch.from_numpy(table).to(device=like.device)[t.long().cpu()].to(like.dtype)
        return v.reshape(-1, *([1] * (like.dim() - 1)))

    # ---------------------------------------------------------- forward process
    def q_sample(self, x0, t, noise):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return self._at(self.sqrt_abar, t, x0) * x0 + self._at(self.sqrt_1m_abar, t, x0) * noise

    def q_posterior(self, x0, xt, t):
        """Mean c1 x_0 + c2 x_t and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.coef1, t, xt) * x0 + self._at(self.coef2, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt), self._at(self.posterior_log_variance_clipped, t, xt)

    def predict_x0(self, xt, t, eps):
        return (xt - self._at(self.sqrt_1m_abar, t, xt) * eps) / self._at(self.sqrt_abar, t, xt)

    def eps_from_x0(self, xt, t, x0):
        return (xt - self._at(self.sqrt_abar, t, xt) * x0) / self._at(self.sqrt_1m_abar, t, xt)

    def v_target(self, x0, t, noise):
        """v = sqrt(abar) eps - sqrt(1 - abar) x0."""
        return self._at(self.sqrt_abar, t, x0) * noise - self._at(self.sqrt_1m_abar, t, x0) * x0

    def x0_eps_from_output(self, pred, xt, t):
        """(x0, eps) from the network's prediction (eps or v) at x_t."""
        if self.prediction == "v":
            sa, s1 = self._at(self.sqrt_abar, t, xt), self._at(self.sqrt_1m_abar, t, xt)
            return sa * xt - s1 * pred, s1 * xt + sa * pred
        return self.predict_x0(xt, t, pred), pred

    def loss_weight(self, t, weighting: str = "none", gamma: float = 5.0) -> torch.Tensor:
        """Per-sample weight of the MSE. min-snr (Hang et al., "Efficient Diffusion Training via
        Min-SNR Weighting Strategy"): the x0-space weight min(SNR, gamma), expressed for the target
        trained: / SNR for eps, / (SNR + 1) for v."""
        if weighting == "none":
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        if weighting != "min-snr":
            raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}")
        snr = self.snr[t.long().cpu().numpy()]
        w = np.minimum(snr, gamma) / (snr + 1.0 if self.prediction == "v" else snr)
        return torch.from_numpy(w.astype(np.float32)).to(t.device)

    # ---------------------------------------------------------- reverse process
    def p_mean_variance(self, out, xt, t, clip_x0: bool = False):
        """From the network output (eps | v) to the model mean and log-variance (learned range)."""
        C = xt.shape[1]
        if out.shape[1] == 2 * C:
            pred, var = out[:, :C], out[:, C:]
            frac = (var + 1) / 2                                             # f = (v + 1) / 2, the variance interpolation
            logvar = frac * self._at(self.log_betas, t, xt) + (1 - frac) * self._at(self.posterior_log_variance_clipped, t, xt)
        else:
            pred = out
            logvar = self._at(self.posterior_log_variance_clipped, t, xt).expand_as(xt)
        x0, eps = self.x0_eps_from_output(pred, xt, t)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return {"mean": mean, "logvar": logvar, "x0": x0, "eps": eps}

    # ---------------------------------------------------------- loss
    def training_losses(self, model, x0, t, y, noise, weighting: str = "none", gamma: float = 5.0):
        """Hybrid loss per sample: weight(t) x L_simple (MSE on eps or v) + L_vlb (bits/dim, mean detached)."""
        xt = self.q_sample(x0, t, noise)
        out = model(xt, torch.from_numpy(self.timestep_map).to(t.device)[t], y)
        C = x0.shape[1]
        target = self.v_target(x0, t, noise) if self.prediction == "v" else noise
        mse = ((target - out[:, :C]) ** 2).mean(dim=(1, 2, 3))
        if weighting != "none":
            mse = self.loss_weight(t, weighting, gamma) * mse
        terms = {"mse": mse}
        if out.shape[1] == 2 * C:
            frozen = torch.cat([out[:, :C].detach(), out[:, C:]], dim=1)     # L_vlb trains only the variance
            terms["vlb"] = self.vlb_terms(frozen, x0, xt, t)
            terms["loss"] = mse + terms["vlb"]
        else:
            terms["loss"] = mse
        return terms

    def vlb_terms(self, out, x0, xt, t):
        """KL(q || p_theta) for t >= 1 and the decoder NLL for t = 0, in bits per dimension."""
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        p = self.p_mean_variance(out, xt, t)
        kl = normal_kl(true_mean, true_logvar, p["mean"], p["logvar"]).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, p["mean"], p["logvar"]).mean(dim=(1, 2, 3)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    # ---------------------------------------------------------- one sampler step
    def ddpm_step(self, out, xt, i: int, noise, clip_x0: bool = False):
        """x_{t-1} = mu_theta(x_t) + exp(logS / 2) z, no noise at i = 0."""
        t = torch.full((xt.shape[0],), i, dtype=torch.long)
        p = self.p_mean_variance(out, xt, t, clip_x0)
        return p["mean"] + (torch.exp(0.5 * p["logvar"]) * noise if i > 0 else 0.0)

    def ddim_sigma(self, i: int, eta: float) -> float:
        a, ap = self.abar[i], self.abar_prev[i]
        return float(eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap))

    def ddim_step(self, out, xt, i: int, noise, eta: float = 0.0, clip_x0: bool = False):
        """x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z."""
        t = torch.full((xt.shape[0],), i, dtype=torch.long)
        p = self.p_mean_variance(out, xt, t, clip_x0)
        eps = self.eps_from_x0(xt, t, p["x0"])                               # consistent with a clipped x0
        sigma = self.ddim_sigma(i, eta)
        ap = float(self.abar_prev[i])
        x = math.sqrt(ap) * p["x0"] + math.sqrt(max(1 - ap - sigma ** 2, 0.0)) * eps
        return x + sigma * noise if sigma > 0 else x


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _phi(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x, mean, logvar):
    """log P(x) for 8-bit data in [-1, 1] under N(mean, e^logvar), with open end bins."""
    s = torch.exp(0.5 * logvar)
    cdf_plus = _phi((x + 1 / 255 - mean) / s)
    cdf_minus = _phi((x - 1 / 255 - mean) / s)
    prob = torch.where(x < -0.999, cdf_plus, torch.where(x > 0.999, 1 - cdf_minus, cdf_plus - cdf_minus))
    return torch.log(prob.clamp(min=1e-12))

"""The sampling loop (torch): guided DDPM / DDIM with the project's counter-based noise."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ditformat.errors import NonFiniteError
from ditformat.guidance import Guide, make_plan

from .diffusion import Diffusion
from .guidance import combine
from .noise import STREAM_INIT, STREAM_PERTURB, STREAM_STEP, normal_tensor

SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def sample_images(model: Callable, *, in_channels: int, input_size: int, num_classes: int,
                  class_ids: list[int], guide: Guide = Guide(), steps: int = 50, sampler: str = "ddim",
                  eta: float = 0.0, seed: int = 0, clip_x0: bool = True, prediction: str = "eps",
                  on_step: Callable[[int, int], None] | None = None, null=None) -> torch.Tensor:
    """Returns x_0 (N, C, I, I) in the model's space; `model(x, t, y)` is any DiT-like callable whose
    first C output channels are `prediction` ("eps" or "v"). Guides combine the raw outputs (they
    are linear in them), and the sampler converts the guided output with the unperturbed x_t.
    A model with label levels takes labels as tuples of one id per level (`class_ids`, the guide's
    classes), and `null` is then its unconditional label (the tuple of the level sizes)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    guide.validate(num_classes)
    diff = Diffusion(steps, prediction=prediction)
    N, C, I = len(class_ids), in_channels, input_size
    plan = make_plan(guide, class_ids, num_classes if null is None else tuple(null))
    K, J = guide.copies, len(plan.labels)
    y = torch.tensor([c for _ in range(K) for branch in plan.labels for c in branch], dtype=torch.long)  # (K*J*N[, L])
    x = normal_tensor(seed, STREAM_INIT, 0, (N, C, I, I))                                            # x_T
    for n_done, i in enumerate(reversed(range(steps))):
        t = int(diff.timestep_map[i])
        xk = x[None].expand(K, N, C, I, I)
        if K > 1:
            z = normal_tensor(seed, STREAM_PERTURB, i, (K, N, C, I, I))
            xk = xk + guide.batch_tau * math.sqrt(1.0 - diff.abar[i]) * z
        x_in = xk[:, None].expand(K, J, N, C, I, I).reshape(K * J * N, C, I, I)
        out = model(x_in, torch.full((K * J * N,), t, dtype=torch.long), y)
        out = out.reshape(K, J, N, *out.shape[1:])
        guided = combine(out, plan.coefficients(guide.scale_at(n_done, steps, t)), plan.var_branch, C)
        needs_noise = sampler == "ddpm" or eta > 0
        noise = normal_tensor(seed, STREAM_STEP, i, (N, C, I, I)) if needs_noise and i > 0 else torch.zeros_like(x)
        if sampler == "ddpm":
            x = diff.ddpm_step(guided, x, i, noise, clip_x0)
        else:
            x = diff.ddim_step(guided, x, i, noise, eta, clip_x0)
        if not bool(torch.isfinite(x).all()):                 # NaN / Inf never reach an image silently
            raise NonFiniteError(f"sampling (torch runtime): the latents became non-finite ({_count(x)}) at step "
                                 f"{n_done + 1} of {steps} (t={t}); the model's output overflows or its weights are "
                                 f"not finite")
        if on_step:
            on_step(n_done + 1, steps)
    if not bool(torch.isfinite(x).all()):                     # steps == 0 or a later change: x0 itself
        raise NonFiniteError(f"sampling (torch runtime): the final x0 is non-finite ({_count(x)})")
    return x


def _count(x: torch.Tensor) -> str:
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    return ", ".join(f"{n} {w}" for n, w in ((nan, "NaN"), (inf, "Inf")) if n) + f" of {x.numel()} values"

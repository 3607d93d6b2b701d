"""The torch side of guidance: combine the model's outputs over the branches of a guidance plan.
The guide and its plan (Guide, Plan, make_plan, parse_interval) are part of the format: ditformat/guidance.py."""
from __future__ import annotations

import numpy as np


def combine(out: torch.Tensor, coeffs: np.ndarray, var_branch: int, C: int) -> torch.Tensor:
    """out (K, J, N, C_out, H, W) -> guided (N, C_out, H, W): sum_j a_j eps_j, mean over K."""
    import torch                      # here, not at the top: `import dit_model.guidance` needs no torch
    a = torch.as_tensor(coeffs, dtype=out.dtype).reshape(1, -1, 1, 1, 1, 1)
    eps = (a * out[:, :, :, :C]).sum(dim=1).mean(dim=0)                    # (N, C, H, W)
    if out.shape[3] == C:
        return eps
    return torch.cat([eps, out[:, var_branch, :, C:].mean(dim=0)], dim=1)  # (N, 2C, H, W)

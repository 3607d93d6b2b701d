"""The VAE decoder as a dispatch program (docs/vae.md): the decoder's weights in the layouts its kernels read.

conv2d kernels (wgsl/conv2d.wgsl.j2) read a (C_out, C_in, k, k) convolution transposed to (C_in * k * k, C_out4),
output channel fastest, C_out4 = C_out rounded up to a multiple of 4 with zero columns, so that four output
channels are one vec4 load."""
from __future__ import annotations

import numpy as np


def conv_layout(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, k, k) -> (C_in * k * k, C_out4) in the same dtype, zero columns past C_out."""
    w = np.asarray(w)
    co = w.shape[0]
    t = w.reshape(co, -1).T                                     # (C_in * k * k, C_out)
    out = np.zeros((t.shape[0], -(-co // 4) * 4), w.dtype)
    out[:, :co] = t
    return out

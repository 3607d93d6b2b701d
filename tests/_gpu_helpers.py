"""Shared GPU helpers for the wgpu tests. In CI Mesa lavapipe is installed, so a missing adapter is a
failure (pytest.fail), never a skip."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def gpu():
    from runtime_py.gpu import NoAdapterError, get_gpu
    try:
        return get_gpu(verbose=False)
    except NoAdapterError as e:
        pytest.fail(f"no WebGPU adapter: {e}")


def small_cfg(conditioning: str = "adaln-zero", **kw):
    """The 'small custom config' of the issue: 8x8x4, p=2, D=64, depth 2, 4 heads, 5 classes."""
    from dit_model.model import DiTConfig
    fields = dict(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=5,
                  conditioning=conditioning)
    fields.update(kw)
    return DiTConfig(**fields)


def random_model(cfg, seed: int = 0):
    from dit_model.model import DiT
    from export.bundle import randomize_
    return randomize_(DiT(cfg).eval(), seed)

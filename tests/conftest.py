import os

import pytest
import torch

# Bundles run their dispatches' own kernels in tests (a pinned plan: no timing, no plan cache written);
# tests/test_tune.py exercises the timed plans with its own cache folder.
os.environ.setdefault("DITWEB_PLAN", "default")

# Two cores shared with other work: tests keep torch single-threaded unless they say otherwise.
torch.set_num_threads(int(os.environ.get("DITWEB_TEST_THREADS", "1")))


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Randomise every trainable tensor (gates and zero-initialised layers included): a fresh
    adaLN-Zero DiT outputs exactly zero, so a parity test on it would prove nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            fan_in = p.shape[1] if p.dim() == 2 else (p[0].numel() if p.dim() > 2 else 1)
            scale = std if p.dim() == 1 else 1.0 / fan_in ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture
def tiny_cfg():
    from dit_model.model import DiTConfig
    return DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3)

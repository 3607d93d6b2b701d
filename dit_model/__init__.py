"""The DiT in PyTorch: model, diffusion, guidance, training, sampling, checkpoints.

Public API (imported lazily: `import dit_model` and its numpy-only modules such as dit_model.noise
do not import torch; the names below do, on first use; Guide is ditformat.guidance.Guide):
    from dit_model import DiT, DiTConfig, Diffusion, Guide, load_model, sample_images
"""
import importlib

_LAZY = {"DiT": "model", "DiTConfig": "model", "PRESETS": "model", "preset_config": "model",
         "Diffusion": "diffusion", "Guide": "guidance", "load_model": "checkpoint", "save_weights": "checkpoint",
         "CheckpointError": "checkpoint", "sample_images": "sample"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

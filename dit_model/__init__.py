"""The DiT in PyTorch: model, diffusion, guidance, training, sampling, checkpoints.

Public API (imported lazily: `import dit_model` and its numpy-only modules such as dit_model.noise
do not import torch; the names below do, on first use; Guide is ditformat.guidance.Guide):
    from dit_model import DiT, DiTConfig, Diffusion, Guide, load_model, sample_images
"""
from ditformat.lazy import lazy_attributes

_LAZY = {"DiT": "model", "DiTConfig": "model", "PRESETS": "model", "preset_config": "model",
         "Diffusion": "diffusion", "Guide": "ditformat.guidance", "load_model": "checkpoint", "save_weights": "checkpoint",
         "CheckpointError": "checkpoint", "sample_images": "sample"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

"""The wgpu-py runtime: load a verified bundle and run it, with numpy + wgpu only (no torch).

    from runtime_py import Bundle
    bundle = Bundle.load("bundles/default")
    x0 = bundle.sample(2, seed=0, steps=50, cfg=4.0)        # (1, C, I, I) in [-1, 1]
    out = bundle.forward(x, t, y)                           # one model call, (B, C_out, I, I)

Names are imported lazily, so `runtime_py.verify` (used by the site publisher) does not load wgpu."""
from ditformat.lazy import lazy_attributes

_LAZY = {"Bundle": "bundle", "BundleError": "verify", "verify_bundle": "verify", "DeviceLimitError": "gpu",
         "NoAdapterError": "gpu"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

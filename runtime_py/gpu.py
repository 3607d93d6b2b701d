"""The wgpu-py device: adapter choice, device limits, pipelines from the manifest's kernel table,
buffers. Shared by the bundle runtime, the kernel parity checks and the benchmarks."""
from __future__ import annotations

import functools
import os
import re
import sys
import tempfile

import numpy as np
import wgpu

from ditformat.errors import DitwebError

# Limits the bundles can need beyond WebGPU's defaults: requested at the adapter's values.
WANTED_LIMITS = ("max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroup-storage-size",
                 "max-compute-invocations-per-workgroup", "max-storage-buffers-per-shader-stage",
                 "max-compute-workgroups-per-dimension")
BINDING_TYPES = {"uniform": wgpu.BufferBindingType.uniform,
                 "read-only-storage": wgpu.BufferBindingType.read_only_storage,
                 "storage": wgpu.BufferBindingType.storage}


class DeviceLimitError(DitwebError):
    """The bundle or the batch needs more than this adapter allows."""


class NoAdapterError(DitwebError):
    """No WebGPU adapter: install Mesa lavapipe (apt-get install mesa-vulkan-drivers). A DitwebError so
    that the CLI reports it in one line."""


class GPURefusedError(DitwebError):
    """The GPU refused a kernel, a binding or a dispatch of a bundle (a WGSL compile or validation error that the
    verifiers did not foresee): one line naming the GPU objects (kernels, dispatches) the driver names."""


_LABEL = re.compile(r"label = '([^']*)'")
_DECORATION = re.compile(r"\s*(?:[\u2500-\u257f^|].*|[0-9]+\s*\u2502.*)")       # the source excerpt's drawing


def refused(e: Exception, what: str) -> GPURefusedError:
    """wgpu-py's multi-line GPUError -> one line: what was being done, the labels it names, its reasons."""
    text = str(e)
    labels = list(dict.fromkeys(_LABEL.findall(text)))
    reasons = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() not in ("Validation Error", "Caused by:")
               and not ln.strip().startswith("In ") and not _DECORATION.fullmatch(ln)]
    named = f" ({', '.join(repr(x) for x in labels[:4])})" if labels else ""
    line = f"{what}: the GPU refused it{named}: {'; '.join(reasons) or type(e).__name__}"
    return GPURefusedError("".join(c if c.isprintable() else repr(c)[1:-1] for c in line)[:600])


def refuses_gpu_errors(what: str):
    """Decorator: a GPU validation error inside the call becomes a one-line GPURefusedError (no traceback)."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except wgpu.GPUError as e:
                raise refused(e, what) from None
        return call
    return wrap


def _rank(adapter) -> int:
    info = adapter.info
    kind = str(info.get("adapter_type", "")).lower()
    backend = str(info.get("backend_type", "")).lower()
    if "discrete" in kind:
        return 0
    if "integrated" in kind:
        return 1
    if backend == "vulkan":          # Mesa lavapipe (CPU) through Vulkan: the tested software path
        return 2
    return 3                         # e.g. llvmpipe through OpenGL


def pick_adapter():
    """A hardware GPU if any, else Mesa lavapipe (Vulkan), else any software adapter."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # Mesa's EGL probe (the OpenGL backend) prints "XDG_RUNTIME_DIR is invalid" on headless machines
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ditweb-xdg-")
    adapters = wgpu.gpu.enumerate_adapters_sync()
    if not adapters:
        raise NoAdapterError("no WebGPU adapter found; install Mesa lavapipe: apt-get install mesa-vulkan-drivers")
    return sorted(adapters, key=_rank)[0]


def describe(adapter) -> str:
    info = adapter.info
    return f"{info.get('device', '?')} ({info.get('backend_type', '?')}, {info.get('adapter_type', '?')})"


class GPU:
    def __init__(self, verbose: bool = True):
        self.adapter = pick_adapter()
        self.name = describe(self.adapter)
        if verbose:
            print(f"ditweb: using adapter {self.name}", file=sys.stderr)
        limits = {k: self.adapter.limits[k] for k in WANTED_LIMITS if k in self.adapter.limits}
        self.timestamps = "timestamp-query" in self.adapter.features
        features = ["timestamp-query"] if self.timestamps else []
        self.device = self.adapter.request_device_sync(label="ditweb", required_limits=limits,
                                                       required_features=features)
        self.limits = self.device.limits

    def limit(self, name: str) -> int:
        return int(self.limits[name])

    # ------------------------------------------------------------- pipelines
    def pipeline(self, code: str, label: str, bindings: list[dict]):
        """A compute pipeline with an explicit bind group layout from the manifest's binding types; a kernel the GPU
        refuses (compile or layout error) is a one-line GPURefusedError naming it."""
        try:
            module = self.device.create_shader_module(code=code, label=label)
            entries = [{"binding": b["binding"], "visibility": wgpu.ShaderStage.COMPUTE,
                        "buffer": {"type": BINDING_TYPES[b["type"]]}} for b in bindings]
            bgl = self.device.create_bind_group_layout(entries=entries, label=label)
            layout = self.device.create_pipeline_layout(bind_group_layouts=[bgl], label=label)
            pipe = self.device.create_compute_pipeline(layout=layout, compute={"module": module, "entry_point": "main"},
                                                       label=label)
        except wgpu.GPUError as e:
            raise refused(e, f"kernel {label}") from None
        return pipe, bgl

    # ------------------------------------------------------------- buffers
    def buffer(self, nbytes: int, label: str, data: bytes | None = None, uniform: bool = False):
        nbytes = max(16, -(-int(nbytes) // 16) * 16)
        if not uniform and nbytes > self.limit("max-storage-buffer-binding-size"):
            raise DeviceLimitError(f"buffer {label!r} needs {nbytes} bytes; this adapter's maxStorageBufferBindingSize "
                                   f"is {self.limit('max-storage-buffer-binding-size')} (use a smaller batch)")
        usage = (wgpu.BufferUsage.UNIFORM if uniform else wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
        buf = self.device.create_buffer(size=nbytes, usage=usage | wgpu.BufferUsage.COPY_DST, label=label)
        if data is not None:
            self.write(buf, data)
        return buf

    def write(self, buf, data) -> None:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if len(raw) % 4:
            raw += b"\0" * (-len(raw) % 4)
        if raw:
            self.device.queue.write_buffer(buf, 0, raw)

    def read(self, buf, dtype=np.float32, count: int | None = None) -> np.ndarray:
        raw = self.device.queue.read_buffer(buf)
        a = np.frombuffer(raw, dtype=dtype)
        return (a if count is None else a[:count]).copy()

    def bind_group(self, bgl, buffers: list, label: str):
        try:
            return self.device.create_bind_group(layout=bgl, label=label,
                                                 entries=[{"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
                                                          for i, b in enumerate(buffers)])
        except wgpu.GPUError as e:
            raise refused(e, f"dispatch {label}") from None


_GPU: GPU | None = None


def get_gpu(verbose: bool = True) -> GPU:
    """One device per process: pipelines and buffers of several bundles share it."""
    global _GPU
    if _GPU is None:
        _GPU = GPU(verbose)
    return _GPU

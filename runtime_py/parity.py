"""Kernel parity: run one op-table kernel on the GPU and compare it with its float64 torch reference.

Used by tests/test_kernels.py (random inputs, awkward shapes) and by `ditweb validate` (every
dispatch of a bundle at its real shapes, on the inputs the GPU itself produced). The tolerance is
judged against torch's own float32 error on the same inputs (wgsl.ops.tolerance)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wgsl.ops import OPS, Op, binding_type, tolerance

from .gpu import GPU
from .step import pack_step, rounded


@dataclass
class Row:
    kernel: str
    shape: str
    max_abs: float
    max_rel: float
    tol: float
    passed: bool
    where: str = ""


def weight_bytes(a: np.ndarray, wdtype: str) -> bytes:
    """Weights as a bundle stores them: f32, or f16 (uploaded as u32 pairs, padded to 4 bytes)."""
    return np.asarray(a, np.float16 if wdtype == "f16" else np.float32).tobytes()


def to_torch(arr: np.ndarray, kind: str, wdtype: str, dtype) -> torch.Tensor:
    if kind == "u32":
        return torch.from_numpy(np.asarray(arr, np.int64))
    a = np.asarray(arr, np.float16 if (kind == "w" and wdtype == "f16") else np.float32)
    return torch.from_numpy(a.astype(np.float64)).to(dtype)


def reference(op: Op, inputs: dict, params: dict, variant: dict, wdtype: str, step: dict | None, dtype):
    kinds = {b.name: b.kind for b in op.bindings}
    x = {k: to_torch(v, kinds[k], wdtype, dtype) for k, v in inputs.items()}
    with torch.no_grad():
        return op.reference(x, {**params, **variant}, variant, step)


def compare(op: Op, kernel: str, shape: str, got: dict, inputs: dict, params: dict, variant: dict, wdtype: str,
            step: dict | None) -> Row:
    """got: output binding -> GPU result (numpy). Reference in float64, torch float32 for the tolerance."""
    ref64 = reference(op, inputs, params, variant, wdtype, step, torch.float64)
    ref32 = reference(op, inputs, params, variant, wdtype, step, torch.float32)
    # each written binding has its own scale and tolerance (t_in's integers must not loosen x_in's)
    worst = None
    for name, r in ref64.items():
        r = r.double().numpy()
        g = np.asarray(got[name], np.float64)[: r.size]
        d = np.abs(g - r)
        d[np.isnan(d)] = np.inf
        err = float(d.max()) if d.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        err32 = float(np.abs(ref32[name].double().numpy() - r).max()) if r.size else 0.0
        tol = tolerance(op, err32, scale)
        if op.exact:       # bit equality (the RNG)
            ok = bool(np.array_equal(g.astype(np.float32).view(np.uint32), r.astype(np.float32).view(np.uint32)))
        else:
            ok = err <= tol
        ratio = err / tol if tol > 0 else (0.0 if ok else np.inf)
        where = f"{name}[{int(d.argmax())}]: gpu {g[d.argmax()]:.8g} vs torch {r[d.argmax()]:.8g}" if d.size else name
        row = Row(kernel, shape, err, err / max(scale, 1e-30), tol, ok, "" if ok else where)
        if worst is None or (not ok and worst.passed) or (ok == worst.passed and ratio > worst_ratio):
            worst, worst_ratio = row, ratio
    return worst


def run_kernel(gpu: GPU, op: Op, variant: dict, wdtype: str, params: dict, inputs: dict, step: dict | None,
               pipelines: dict | None = None) -> dict:
    """One dispatch of `op` on fresh buffers holding `inputs`; returns the written bindings (numpy)."""
    name = op.kernel_name(variant, wdtype)
    cache = pipelines if pipelines is not None else {}
    if name not in cache:
        bindings = [{"binding": 0, "type": "uniform"}] + [
            {"binding": i, "type": binding_type(b)} for i, b in enumerate(op.bindings, 1)]
        cache[name] = gpu.pipeline(op.render(variant, wdtype), name, bindings)
    pipe, bgl = cache[name]
    pvals = np.array([params[k] for k in op.params] + [0] * (-len(op.params) % 4), np.uint32)
    bufs = [gpu.buffer(pvals.nbytes, f"{name}.params", pvals, uniform=True)]
    for b in op.bindings:
        if b.kind == "step":
            bufs.append(gpu.buffer(128, "step", pack_step(step), uniform=True))
            continue
        a = inputs[b.name]
        raw = weight_bytes(a, wdtype) if b.kind == "w" else np.ascontiguousarray(a, np.uint32 if b.kind == "u32" else np.float32).tobytes()
        bufs.append(gpu.buffer(len(raw), f"{name}.{b.name}", raw))
    groups = [int(-(-(params[w] if isinstance(w, str) else w) // d)) for w, d in op.groups]
    enc = gpu.device.create_command_encoder(label=name)
    cp = enc.begin_compute_pass(label=name)
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, gpu.bind_group(bgl, bufs, name))
    cp.dispatch_workgroups(*groups)
    cp.end()
    gpu.device.queue.submit([enc.finish()])
    out = {}
    for b, buf in zip(op.bindings, bufs[1:]):
        if b.access == "rw":
            out[b.name] = gpu.read(buf, np.uint32 if b.kind == "u32" else np.float32, np.asarray(inputs[b.name]).size)
    return out


def check_kernel(gpu: GPU, op_name: str, variant: dict, wdtype: str, params: dict, inputs: dict,
                 step: dict | None = None, shape: str = "", pipelines: dict | None = None) -> Row:
    op = OPS[op_name]
    step = rounded(step) if step is not None else None
    got = run_kernel(gpu, op, variant, wdtype, params, inputs, step, pipelines)
    outs = {b.name: got[b.name] for b in op.bindings if b.access == "rw"}
    return compare(op, op.kernel_name(variant, wdtype), shape or str(params), outs, inputs, params, variant, wdtype, step)

"""Kernel parity: run one op-table kernel on the GPU and compare it with its float64 torch reference.

Used by tests/test_kernels.py (random inputs, awkward shapes), by `ditweb validate` (every dispatch of
a bundle at its real shapes, on the inputs the GPU itself produced) and, for the dispatch itself, by
the benchmark. Every element must lie within its error bound (wgsl/bounds.py): the most the WGSL
spec lets f32 arithmetic move that element, computed from the actual inputs (docs/tolerances.md)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ditformat.step import pack_step, rounded
from wgsl.ops import ALL_OPS, Op, binding_type, shape_of

from .gpu import GPU


@dataclass
class Row:
    """One check: the worst element of a kernel's outputs relative to its bound. Formatted only when printed."""
    kernel: str
    shape: dict            # params that name the shape (Op.shape_keys), or e.g. {"B": 2} for the whole model
    K: int | None          # length of the op's longest sum (Op.reduce), None where there is none
    max_abs: float         # max |gpu - torch float64| over the outputs
    tol: float             # the bound at the worst element (the element with the largest err / bound)
    ratio: float           # max over elements of |gpu - torch float64| / bound (inf: error where 0 is allowed)
    passed: bool
    where: str = ""        # the worst element, "name[i]: gpu ... vs torch ...", when it failed

    @property
    def shape_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.shape.items())


def weight_bytes(a: np.ndarray, wdtype: str) -> bytes:
    """Weights as a bundle stores them: f32, or f16 (uploaded as u32 pairs, padded to 4 bytes)."""
    return np.asarray(a, np.float16 if wdtype == "f16" else np.float32).tobytes()


def to_torch(arr: np.ndarray, kind: str, wdtype: str, dtype) -> torch.Tensor:
    if kind == "u32":
        return torch.from_numpy(np.asarray(arr, np.int64))
    a = np.asarray(arr, np.float16 if (kind == "w" and wdtype == "f16") else np.float32)
    return torch.from_numpy(a.astype(np.float64)).to(dtype)


def _inputs(op: Op, inputs: dict, wdtype: str, dtype) -> dict:
    kinds = {b.name: b.kind for b in op.bindings}
    return {k: to_torch(v, kinds[k], wdtype, dtype) for k, v in inputs.items()}


def reference(op: Op, inputs: dict, params: dict, variant: dict, wdtype: str, step: dict | None, dtype):
    with torch.no_grad():
        return op.reference(_inputs(op, inputs, wdtype, dtype), {**params, **variant}, variant, step)


def error_bound(op: Op, inputs: dict, params: dict, variant: dict, wdtype: str, step: dict | None) -> dict:
    """Written binding -> float64 numpy array: the largest error WGSL allows in each element."""
    with torch.no_grad():
        b = op.bound(_inputs(op, inputs, wdtype, torch.float64), {**params, **variant}, variant, step)
    return {k: v.double().numpy() for k, v in b.items()}


def compare(op: Op, kernel: str, got: dict, inputs: dict, params: dict, variant: dict, wdtype: str,
            step: dict | None, shape: dict | None = None) -> Row:
    """got: output binding -> GPU result (numpy). Each element against the float64 reference, within its bound."""
    ref64 = reference(op, inputs, params, variant, wdtype, step, torch.float64)
    bound = error_bound(op, inputs, params, variant, wdtype, step)
    pv = {**params, **variant}
    K = int(pv[op.reduce]) if op.reduce else None
    worst = None
    for name, r in ref64.items():
        r = r.double().numpy()
        g = np.asarray(got[name], np.float64)[: r.size]
        d = np.abs(g - r)
        d[np.isnan(d)] = np.inf
        if op.exact:       # bit equality (the RNG)
            same = g.astype(np.float32).view(np.uint32) == r.astype(np.float32).view(np.uint32)
            d = np.where(same, 0.0, np.maximum(d, np.inf))
        bnd = bound[name][: r.size]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(d == 0, 0.0, d / bnd)
        i = int(ratios.argmax()) if r.size else 0
        ratio = float(ratios[i]) if r.size else 0.0
        ok = ratio <= 1.0
        where = f"{name}[{i}]: gpu {g[i]:.8g} vs torch {r[i]:.8g}" if r.size else name
        row = Row(kernel, shape if shape is not None else shape_of(op, pv), K,
                  float(np.abs(g - r).max()) if r.size else 0.0, float(bnd[i]) if r.size else 0.0,
                  ratio, ok, "" if ok else where)
        if worst is None or row.ratio > worst.ratio:
            worst = row
    return worst


def prepare(gpu: GPU, op: Op, variant: dict, wdtype: str, params: dict, inputs: dict, step: dict | None,
            pipelines: dict | None = None):
    """One dispatch of `op` on fresh buffers holding `inputs`: (pipeline, bind group, workgroups, buffers)."""
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
            step_bytes = pack_step(step)
            bufs.append(gpu.buffer(len(step_bytes), "step", step_bytes, uniform=True))
            continue
        a = inputs[b.name]
        raw = weight_bytes(a, wdtype) if b.kind == "w" else np.ascontiguousarray(a, np.uint32 if b.kind == "u32" else np.float32).tobytes()
        bufs.append(gpu.buffer(len(raw), f"{name}.{b.name}", raw))
    groups = [int(-(-(params[w] if isinstance(w, str) else w) // d)) for w, d in op.groups]
    return pipe, gpu.bind_group(bgl, bufs, name), groups, bufs


def run_kernel(gpu: GPU, op: Op, variant: dict, wdtype: str, params: dict, inputs: dict, step: dict | None,
               pipelines: dict | None = None) -> dict:
    """One dispatch of `op` on fresh buffers holding `inputs`; returns the written bindings (numpy)."""
    pipe, bg, groups, bufs = prepare(gpu, op, variant, wdtype, params, inputs, step, pipelines)
    name = op.kernel_name(variant, wdtype)
    enc = gpu.device.create_command_encoder(label=name)
    cp = enc.begin_compute_pass(label=name)
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, bg)
    cp.dispatch_workgroups(*groups)
    cp.end()
    gpu.device.queue.submit([enc.finish()])
    out = {}
    for b, buf in zip(op.bindings, bufs[1:]):
        if b.access == "rw":
            out[b.name] = gpu.read(buf, np.uint32 if b.kind == "u32" else np.float32, np.asarray(inputs[b.name]).size)
    return out


def check_kernel(gpu: GPU, op_name: str, variant: dict, wdtype: str, params: dict, inputs: dict,
                 step: dict | None = None, pipelines: dict | None = None) -> Row:
    op = ALL_OPS[op_name]
    step = rounded(step) if step is not None else None
    got = run_kernel(gpu, op, variant, wdtype, params, inputs, step, pipelines)
    outs = {b.name: got[b.name] for b in op.bindings if b.access == "rw"}
    return compare(op, op.kernel_name(variant, wdtype), outs, inputs, params, variant, wdtype, step)

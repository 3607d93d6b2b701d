"""`ditweb bench kernels` / `ditweb bench step`: wgpu adapter time vs torch CPU (and onnxruntime CPU for the
whole model), GFLOP/s, and a naive one-invocation-per-output matmul as the baseline for what tiling buys.
Benchmarks, never tests: nothing here asserts on time."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wgsl.ops import ALL_OPS, OPS, evaluate, shape_of

from .bundle import Bundle
from .parity import prepare, reference


def _bundle(args, dtype: str = "f32", onnx: bool = False):
    """The bundle to time: --bundle, else a random-weight export of --preset (default Favicon-T/2)."""
    if getattr(args, "bundle", None):
        return Bundle.load(args.bundle), None
    from export.bundle import export_bundle
    from export.cli import load_for_export
    from dit_model.model import DEFAULT_PRESET
    model, names = load_for_export(getattr(args, "preset", None) or DEFAULT_PRESET, None, 0)
    tmp = tempfile.mkdtemp(prefix="ditweb-bench-")
    path = export_bundle(model, Path(tmp) / "bundle", dtype, names, onnx=onnx)
    return Bundle.load(path), model


class Timer:
    """GPU time of one compute pass from timestamp queries (ns) when the adapter has them, else wall time
    around submit + wait."""

    def __init__(self, gpu):
        self.gpu = gpu
        self.qs = gpu.device.create_query_set(type="timestamp", count=2) if gpu.timestamps else None
        if self.qs:
            import wgpu
            self.resolve = gpu.device.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)

    @property
    def source(self) -> str:
        return "timestamp queries" if self.qs else "wall clock"

    def run(self, dispatches, repeat: int) -> float:
        """Seconds per repetition of `dispatches` [(pipeline, bind group, groups)], recorded `repeat` times in one pass."""
        dev = self.gpu.device
        enc = dev.create_command_encoder()
        desc = {}
        if self.qs:
            desc["timestamp_writes"] = {"query_set": self.qs, "beginning_of_pass_write_index": 0,
                                        "end_of_pass_write_index": 1}
        cp = enc.begin_compute_pass(**desc)
        for _ in range(repeat):
            for pipe, bg, groups in dispatches:
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(*groups)
        cp.end()
        if self.qs:
            enc.resolve_query_set(self.qs, 0, 2, self.resolve, 0)
        t0 = time.perf_counter()
        dev.queue.submit([enc.finish()])
        if self.qs:
            ts = np.frombuffer(dev.queue.read_buffer(self.resolve), np.uint64)
            return float(ts[1] - ts[0]) * 1e-9 / repeat
        dev.queue.on_submitted_work_done_sync()
        return (time.perf_counter() - t0) / repeat


def _torch_time(fn, repeat: int) -> float:
    """Median of `repeat` timed calls after one warm-up (the machine is shared: the median resists noise)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_kernels(args):
    # one torch thread: on this shared 2-core machine a second thread mostly adds spin-wait noise to
    # sub-millisecond ops (measured: 16 ms for a 32x32x16 F.linear with 2 threads under load)
    torch.set_num_threads(1)
    repeat = 2 if args.quick else 10
    bundle, _ = _bundle(args)
    gpu, m = bundle.gpu, bundle.manifest
    B = 2                                               # one image with CFG
    st = bundle.state(B, 1)
    timer = Timer(gpu)
    gpu.device.queue.submit([bundle.encode(st, ["forward"], "warm-up")])   # realistic activations
    rows, seen, naive_cache = [], set(), {}
    for pipe, bg, groups, d, kernel in st.compiled["forward"]:
        op = OPS[kernel["op"]]
        params = {k: evaluate(f, B, 1) for k, f in zip(kernel["params"], d["params"])}
        key = (d["kernel"], tuple(sorted(params.items())))
        if key in seen:
            continue
        seen.add(key)
        t_gpu = timer.run([(pipe, bg, groups)], repeat)
        # torch CPU: the op's reference in float32 on random inputs of the same sizes
        inputs = {}
        for b, name in zip(op.bindings, d["bindings"]):
            buf = m["buffers"][name]
            n = int(np.prod(buf["shape"])) if buf["kind"] == "weight" else evaluate(buf["elements"], B, 1)
            inputs[b.name] = (np.zeros(n, np.uint32) if buf.get("dtype") == "u32" else np.random.rand(n).astype(np.float32))
        variant = kernel.get("variant", {})
        t_torch = _torch_time(_torch_equivalent(op, params, variant, inputs), repeat)
        flops = op.flops({**params, **variant}) if op.flops else None
        shape = ",".join(f"{k}={v}" for k, v in shape_of(op, params).items())
        extra = ["", "", "", ""]
        if op.name in ("matmul", "matmul_shared"):
            p = dict(M=params["M"], N=params["N"], K=params["K"], MN=params["M"] * params["N"])
            a = {"a": inputs["a"], "w": inputs["w"], "bias": inputs["bias"], "dst": np.zeros(p["MN"], np.float32)}
            other = "matmul_shared" if op.name == "matmul" else "matmul"
            ov = {**variant, "vec4": "vec4" if params["K"] % 4 == 0 else "scalar"} if other == "matmul" else variant
            ts = _op_time(gpu, timer, other, {**params}, ov, {**a}, naive_cache, repeat)
            tn = _op_time(gpu, timer, "matmul_naive", p, {}, a, naive_cache, repeat)     # wgsl.ops.BASELINE_OPS
            extra = [ts * 1e3, flops / ts / 1e9, tn * 1e3, flops / tn / 1e9]
        rows.append([d["label"], d["kernel"], shape, t_gpu * 1e3, t_torch * 1e3,
                     flops / t_gpu / 1e9 if flops else "", flops / t_torch / 1e9 if flops else "", *extra])
    header = ["first dispatch", "kernel", "shape (B=2)", "wgpu ms", "torch CPU ms", "wgpu GFLOP/s", "torch GFLOP/s",
              "other matmul ms", "other GFLOP/s", "naive matmul ms", "naive GFLOP/s"]
    notes = (f"Adapter: {gpu.name}; GPU time from {timer.source}, {repeat} repetitions recorded in one pass. "
             f"Bundle: {m['model']['input_size']}px, D={m['model']['hidden_size']}, depth {m['model']['depth']}, "
             f"{m['dtype']}; each distinct (kernel, shape) of the forward program once, batch B=2 (one image with CFG). "
             "torch CPU: the same work as torch calls (F.linear + activation, SDPA, layer_norm + modulate; the "
             "elementwise ops' float32 references), 1 thread, median. "
             "other matmul: the same shape with the other matmul kernel of the op table (register-blocked matmul "
             "<-> workgroup-memory matmul_shared); naive matmul: one invocation per output, no tiling "
             "(wgsl/matmul_naive.wgsl.j2).")
    return f"ditweb bench kernels ({gpu.name})", header, rows, notes


def _torch_equivalent(op, p, variant, inputs):
    """The same work as one torch call on CPU (Op.torch_equivalent: F.linear + activation, SDPA, layer_norm +
    modulate); the small elementwise ops use their float32 reference."""
    if op.torch_equivalent is not None:
        return op.torch_equivalent(p, variant)
    return lambda: reference(op, inputs, p, variant, "f32", None, torch.float32)


def _op_time(gpu, timer, op_name, params, variant, inputs, cache, repeat):
    """GPU time of one op-table kernel on fresh buffers (the baselines of the matmul rows)."""
    pipe, bg, groups, _ = prepare(gpu, ALL_OPS[op_name], variant, "f32", params, inputs, None, cache)
    return timer.run([(pipe, bg, groups)], repeat)


def bench_step(args):
    # one thread for torch and onnxruntime: on this shared 2-core machine torch with 2 threads measured
    # 786-1111 ms for a Favicon-T/2 B=2 forward that takes 32-38 ms with 1 (spin-waiting under load)
    torch.set_num_threads(1)
    from dit_model.diffusion import Diffusion
    from dit_model.guidance import Guide, combine, make_plan
    from dit_model.model import DiTConfig, forward_gflops
    steps = 3 if args.quick else 10
    rows = []
    for dtype in ("f32", "f16"):
        bundle, model = _bundle(args, dtype, onnx=(dtype == "f32"))
        cfg = DiTConfig.from_dict(bundle.manifest["model"])
        gflop = 2 * forward_gflops(cfg)                       # per image forward, FLOPs = 2 x MACs
        for N in (1, 4):
            B = 2 * N                                         # CFG doubles the batch
            bundle.sample(list(range(N)), seed=0, steps=2, cfg=4.0)     # warm-up: buffers, pipelines
            t0 = time.perf_counter()
            bundle.sample(list(range(N)), seed=0, steps=steps, cfg=4.0)
            t_gpu = (time.perf_counter() - t0) / steps
            rows.append([f"{cfg.input_size}px D={cfg.hidden_size} depth {cfg.depth}", N, B, f"wgpu {dtype}",
                         t_gpu * 1e3, gflop * B / t_gpu])
            if dtype != "f32" or model is None:
                continue
            x = torch.randn(N, cfg.in_channels, cfg.input_size, cfg.input_size)
            plan = make_plan(Guide(4.0), list(range(N)), cfg.num_classes)
            y = torch.tensor([c for br in plan.labels for c in br])
            diff = Diffusion(steps)

            def torch_step():
                with torch.no_grad():
                    out = model(x.repeat(2, 1, 1, 1), torch.full((B,), 500), y).reshape(1, 2, N, -1, cfg.input_size,
                                                                                         cfg.input_size)
                    g = combine(out, plan.coefficients(4.0), plan.var_branch, cfg.in_channels)
                    diff.ddim_step(g, x, steps // 2, torch.zeros_like(x), 0.0, True)
            t_torch = _torch_time(torch_step, steps)
            rows.append(["", N, B, "torch CPU (f32, 1 thread)", t_torch * 1e3, gflop * B / t_torch])
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            sess = ort.InferenceSession(str(bundle.path / "model.onnx"), so, providers=["CPUExecutionProvider"])
            feed = {"x": x.repeat(2, 1, 1, 1).numpy(), "t": np.full(B, 500, np.int64), "y": y.numpy()}
            t_ort = _torch_time(lambda: sess.run(None, feed), steps)
            rows.append(["", N, B, "onnxruntime CPU (model only, 1 thread)", t_ort * 1e3, gflop * B / t_ort])
    header = ["model", "images N", "batch B", "runtime", "ms / denoising step", "GFLOP/s"]
    notes = (f"Adapter: {bundle.gpu.name}. One DDIM step with CFG scale 4: the whole step on the GPU is expand + "
             "forward (B = 2N rows) + guide_combine + sampler_step in one command buffer, timed over "
             f"{steps} steps of Bundle.sample (wall clock, includes submit overhead). torch CPU: the same model "
             "forward + combine + ddim_step. onnxruntime: the exported model.onnx forward only. GFLOP/s = "
             "2 x forward MACs x B / time (dit_model.model.forward_gflops). Random weights (speed does not "
             "depend on them).")
    return f"ditweb bench step ({bundle.gpu.name})", header, rows, notes

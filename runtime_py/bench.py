"""`ditweb bench kernels` / `ditweb bench step`: wgpu adapter time vs torch CPU (and onnxruntime CPU for the
whole model), GFLOP/s, and a naive one-invocation-per-output matmul as the baseline for what tiling buys.
Benchmarks, never tests: nothing here asserts on time."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ditformat.forms import evaluate
from wgsl.ops import ALL_OPS, OPS, shape_of

from .bundle import Bundle
from .parity import prepare, reference
from .tune import Timer, tune


def _load_note() -> str:
    import os
    try:
        one, five, _ = os.getloadavg()
        return f"Load average {one:.2f} (1 min), {five:.2f} (5 min) when the table was written. "
    except OSError:
        return ""


def _bundle(args, dtype: str = "f32", onnx: bool = False):
    """The bundle to time: --bundle, else a random-weight export of --preset (default Favicon-T/2)."""
    if getattr(args, "bundle", None):
        return Bundle.load(args.bundle, plan="default"), None
    from export.bundle import export_bundle
    from export.cli import load_for_export
    from dit_model.model import DEFAULT_PRESET
    model, names = load_for_export(getattr(args, "preset", None) or DEFAULT_PRESET, None, 0)
    tmp = tempfile.mkdtemp(prefix="ditweb-bench-")
    path = export_bundle(model, Path(tmp) / "bundle", dtype, names, onnx=onnx)
    return Bundle.load(path, plan="default"), model


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
    no_torch = getattr(args, "no_torch", False)
    sizes = [int(v) for v in (getattr(args, "sizes", "") or "").split(",") if v]
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
        t_torch = None if no_torch else _torch_time(_torch_equivalent(op, params, variant, inputs), repeat)
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
        rows.append([d["label"], d["kernel"], shape, t_gpu * 1e3, "" if t_torch is None else t_torch * 1e3,
                     flops / t_gpu / 1e9 if flops else "", flops / t_torch / 1e9 if flops and t_torch else "", *extra])
    for S in sizes:                    # square f32 matmuls: what the matmul designs reach on this device
        p = dict(M=S, N=S, K=S, out_group=S, out_stride=S)
        rng = np.random.default_rng(0)
        a = {"a": rng.random(S * S, np.float32), "w": rng.random(S * S, np.float32), "bias": np.zeros(S, np.float32),
             "dst": np.zeros(S * S, np.float32)}
        flops = 2.0 * S ** 3
        reps = max(1, min(repeat, int(2e10 // flops) or 1))
        acts = {"in_act": "none", "act": "none"}
        for op_name, variant in [("matmul", {**acts, "vec4": "vec4"}), ("matmul_8x4", {**acts, "tile": "8x4", "vec4": "vec4"}),
                                 ("matmul_8x8", {**acts, "tile": "8x8", "vec4": "vec4"}), ("matmul_shared", acts),
                                 ("matmul_shared64", acts)]:
            t = _op_time(gpu, timer, op_name, p, variant, a, {}, reps)
            rows.append([f"square matmul {S}", ALL_OPS[op_name].kernel_name(variant, "f32"), f"M=N=K={S}", t * 1e3, "",
                         flops / t / 1e9, "", "", "", "", ""])
    header = ["first dispatch", "kernel", "shape (B=2)", "wgpu ms", "torch CPU ms", "wgpu GFLOP/s", "torch GFLOP/s",
              "other matmul ms", "other GFLOP/s", "naive matmul ms", "naive GFLOP/s"]
    notes = (f"Adapter: {gpu.name}; GPU time from {timer.source}, {repeat} repetitions recorded in one pass. "
             f"Bundle: {m['model']['input_size']}px, D={m['model']['hidden_size']}, depth {m['model']['depth']}, "
             f"{m['dtype']}; each distinct (kernel, shape) of the forward program once, batch B=2 (one image with CFG). "
             "torch CPU: the same work as torch calls (F.linear + activation, SDPA, layer_norm + modulate; the "
             "elementwise ops' float32 references), 1 thread, median. "
             "other matmul: the same shape with the other matmul kernel of the op table (register-blocked matmul "
             "<-> workgroup-memory matmul_shared); naive matmul: one invocation per output, no tiling "
             "(wgsl/matmul_naive.wgsl.j2). square matmul S: f32 A (S x S) W^T with each matmul design of the op "
             "table (register blocks of 4x4, 8x4, 8x8 outputs; workgroup-memory tiles of 32x32, 64x64). " + _load_note())
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


def _step_time(bundle, N: int, plan: dict, steps: int) -> float:
    """Seconds per DDIM step (CFG 4, N images) of Bundle.sample with `plan`, wall clock, one read-back."""
    bundle.state(2 * N, N, plan=plan)                       # the plan's kernels (built outside the timing)
    t0 = time.perf_counter()
    bundle.sample(list(range(N)), seed=0, steps=steps, cfg=4.0)
    return (time.perf_counter() - t0) / steps


def bench_step(args):
    """Per dtype and image count: the timed plan (`runtime_py/tune.py`: every candidate of every slot, the
    plan chosen, the selection time) and the whole step under the default, the tuned and the all-alternatives
    plans, interleaved; torch CPU and onnxruntime rows unless --no-torch."""
    # one thread for torch and onnxruntime: on this shared 2-core machine torch with 2 threads measured
    # 786-1111 ms for a Favicon-T/2 B=2 forward that takes 32-38 ms with 1 (spin-waiting under load)
    torch.set_num_threads(1)
    from dit_model.model import DiTConfig, forward_gflops
    steps = 3 if args.quick else 10
    rounds = 3 if args.quick else 5
    with_torch = not getattr(args, "no_torch", False)
    dtypes = [d for d in (getattr(args, "dtypes", None) or "f32,f16").split(",") if d]
    if getattr(args, "bundle", None):                        # a given bundle has its own dtype
        dtypes = dtypes[:1]
    images = [int(n) for n in (getattr(args, "images", None) or "1,4").split(",") if n]
    rows, cand_rows = [], []
    for dtype in dtypes:
        bundle, model = _bundle(args, dtype, onnx=(dtype == "f32" and with_torch and not getattr(args, "bundle", None)))
        dtype = bundle.manifest.get("dtype", dtype)           # a given bundle's own
        cfg = DiTConfig.from_dict(bundle.manifest["model"])
        gflop = 2 * forward_gflops(cfg)                       # per image forward, FLOPs = 2 x MACs
        name = f"{cfg.input_size}px D={cfg.hidden_size} depth {cfg.depth} p{cfg.patch_size}"
        for N in images:
            B = 2 * N                                         # CFG doubles the batch
            plans, rep = _plans_to_time(bundle, B, N, args.quick, f"{name} {dtype}", cand_rows)
            times = _time_plans(bundle, N, plans, steps, rounds)
            best = min(float(np.median(v)) for v in times.values())
            for pname, v in times.items():
                t = float(np.median(v))
                rows.append([name, N, B, f"wgpu {dtype}, plan {pname}", t * 1e3, gflop * B / t,
                             f"{t / best:.2f}x"])
            rows.append([name, N, B, f"wgpu {dtype}, plan tuned: a whole 25-step sample, one read-back",
                         _whole_sample_ms(bundle, B, N, plans["tuned"], 1 if args.quick else 3), "", ""])
            if dtype == "f32" and model is not None and with_torch:
                rows += _cpu_rows(model, cfg, bundle.path / "model.onnx", N, steps, gflop)
    from dit_model.bench import publish
    gpu = bundle.gpu
    publish("step-plans", f"ditweb bench step: candidates and plans ({gpu.name})",
            ["model", "images N", "slot (kernel|params)", "dispatches", "candidate", "ms (fastest sample)", ""], cand_rows,
            _candidate_notes(gpu.name, rep), getattr(args, "out", None) or "bench/results")
    header = ["model", "images N", "batch B", "runtime", "ms / denoising step", "GFLOP/s", "vs fastest plan"]
    return f"ditweb bench step ({gpu.name})", header, rows, _step_notes(gpu.name, steps, rounds, getattr(args, "bundle", None))


def _plans_to_time(bundle, B: int, N: int, quick: bool, model: str, cand_rows: list):
    """The plans the step is timed under ({name: plan}: default, tuned, every slot's other candidate, and where the
    timing samples parts of dispatches a reference from whole ones) and the timing's report; the candidates'
    times and the selection time go to cand_rows."""
    plan, rep = tune(bundle, B, N)
    for key, times in rep["slots"].items():
        for k, t in sorted(times.items(), key=lambda kv: kv[1]):
            cand_rows.append([model, N, key, rep["counts"][key], k, t * 1e3, "chosen" if plan[key] == k else ""])
    cand_rows.append([model, N, "(selection)", "", f"{rep['timing_s'] * 1e3:.0f} ms timing + "
                      f"{rep['first_s'] * 1e3:.0f} ms first dispatches + {rep['pipelines_s'] * 1e3:.0f} ms "
                      "pipelines", "", ""])
    other = {key: next((k for k in bundle.manifest["candidates"][key.split("|")[0]] if k != key.split("|")[0]),
                       key.split("|")[0]) for key in plan}
    plans = {"default": {}, "tuned": plan, "alternatives": other}
    if rep["partial"] and not quick:    # the reference: whole dispatches, more rounds, no budget
        whole, wrep = tune(bundle, B, N, repeats=7, budget_s=1e9, partial=False)
        plans["whole dispatches"] = whole
        cand_rows.append([model, N, "(reference)", "", f"{wrep['timing_s'] * 1e3:.0f} ms timing whole "
                          f"dispatches, 7 rounds: {sum(whole[k] != plan[k] for k in plan)} of {len(plan)} slots "
                          "pick another kernel", "", ""])
    return plans, rep


def _time_plans(bundle, N: int, plans: dict, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step under each plan, `rounds` samples each, interleaved: round r starts at plan r mod n."""
    _step_time(bundle, N, {}, 2)                              # warm-up: buffers, pipelines, first submit
    times: dict[str, list[float]] = {k: [] for k in plans}
    for r in range(rounds):
        order = list(plans)[r % len(plans):] + list(plans)[:r % len(plans)]
        for pname in order:
            times[pname].append(_step_time(bundle, N, plans[pname], steps))
    return times


def _whole_sample_ms(bundle, B: int, N: int, plan: dict, repeat: int) -> float:
    """Median ms of a whole 25-step favicon with `plan`: init, 25 command buffers, the one read-back."""
    bundle.state(B, N, plan=plan)
    t25 = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        bundle.sample(list(range(N)), seed=0, steps=25, cfg=4.0)
        t25.append(time.perf_counter() - t0)
    bundle.state(B, N, plan={})
    return float(np.median(t25)) * 1e3


def _cpu_rows(model, cfg, onnx_path: Path, N: int, steps: int, gflop: float) -> list[list]:
    """The same step on the CPU, one thread: torch (forward + combine + ddim_step) and onnxruntime (the exported
    model.onnx forward only)."""
    from dit_model.diffusion import Diffusion
    from dit_model.guidance import combine
    from ditformat.guidance import Guide, make_plan
    B = 2 * N
    x = torch.randn(N, cfg.in_channels, cfg.input_size, cfg.input_size)
    gplan = make_plan(Guide(4.0), list(range(N)), cfg.num_classes)
    y = torch.tensor([c for br in gplan.labels for c in br])
    diff = Diffusion(steps)

    def torch_step():
        with torch.no_grad():
            out = model(x.repeat(2, 1, 1, 1), torch.full((B,), 500), y).reshape(1, 2, N, -1, cfg.input_size,
                                                                                 cfg.input_size)
            g = combine(out, gplan.coefficients(4.0), gplan.var_branch, cfg.in_channels)
            diff.ddim_step(g, x, steps // 2, torch.zeros_like(x), 0.0, True)
    t_torch = _torch_time(torch_step, steps)
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed = {"x": x.repeat(2, 1, 1, 1).numpy(), "t": np.full(B, 500, np.int64), "y": y.numpy()}
    t_ort = _torch_time(lambda: sess.run(None, feed), steps)
    return [["", N, B, "torch CPU (f32, 1 thread)", t_torch * 1e3, gflop * B / t_torch, ""],
            ["", N, B, "onnxruntime CPU (model only, 1 thread)", t_ort * 1e3, gflop * B / t_ort, ""]]


def _candidate_notes(adapter: str, rep: dict) -> str:
    return (f"Adapter: {adapter}. Each slot (dispatches sharing a kernel and params at batch B = 2N) with its "
            f"candidate kernels (docs/bundle-format.md, 'candidates'): median time of one dispatch from "
            f"{rep['source']}, the fastest of interleaved samples (runtime_py/tune.py: "
            + ("on this adapter a sample is the first workgroups of a dispatch, less the fixed time of a sample "
               f"({rep['fixed_s'] * 1e3:.3f} ms), scaled to the whole dispatch; " if rep["partial"] else
               "whole dispatches; ") +
            "a probe of one workgroup drops candidates 2x slower than the best, the rounds those 1.5x slower, "
            "so a slow candidate's time is rough); 'chosen' is the plan's pick. Selection time: the timing "
            "itself, the candidates' first dispatches (one workgroup each: lavapipe compiles a pipeline on "
            "its first dispatch) and their pipeline creation (both once per load). " + _load_note())


def _step_notes(adapter: str, steps: int, rounds: int, bundle_path) -> str:
    return (f"Adapter: {adapter}. One DDIM step with CFG scale 4: the whole step on the GPU is expand + "
            "forward (B = 2N rows) + guide_combine + sampler_step in one command buffer, timed over "
            f"{steps} steps of Bundle.sample (wall clock, includes submit overhead), median of {rounds} interleaved "
            "rounds per plan: default = every dispatch's own kernel, tuned = the timed plan "
            "(step-plans.md), alternatives = every slot's other candidate, whole dispatches (where the timing "
            "samples parts of dispatches) = the plan the same timing picks from whole dispatches over 7 rounds; "
            "'a whole 25-step sample': "
            "Bundle.sample wall clock, ms for all 25 steps (not per step). torch CPU: the same model "
            "forward + combine + ddim_step. onnxruntime: the exported model.onnx forward only. GFLOP/s = "
            "2 x forward MACs x B / time (dit_model.model.forward_gflops). "
            + (f"Bundle {bundle_path}. " if bundle_path else "Random weights (speed does not depend on them). ")
            + _load_note())

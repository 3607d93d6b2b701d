"""`ditweb validate BUNDLE [--ckpt CKPT]`: every kernel of the bundle at its real shapes, then the whole
model, against float64 torch. Each kernel's outputs must lie within the error bounds of the parity tests
(wgsl/bounds.py, docs/tolerances.md). Rows are runtime_py.parity.Row (kernel, shape, K, max_abs, tol,
ratio), formatted only when printed: (kernel, shape, K, max abs err, bound, err / bound, pass)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dit_model.model import DiT, DiTConfig
from ditformat import EXPORTER_VERSION
from ditformat.errors import DitwebError, UsageError
from ditformat.forms import evaluate
from ditformat.guidance import Guide, make_plan
from ditformat.packed import QUANTISED_DTYPES as QUANTISED, steps_tensor, unpack_q4k
from ditformat.step import pack_step, rounded, step_fields
from wgsl.ops import OPS

from .bundle import Bundle
from .parity import Row, compare
from .report import make_report, write_reports

WHOLE_MODEL_TOL = 1e-4       # f32: max |wgpu - torch64| <= 1e-4 max |torch64| (issue target)
WHOLE_MODEL_TOL_F16 = 2e-3   # f16 / int8: vs torch with the same f16-rounded (int8: dequantised) weights, of the output scale


def kernel_dtype(m: dict) -> str:
    """The weight dtype the kernels were rendered for: an int8 (or int4) bundle's other kernels read f16 weights."""
    return "f16" if m["dtype"] in QUANTISED else m["dtype"]


def read_binding(bundle: Bundle, state, name: str) -> np.ndarray:
    b = bundle.manifest["buffers"][name]
    buf = state.buffers[name]
    if b["kind"] == "weight":
        if b["dtype"] == "i8":                  # int8 weights (matmul_q8): the kernel's u32 words of 4 values
            return bundle.gpu.read(buf, np.uint32, b["bytes"] // 4)
        n = int(np.prod(b["shape"]))
        return bundle.gpu.read(buf, np.float16 if b["dtype"] == "f16" else np.float32, n)
    n = evaluate(b["elements"], state.B, state.N)
    return bundle.gpu.read(buf, np.uint32 if b["dtype"] == "u32" else np.float32, n)


def progress(items, desc: str):
    """A progress bar on stderr for the dispatch-by-dispatch checks (minutes to an hour at paper size on a CPU
    adapter); stdout keeps only the report."""
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="dispatch", file=sys.stderr, leave=False, mininterval=2.0)


def check_program(bundle: Bundle, state, program: str, step: dict | None) -> list[Row]:
    """Run `program` one dispatch at a time; check each against its op's torch reference on the very
    inputs the GPU had (so an error is pinned to one kernel, not accumulated). A dispatch with candidate
    kernels (docs/bundle-format.md, "candidates") is checked with each of them on the same inputs."""
    rows = []
    m = bundle.manifest
    for i, (pipe, bg, groups, d, kernel) in enumerate(progress(state.compiled[program], f"validate {program}")):
        params = {k: evaluate(f, state.B, state.N) for k, f in zip(kernel["params"], d["params"])}
        runs = [(d["kernel"], (pipe, bg, groups))]
        runs += [(c, state.alternative(program, i, c)) for c in m.get("candidates", {}).get(d["kernel"], [])
                 if c != d["kernel"]]
        for kname, (kpipe, kbg, kgroups) in runs:
            k = m["kernels"][kname]
            op = OPS[k["op"]]
            inputs = {}
            for b, name in zip(op.bindings, d["bindings"]):
                if b.kind != "step":
                    inputs[b.name] = read_binding(bundle, state, name)
            enc = bundle.gpu.device.create_command_encoder(label=d["label"])
            cp = enc.begin_compute_pass(label=d["label"])
            cp.set_pipeline(kpipe)
            cp.set_bind_group(0, kbg)
            cp.dispatch_workgroups(*kgroups)
            cp.end()
            bundle.gpu.device.queue.submit([enc.finish()])
            got = {b.name: read_binding(bundle, state, name) for b, name in zip(op.bindings, d["bindings"])
                   if b.access == "rw"}
            rows.append(compare(op, f"{d['label']} [{kname}]", got, inputs, params, k.get("variant", {}),
                                kernel_dtype(m), step))
    return rows


def bundle_weights(bundle: Bundle) -> dict[str, np.ndarray]:
    """Every tensor of the bundle's weight shards (ditformat/shards.py), by tensor name; a packed buffer's tensor as
    its unpacked i8 values (ditformat/packed.py)."""
    from safetensors.numpy import load_file
    out = {}
    for f in sorted({b["_file"] for b in bundle.manifest["buffers"].values() if b["kind"] == "weight"}):
        out.update(load_file(str(bundle.path / f)))
    for b in bundle.manifest["buffers"].values():
        if b["kind"] == "weight" and b.get("encoding") == "q4k":
            out[b["tensor"]] = unpack_q4k(out[b["tensor"]], out.pop(steps_tensor(b["tensor"])), b["tensor"])
    return out


def torch_model(bundle: Bundle, ckpt: str | None = None) -> DiT:
    """float64 torch DiT with the bundle's own weights (f16 bundles: the same f16-rounded values; int8 bundles: the
    dequantised q * scale of every Linear, in float64, from the bundle: --ckpt is not used for them; int4 bundles
    likewise, at their unpacked int8 values)."""
    if ckpt and bundle.manifest["dtype"] not in QUANTISED:
        from dit_model.checkpoint import load_model
        model, _ = load_model(ckpt)
        if bundle.manifest["dtype"] == "f16":
            model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
        return model.double().eval()
    weights = bundle_weights(bundle)
    model = DiT(DiTConfig.from_dict(bundle.manifest["model"]))
    model = model.double()
    sd = {}
    for k, v in model.state_dict().items():
        w = weights[k]
        if w.dtype == np.int8:                  # int8: q (N, K) * scale (N,) per output channel
            scale = weights[k[: -len(".weight")] + ".scale"].astype(np.float64)
            w = (w.astype(np.float64) * scale[:, None]).reshape(tuple(v.shape))
        sd[k] = torch.from_numpy(w.astype(np.float64))
    model.load_state_dict(sd)
    return model.eval()


def random_labels(levels, B: int, g) -> torch.Tensor:
    """B random labels, the null label included: ids (B,) for one level, (B, L) per-level ids for a named model."""
    y = torch.stack([torch.randint(0, n + 1, (B,), generator=g) for n in levels], 1)
    return y[:, 0] if len(levels) == 1 else y


def whole_model(bundle: Bundle, model: DiT, B: int = 2, seed: int = 0) -> Row:
    cfg = bundle.cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg["in_channels"], cfg["input_size"], cfg["input_size"], generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    y = random_labels(bundle.levels, B, g)
    got = bundle.forward(x.numpy(), t.numpy(), y.numpy())
    with torch.no_grad():
        ref = model(x.double(), t, y).numpy()
    err = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    tol = (WHOLE_MODEL_TOL if bundle.manifest["dtype"] == "f32" else WHOLE_MODEL_TOL_F16) * scale
    return Row("whole model forward", {"B": B}, None, err, tol, err / tol if tol > 0 else float(err > 0) * np.inf,
               err <= tol)


def validate(bundle: Bundle, ckpt: str | None = None, B: int = 2) -> list[Row]:
    return [r for _, r in validate_checks(bundle, ckpt, B)]


def validate_checks(bundle: Bundle, ckpt: str | None = None, B: int = 2) -> list[tuple[str, Row]]:
    """validate()'s rows, each with the group it belongs to (the program, "K=2 <program>" for the batch-estimated
    guidance checks, "model" for the whole-model check): the reports' test-suite classes."""
    g = torch.Generator().manual_seed(1)
    st = bundle.state(B, B, plan={})          # the dispatches' own kernels; check_program adds the candidates
    io = bundle.manifest["io"]
    x = torch.randn(B, *io["x_shape"], generator=g).numpy()
    bundle.gpu.write(st.buffers[io["x"]], x)
    bundle.gpu.write(st.buffers[io["t"]], np.linspace(0, 999, B).astype(np.uint32))
    ids = np.arange(B)[:, None] % (np.asarray(bundle.levels) + 1)            # null rows included
    bundle.gpu.write(st.buffers[io["y"]], bundle.label_rows(ids if bundle.vocab is not None else ids[:, 0]))
    rows = [("forward", r) for r in check_program(bundle, st, "forward", None)]
    # the sampling kernels at their real shapes: a CFG plan (J = 2) over N = B / 2 images, DDPM (noise on)
    N = max(B // 2, 1)
    plan = make_plan(Guide(scale=4.0), [bundle.null_label] * N, bundle.null_label)   # only its coefficients are used
    sst = bundle.state(2 * N, N, plan={})
    fields = step_fields(bundle.tables(20), 7, seed=3, K=1, J=2, N=N, var_branch=plan.var_branch,
                         coef=plan.coefficients(4.0), sampler="ddpm")
    bundle.gpu.device.queue.write_buffer(bundle.step_buffer, 0, pack_step(fields))
    bundle.gpu.write(sst.buffers[io["out"]], torch.randn(2 * N * int(np.prod(io["out_shape"])), generator=g).numpy())
    for prog in ("init", "step_begin", "step_end"):
        rows += [(prog, r) for r in check_program(bundle, sst, prog, rounded(fields))]
    # batch-estimated guidance: K = 2 perturbed copies (the RNG inside expand_batch), DDIM with eta = 1
    kst = bundle.state(2 * 2 * N, N, plan={})
    kfields = step_fields(bundle.tables(20), 7, seed=4, K=2, J=2, N=N, var_branch=plan.var_branch,
                          coef=plan.coefficients(4.0), sampler="ddim", eta=1.0, tau=0.5)
    bundle.gpu.device.queue.write_buffer(bundle.step_buffer, 0, pack_step(kfields))
    bundle.gpu.write(kst.buffers[io["sample"]], torch.randn(N * int(np.prod(io["x_shape"])), generator=g).numpy())
    bundle.gpu.write(kst.buffers[io["out"]], torch.randn(4 * N * int(np.prod(io["out_shape"])), generator=g).numpy())
    for prog in ("step_begin", "step_end"):
        rows += [(f"K=2 {prog}", dataclasses.replace(r, kernel=r.kernel.replace(" [", " K=2 [", 1),
                                                     shape={**r.shape, "copies": 2}))
                 for r in check_program(bundle, kst, prog, rounded(kfields))]
    rows.append(("model", whole_model(bundle, torch_model(bundle, ckpt), B)))
    return rows


def quantisation_error(ckpt: str, B: int = 2, seed: int = 0) -> float:
    """f16 weights vs the checkpoint's f32 weights, both in float64 torch: max abs difference of the
    outputs relative to max |output| (reported apart from the kernel error, which is measured against
    the same f16-rounded weights)."""
    from dit_model.checkpoint import load_model
    model, _ = load_model(ckpt)
    cfg = model.cfg
    q = DiT(cfg)
    q.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).double()
    t = torch.randint(0, 1000, (B,), generator=g)
    y = random_labels(cfg.levels, B, g)
    with torch.no_grad():
        a, b = model.double()(x, t, y), q.double()(x, t, y)
    return float((a - b).abs().max() / a.abs().max())


def summarize(rows: list[Row]) -> list[Row]:
    """One row per kernel: the dispatch with the largest error relative to its bound."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        key = r.kernel.split("[")[-1].rstrip("]") if "[" in r.kernel else r.kernel
        key += " K=2" if r.shape.get("copies") == 2 else ""
        groups.setdefault(key, []).append(r)
    out = []
    for key, rs in groups.items():
        worst = max(rs, key=lambda r: r.ratio)
        out.append(dataclasses.replace(worst, kernel=f"{key} (x{len(rs)})", passed=all(r.passed for r in rs)))
    return out


def format_rows(rows: list[Row]) -> str:
    head = (f"{'kernel':<58} {'shape':<30} {'K':>5} {'max abs err':>11} {'bound':>10} {'err/bound':>9}  pass")
    lines = [head, "-" * len(head)]
    for r in rows:
        k = "" if r.K is None else str(r.K)
        lines.append(f"{r.kernel[:58]:<58} {r.shape_text[:30]:<30} {k:>5} {r.max_abs:>11.3e} {r.tol:>10.3e} "
                     f"{r.ratio:>9.3g}  {'ok' if r.passed else 'FAIL ' + r.where}")
    return "\n".join(lines)


def register(sub):
    p = sub.add_parser("validate", help="check every kernel of a bundle and the whole model against float64 torch",
                       description="Exit status: 0 every check passed, 1 a check failed, 2 bad input (the bundle, "
                                   "an option or a report path; no check ran). CI set-up: docs/ci.md.")
    p.add_argument("bundle", help="bundle folder (from ditweb export)")
    p.add_argument("--ckpt", help="checkpoint to compare with (default: the bundle's own weights in torch)")
    p.add_argument("--batch", type=int, default=2, help="batch rows B for the kernel checks (default 2)")
    p.add_argument("--summary", action="store_true", help="one row per kernel (its worst dispatch) in the printed table")
    p.add_argument("--no-decoder", dest="decoder", action="store_false",
                   help="skip a latent bundle's VAE decoder (its float64 checks at 256 px take a long time on a CPU)")
    p.add_argument("--json", metavar="FILE", help="also write every check (error, bound, ratio, verdict) as JSON")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report: one test case per check")
    p.set_defaults(func=cmd_validate)


def check_report_path(path: str | None, option: str) -> None:
    """A report path that cannot be written is bad input, found before minutes of checks."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")


def cmd_validate(args):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for path, option in ((args.json, "--json"), (args.junit, "--junit")):
        check_report_path(path, option)
    if args.json and args.junit and Path(args.json).resolve() == Path(args.junit).resolve():
        raise UsageError("--json and --junit name the same file")
    info = {"bundle": args.bundle, "ckpt": args.ckpt, "ditweb": EXPORTER_VERSION, "batch": args.batch}
    t0 = time.perf_counter()
    try:
        if args.batch < 1:
            raise UsageError("--batch must be at least 1")
        bundle = Bundle.load(args.bundle, plan="default")      # every candidate is checked dispatch by dispatch
    except DitwebError as e:                                    # bad input: exit 2, and the reports say why
        write_reports(make_report(info, error=str(e)), args.json, args.junit)
        raise
    m = bundle.manifest
    info.update(dtype=m["dtype"], format_version=m["format_version"], kernels=len(m["kernels"]),
                adapter=bundle.gpu.name)
    print(f"bundle {args.bundle}: {m['dtype']}, {len(m['kernels'])} kernels, adapter {bundle.gpu.name}")
    checks = validate_checks(bundle, args.ckpt, args.batch)
    if args.decoder:
        checks += [("decoder", r) for r in validate_decoder(bundle)]     # a latent bundle's VAE decoder (export --vae)
    rows = [r for _, r in checks]
    print(format_rows(summarize(rows) if args.summary else rows))
    bad = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(bad)}/{len(rows)} checks passed")
    if m["dtype"] == "f16" and args.ckpt:
        info["f16_quantisation_error"] = quantisation_error(args.ckpt)
        print(f"f16 quantisation error (torch float64, f16 vs f32 weights of {args.ckpt}): "
              f"{info['f16_quantisation_error']:.3e} of max |output|")
    info["seconds"] = round(time.perf_counter() - t0, 3)
    report = make_report(info, checks)
    for path in write_reports(report, args.json, args.junit):
        print(f"wrote {path}")
    if bad:
        print(f"ditweb validate: {len(bad)} check(s) failed", file=sys.stderr)
    return report["exit_code"]


# ------------------------------------------------------------------ the decode program of a latent bundle

def check_decode(runner, kernels: dict, table: dict, wdtype: str, latents: np.ndarray) -> list[Row]:
    """Run the decode program (runtime_py/decode.py) one dispatch at a time on `latents`; check each against its
    op's float64 reference on the inputs the GPU itself produced. table: the buffer table (weights and activations
    as in the manifest); kernels: kernel name -> {"op", "variant"}."""
    gpu = runner.gpu
    N = latents.shape[0]
    runner._prepare(N)
    gpu.write(runner.buffers[runner.latent], np.ascontiguousarray(latents, np.float32))

    def read(name):
        b = table[name]
        if b["kind"] == "weight":
            if b["dtype"] == "i8":                                   # int8 weights: read as the kernel's u32 words
                return gpu.read(runner.buffers[name], np.uint32, b["bytes"] // 4)
            return gpu.read(runner.buffers[name], np.float16 if b["dtype"] == "f16" else np.float32,
                            int(np.prod(b["shape"])))
        return gpu.read(runner.buffers[name], np.float32, evaluate(b["elements"], N, N))

    rows = []
    for (pipe, bg, groups), d in progress(list(zip(runner.seq, runner.program)), "validate decode"):
        kernel = kernels[d["kernel"]]
        op = OPS[kernel["op"]]
        params = {k: evaluate(f, N, N) for k, f in zip(op.params, d["params"])}
        inputs = {b.name: read(name) for b, name in zip(op.bindings, d["bindings"])}
        enc = gpu.device.create_command_encoder(label=d["label"])
        cp = enc.begin_compute_pass(label=d["label"])
        cp.set_pipeline(pipe)
        cp.set_bind_group(0, bg)
        cp.dispatch_workgroups(*groups)
        cp.end()
        gpu.device.queue.submit([enc.finish()])
        got = {b.name: read(name) for b, name in zip(op.bindings, d["bindings"]) if b.access == "rw"}
        rows.append(compare(op, f"{d['label']} [{d['kernel']}]", got, inputs, params, kernel.get("variant", {}),
                            wdtype, None))
    return rows


def whole_decode(runner, vae64, latents: np.ndarray, tol: float = WHOLE_MODEL_TOL) -> Row:
    """The decode program against the float64 torch decoder holding the same weights (export/decode.py
    decoder_from_tensors), before the clamp: max |gpu - torch64| <= tol max |torch64| (a budget, like the
    DiT's whole-model check)."""
    got = runner.decode(latents)
    with torch.no_grad():
        ref = vae64(torch.from_numpy(np.asarray(latents, np.float64))).numpy()
    err = float(np.abs(got - ref).max())
    t = tol * float(np.abs(ref).max())
    return Row("whole decoder", {"N": latents.shape[0]}, None, err, t, err / t if t > 0 else float(err > 0) * np.inf,
               err <= t)


def decoder_config(runner):
    """The VAEConfig a decoder part was exported with (its manifest's `vae`)."""
    from dit_model.vae import VAEConfig
    v = runner.manifest["vae"]
    return VAEConfig(**{**v, "block_out_channels": tuple(v["block_out_channels"])})


def decoder_twin(bundle: Bundle, runner):
    """The float64 torch decoder holding the very weights of the bundle's decoder/ shards (folded, f16-rounded or
    int8-dequantised as stored): its forward on the DiT's raw latents is what the decode program computes."""
    from safetensors.numpy import load_file

    from export.decode import decoder_from_tensors
    m = runner.manifest
    tensors = {}
    for f in sorted({b["file"] for b in m["buffers"].values() if b["kind"] == "weight"}):
        tensors.update(load_file(str(bundle.path / "decoder" / f)))
    return decoder_from_tensors(decoder_config(runner), tensors)


def validate_decoder(bundle: Bundle, seed: int = 0) -> list[Row]:
    """A latent bundle's decoder (decoder/, export --vae): every dispatch within its bound on one latent, then
    the whole decoder against the float64 torch decoder with the same weights on two (none for other bundles)."""
    from .decode import load_decoder
    runner = load_decoder(bundle)
    if runner is None:
        return []
    m = runner.manifest
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(2, *m["latent_shape"], generator=g) * decoder_config(runner).scaling_factor).numpy()
    rows = check_decode(runner, m["kernels"], m["buffers"], "f32" if m["dtype"] in QUANTISED else m["dtype"], z[:1])
    rows.append(whole_decode(runner, decoder_twin(bundle, runner), z))
    return rows

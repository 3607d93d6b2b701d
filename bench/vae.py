"""The VAE decoder's kernels and the whole decoder in wgpu-py, at real sizes (docs/vae.md, "Speed").

    .venv/bin/python bench/vae.py                 # kernels at SD shapes + the real-size decoder on an 8x8 latent
    .venv/bin/python bench/vae.py --latent 32     # a 256x256 decode (minutes on a CPU adapter)

Random weights in the SD config (sd-vae-ft-ema), f16. Each kernel: one dispatch repeated `--reps` times in one
compute pass, wall time per dispatch; the matmul row is the same GEMM as the first conv (M = pixels,
N = C_out, K = 9 C_in) through the DiT's register-blocked matmul. The decoder row: one decode, then its
error against the float64 torch decoder holding the same (folded, f16-rounded) weights. Writes
bench/results/vae.md."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=8, help="latent side of the whole-decoder run (8: a 64x64 image)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-decode", action="store_true", help="kernels only")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from dit_model.vae import SD_VAE, VAEDecoder, decode_gmacs
    from export.decode import build_decode, conv_layout, decoder_from_tensors, decoder_tensors, f32_bits, image_shape
    from export.program import ProgramBuilder
    from runtime_py.decode import DecodeRunner
    from runtime_py.gpu import get_gpu
    from runtime_py.parity import prepare, weight_bytes
    from runtime_py.validate import whole_decode
    from wgsl.ops import OPS
    from wgsl.reference import CONV_PIXELS

    gpu = get_gpu(False)
    rng = np.random.default_rng(0)
    wd = "f16"

    def timeit(op, variant, p, x):
        pipe, bg, groups, bufs = prepare(gpu, OPS[op], variant, wd, p, x, None, {})

        def run(n):
            enc = gpu.device.create_command_encoder()
            cp = enc.begin_compute_pass()
            for _ in range(n):
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(*groups)
            cp.end()
            gpu.device.queue.submit([enc.finish()])
            gpu.read(bufs[-1], np.float32, 1)
        run(1)
        t = time.perf_counter()
        run(args.reps)
        return (time.perf_counter() - t) / args.reps

    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    rows = []
    for ci, co, hw, k in [(512, 512, 8, 3), (512, 512, 32, 3), (128, 128, 64, 3), (512, 512, 8, 1)]:
        p = dict(blocks=hw * -(-hw // CONV_PIXELS), C_in=ci, C_out=co, C_out4=-(-co // 4) * 4, H=hw, W=hw, has_res=0)
        x = dict(src=f(ci * hw * hw), w=conv_layout(f(co, ci, k, k) * 0.05), bias=f(co), res=f(1), dst=f(co * hw * hw))
        dt = timeit("conv2d", {"k": k, "vec4": "vec4"}, p, x)
        rows.append((f"conv2d {k}x{k}", f"{ci} -> {co}, {hw}x{hw}", dt, 2 * ci * co * k * k * hw * hw / dt / 1e9))
    M, N, K = 64, 512, 4608
    x = dict(a=f(M * K), w=f(N * K) * 0.05, bias=f(N), dst=f(M * N))
    dt = timeit("matmul", {"in_act": "none", "act": "none", "vec4": "vec4"}, dict(M=M, N=N, K=K, out_group=M, out_stride=M), x)
    rows.append(("matmul (vec4), the first conv's GEMM", f"M {M}, N {N}, K {K}", dt, 2 * M * N * K / dt / 1e9))
    for c, hw in [(512, 32), (128, 64)]:
        p = dict(rows=32, G=32, C=c, HW=hw * hw, eps_bits=f32_bits(1e-6))
        x = dict(src=f(c * hw * hw), norm_w=f(c), norm_b=f(c), dst=f(c * hw * hw))
        rows.append(("groupnorm + SiLU", f"{c} channels, {hw}x{hw}", timeit("groupnorm", {"act": "silu"}, p, x), None))
    C, T = 512, 1024
    qkv = f(3 * C * T)
    p = dict(batch=1, M=T, N=T, K=C, a_off=0, a_sb=3 * C * T, a_sm=1, a_sk=T, b_off=C * T, b_sb=3 * C * T, b_sn=1, b_sk=T,
             alpha_bits=f32_bits(C ** -0.5))
    dt = timeit("bmm", {}, p, dict(a=qkv, bm=qkv, dst=f(T * T)))
    rows.append(("bmm (attention scores)", f"{T} x {T}, K {C}", dt, 2 * T * T * C / dt / 1e9))
    rows.append(("softmax_rows", f"{T} rows of {T}", timeit("softmax_rows", {}, dict(rows=T, L=T), dict(x=f(T * T))), None))
    for r in rows:
        print(f"{r[0]:<40} {r[1]:<24} {r[2] * 1e3:9.1f} ms" + (f" {r[3]:6.2f} GFLOP/s" if r[3] else ""), flush=True)

    dec = None
    if not args.no_decode:
        h = args.latent
        vae = VAEDecoder(SD_VAE).eval()
        tensors = decoder_tensors(vae, wd)
        pb = ProgramBuilder(None, wd, {k: v.shape for k, v in tensors.items()})
        pb.programs = {"decode": []}
        pb.current = pb.programs["decode"]
        latent = pb.act("dec.latent", 0, 4 * h * h)
        image = build_decode(pb, SD_VAE, h, latent)
        pipes = {n: gpu.pipeline(OPS[k["op"]].render(k["variant"], wd), n, k["entry"]["bindings"]) for n, k in pb.kernels.items()}
        weights = {n: gpu.buffer(len(weight_bytes(a, wd)), n, weight_bytes(a, wd)) for n, a in tensors.items()}
        runner = DecodeRunner(gpu, pipes, pb.kernels, weights, pb.buffers, pb.programs["decode"], latent, image,
                              (4, h, h), image_shape(SD_VAE, h))
        z = (torch.randn(1, 4, h, h, generator=torch.Generator().manual_seed(0)) * SD_VAE.scaling_factor).numpy()
        t = time.perf_counter()
        runner.decode(z)
        dt = time.perf_counter() - t
        row = whole_decode(runner, decoder_from_tensors(SD_VAE, tensors), z)
        dec = (h, dt, decode_gmacs(SD_VAE, h), row, len(pb.programs["decode"]))
        print(f"decoder {h}x{h} -> {8 * h}x{8 * h}: {dt:.1f} s, error {row.max_abs:.3e} (budget {row.tol:.3e})", flush=True)

    lines = ["# The VAE decoder in wgpu-py", "", f"Made by `.venv/bin/python bench/vae.py"
             + (f" --latent {args.latent}" if args.latent != 8 else "") + "` (docs/vae.md).",
             f"Adapter: {gpu.name}; {platform.machine()}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d %H:%M')}.",
             f"SD VAE config, random weights, {wd} weights; {args.reps} dispatches in one pass, wall time per dispatch.", "",
             "| kernel | shape | ms | GFLOP/s |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c * 1e3:.1f} | {'' if d is None else f'{d:.2f}'} |" for a, b, c, d in rows]
    if dec:
        h, dt, gm, row, n = dec
        lines += ["", f"Whole decoder, {h}x{h} latent -> {8 * h}x{8 * h} image ({gm:.1f} GMAC, {n} dispatches): "
                  f"{dt:.1f} s ({2 * gm / dt:.2f} GFLOP/s); max |wgpu - torch float64| {row.max_abs:.3e}, "
                  f"{row.ratio:.3f} of the budget 10^-4 max |output| ({row.tol:.3e})."]
    (ROOT / "bench" / "results" / "vae.md").write_text("\n".join(lines) + "\n")
    print("wrote bench/results/vae.md")


if __name__ == "__main__":
    main()

"""The op table: every WGSL kernel declared once.

An `Op` says which template renders it, its bindings (binding 0 is always the params uniform),
its u32 params, its workgroup size, how many workgroups a dispatch needs, its float64 torch
reference and its tolerance. The exporter renders templates and writes dispatches from it,
the runtimes only read the manifest, and the parity tests / `ditweb validate` are
parametrised over it. Adding a kernel = one entry here + one template.

Batch-dependent values are linear forms [b, n, c] = b*B + n*N + c (see docs/bundle-format.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jinja2

from dit_model import noise

from .reference import (ref_attention, ref_cond_tokens, ref_expand_batch, ref_gated_residual, ref_guide_combine,
                        ref_label_embed, ref_layernorm_mod, ref_matmul, ref_matmul_naive, ref_patchify,
                        ref_pos_embed_add, ref_rng_normal, ref_sampler_step, ref_timestep_embed, ref_unpatchify)

TEMPLATES = Path(__file__).resolve().parent
MAX_BRANCHES = 8      # guidance branches the step uniform holds (coef: 2 x vec4)


# ------------------------------------------------------------------ linear forms in B and N

def lin(b: int = 0, n: int = 0, c: int = 0) -> list[int]:
    return [int(b), int(n), int(c)]


def const(c: int) -> list[int]:
    return lin(0, 0, c)


def evaluate(form, B: int, N: int) -> int:
    b, n, c = form[:3]
    v = b * B + n * N + c
    return -(-v // form[3]) if len(form) == 4 else v


# ------------------------------------------------------------------ declarations

@dataclass(frozen=True)
class Binding:
    name: str       # WGSL variable name (never a WGSL keyword or built-in)
    kind: str       # "f32" | "u32" | "w" (weight: f32 or f16-in-u32 per bundle dtype) | "step"
    access: str     # "read" | "rw" | "uniform"


@dataclass(frozen=True)
class Op:
    name: str
    template: str
    bindings: tuple[Binding, ...]
    params: tuple[str, ...]
    workgroup_size: tuple[int, int, int]
    groups: tuple          # per dimension: (param name or int, divisor) -> ceil(value / divisor)
    reference: Callable    # (inputs: dict name -> tensor, p: dict name -> int, variant, step) -> dict name -> tensor
    floor: float           # tolerance floor, relative to max |reference output|
    variants: tuple[str, ...] = ()     # template switches that make a kernel name (besides the weight dtype)
    exact: bool = False                # bit-exact op (RNG): tolerance 0
    vec4_bindings: tuple[str, ...] = ()  # with variant vec4="vec4": bound as arrays of vec4 (K % 4 == 0)
    flops: Callable | None = None      # (p) -> float multiply-adds*2, for the benchmark

    def kernel_name(self, variant: dict, wdtype: str) -> str:
        parts = [self.name] + ([wdtype] if self.uses_weights else []) + [str(variant[k]) for k in self.variants]
        return "_".join(parts)

    @property
    def uses_weights(self) -> bool:
        return any(b.kind == "w" for b in self.bindings)

    def workgroups(self, params: dict) -> list[list[int]]:
        out = []
        for what, div in self.groups:
            form = params[what] if isinstance(what, str) else const(what)
            out.append(list(form) + [div])
        return out

    def render(self, variant: dict, wdtype: str) -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                                 keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        header = render_header(self, wdtype, variant)
        derived = {}
        if "head_dim" in variant:
            derived = {"hd4": -(-variant["head_dim"] // 4), "tk": attention_tile(variant["head_dim"])}
        text = env.get_template(self.template).render(header=header, wg=self.workgroup_size, wdtype=wdtype,
                                                      noise=noise, **variant, **derived)
        return text


STEP_STRUCT = """struct Step {
  t: u32, i: u32, seed: u32, zero: u32,
  K: u32, J: u32, N: u32, var_branch: u32,
  flags: u32, _p0: u32, _p1: u32, _p2: u32,
  sqrt_abar: f32, sqrt_1m_abar: f32, coef1: f32, coef2: f32,
  log_beta: f32, log_post_var: f32, sqrt_abar_prev: f32, ddim_dir: f32,
  sigma: f32, perturb: f32, _p3: f32, _p4: f32,
  coef: array<vec4<f32>, 2>,
};
"""


def render_header(op: Op, wdtype: str, variant: dict | None = None) -> str:
    """Params struct + binding declarations + weight loaders, generated from the op table so that
    binding numbers and types live in one place. With variant vec4="vec4" the op's vec4_bindings are
    arrays of vec4 (f32) or vec2<u32> (4 f16 weights), read with load4_NAME(i) -> vec4<f32>.
    f16 weights are unpacked with unpack2x16float, never `enable f16`: SwiftShader lacks shader-f16, and on
    lavapipe native f16 loads measured 0.81-0.91x the speed of unpack2x16float (vec4 matmul, 3 shapes)."""
    vec4 = (variant or {}).get("vec4") == "vec4"
    names = list(op.params) + [f"_pad{i}" for i in range(-len(op.params) % 4)]
    lines = ["struct Params {"] + [f"  {n}: u32," for n in names] + ["};"]
    if any(b.kind == "step" for b in op.bindings):
        lines.append(STEP_STRUCT.rstrip())
    lines.append("@group(0) @binding(0) var<uniform> P: Params;")
    for i, b in enumerate(op.bindings, start=1):
        if b.kind == "step":
            lines.append(f"@group(0) @binding({i}) var<uniform> st: Step;")
            continue
        access = "read" if b.access == "read" else "read_write"
        if vec4 and b.name in op.vec4_bindings:
            if b.kind == "w" and wdtype == "f16":
                lines.append(f"@group(0) @binding({i}) var<storage, {access}> {b.name}: array<vec2<u32>>;")
                lines.append(f"fn load4_{b.name}(i: u32) -> vec4<f32> {{ let pair = {b.name}[i]; "
                             f"return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y)); }}")
            else:
                lines.append(f"@group(0) @binding({i}) var<storage, {access}> {b.name}: array<vec4<f32>>;")
                lines.append(f"fn load4_{b.name}(i: u32) -> vec4<f32> {{ return {b.name}[i]; }}")
            continue
        if b.kind == "w" and wdtype == "f16":
            lines.append(f"@group(0) @binding({i}) var<storage, {access}> {b.name}: array<u32>;")
            lines.append(f"fn load_{b.name}(i: u32) -> f32 {{ let pair = unpack2x16float({b.name}[i >> 1u]); "
                         f"return select(pair.x, pair.y, (i & 1u) == 1u); }}")
        else:
            ty = "u32" if b.kind == "u32" else "f32"
            lines.append(f"@group(0) @binding({i}) var<storage, {access}> {b.name}: array<{ty}>;")
            if b.kind == "w":
                lines.append(f"fn load_{b.name}(i: u32) -> f32 {{ return {b.name}[i]; }}")
    return "\n".join(lines)


WORKGROUP_STORAGE = 16384     # WebGPU's default maxComputeWorkgroupStorageSize: every kernel fits in it


def attention_tile(head_dim: int) -> int:
    """Keys per workgroup-memory tile. 16 keeps K + V tiles within 16 KiB up to head dim 128; 32 and 64
    keys (fewer barriers) measured no faster on lavapipe (Favicon-T/2 attention: 57 / 97 / 47 ms median
    of 4 noisy runs, minima 22-26 ms for all three), and larger tiles cost occupancy on GPUs."""
    return 16


def workgroup_bytes(op_name: str, variant: dict) -> int:
    if op_name == "attention":
        return attention_tile(variant["head_dim"]) * 2 * 16 * -(-variant["head_dim"] // 4)
    return {"matmul_shared": 8192, "layernorm_mod": 256}.get(op_name, 0)


def binding_type(b: Binding) -> str:
    return {"uniform": "uniform", "read": "read-only-storage", "rw": "storage"}[b.access]


# ------------------------------------------------------------------ the table

def B(name, kind="f32", access="read"):
    return Binding(name, kind, access)


ELEMS = 256 * 4   # elementwise kernels: 256 invocations x 4 elements each

OPS: dict[str, Op] = {op.name: op for op in [
    # matmul: 4x4 outputs per invocation in registers, no workgroup memory (fastest on the software adapters
    # lavapipe / SwiftShader, where barriers are costly: bench/results/kernels.md); matmul_shared stages
    # 32x32 tiles in workgroup memory (the classic GPU kernel, `ditweb export --matmul shared`).
    Op("matmul", "matmul.wgsl.j2", (B("a"), B("w", "w"), B("bias", "w"), B("dst", access="rw")),
       ("M", "N", "K", "out_group", "out_stride"), (8, 8, 1), (("N", 32), ("M", 32), (1, 1)),
       ref_matmul, 1e-6, variants=("in_act", "act", "vec4"), flops=lambda p: 2.0 * p["M"] * p["N"] * p["K"],
       vec4_bindings=("a", "w")),
    Op("matmul_shared", "matmul_shared.wgsl.j2", (B("a"), B("w", "w"), B("bias", "w"), B("dst", access="rw")),
       ("M", "N", "K", "out_group", "out_stride"), (8, 8, 1), (("N", 32), ("M", 32), (1, 1)),
       ref_matmul, 1e-6, variants=("in_act", "act"), flops=lambda p: 2.0 * p["M"] * p["N"] * p["K"]),
    Op("matmul_naive", "matmul_naive.wgsl.j2", (B("a"), B("w", "w"), B("bias", "w"), B("dst", access="rw")),
       ("M", "N", "K", "MN"), (64, 1, 1), (("MN", 64), (1, 1), (1, 1)),
       ref_matmul_naive, 1e-6, flops=lambda p: 2.0 * p["M"] * p["N"] * p["K"]),
    Op("layernorm_mod", "layernorm_mod.wgsl.j2", (B("x"), B("ada"), B("dst", access="rw")),
       ("rows", "D", "T", "T_in", "has_mod", "mod_stride", "shift_off", "scale_off"), (64, 1, 1),
       (("rows", 1), (1, 1), (1, 1)), ref_layernorm_mod, 1e-6),
    Op("attention", "attention.wgsl.j2", (B("q"), B("kv"), B("dst", access="rw")),
       ("batch", "T_q", "T_kv", "H", "q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride"), (64, 1, 1),
       (("T_q", 64), ("H", 1), ("batch", 1)), ref_attention, 1e-6, variants=("head_dim",),
       flops=lambda p: 4.0 * p["batch"] * p["H"] * p["T_q"] * p["T_kv"] * p["head_dim"]),
    Op("gated_residual", "gated_residual.wgsl.j2", (B("h", access="rw"), B("y"), B("ada")),
       ("count", "D", "T", "has_gate", "mod_stride", "gate_off"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)),
       ref_gated_residual, 1e-7),
    Op("patchify", "patchify.wgsl.j2", (B("img"), B("dst", access="rw")),
       ("count", "C", "I", "p"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_patchify, 0.0),
    Op("unpatchify", "unpatchify.wgsl.j2", (B("src"), B("dst", access="rw")),
       ("count", "C", "I", "p"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_unpatchify, 0.0),
    Op("pos_embed_add", "pos_embed_add.wgsl.j2", (B("h", access="rw"), B("pos", "w")),
       ("count", "T", "D", "T_buf"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_pos_embed_add, 1e-7),
    Op("timestep_embed", "timestep_embed.wgsl.j2", (B("t", "u32"), B("freqs"), B("dst", access="rw")),
       ("count", "half"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_timestep_embed, 1e-6),
    Op("label_embed", "label_embed.wgsl.j2",
       (B("y", "u32"), B("table", "w"), B("t_emb"), B("y_emb", access="rw"), B("c", access="rw")),
       ("count", "D", "rows"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_label_embed, 1e-7),
    Op("cond_tokens", "cond_tokens.wgsl.j2", (B("t_emb"), B("y_emb"), B("dst", access="rw")),
       ("count", "D", "T_dst", "tok0"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_cond_tokens, 0.0),
    Op("rng_normal", "rng_normal.wgsl.j2", (B("st", "step", "uniform"), B("dst", access="rw")),
       ("count", "stream", "use_step"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_rng_normal, 0.0,
       exact=True),
    Op("expand_batch", "expand_batch.wgsl.j2",
       (B("st", "step", "uniform"), B("x"), B("x_in", access="rw"), B("t_in", "u32", "rw")),
       ("count", "P", "B"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_expand_batch, 1e-7),
    Op("guide_combine", "guide_combine.wgsl.j2", (B("st", "step", "uniform"), B("model_out"), B("guided", access="rw")),
       ("count", "C", "C_out", "P2"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_guide_combine, 1e-6),
    Op("sampler_step", "sampler_step.wgsl.j2", (B("st", "step", "uniform"), B("guided"), B("x", access="rw")),
       ("count", "C", "P2", "learn_sigma"), (256, 1, 1), (("count", ELEMS), (1, 1), (1, 1)), ref_sampler_step, 1e-6),
]}


def tolerance(op: Op, err_torch32: float, scale: float) -> float:
    """Allowed max abs error: 4x torch's own float32 error on the same inputs (the GPU sums in another
    order, so its rounding error is of the same size, not identical), never below op.floor x the output
    scale: 1e-7 ~ one f32 ulp (2^-23 = 1.2e-7) for a single add or multiply; 1e-6 ~ 8 ulps for
    reductions and exp/tanh (WGSL bounds exp to 3 + 2|x| ulps); 0 for copies; the RNG must be exact."""
    if op.exact:
        return 0.0
    return max(4.0 * err_torch32, op.floor * scale)

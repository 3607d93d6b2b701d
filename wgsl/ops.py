"""The op table: every WGSL kernel declared once.

An `Op` says which template renders it, its bindings (binding 0 is always the params uniform),
its u32 params, its workgroup size and workgroup storage, how many workgroups a dispatch needs, the
template variants it offers, its float64 torch reference and error bound (wgsl/bounds.py,
docs/tolerances.md), the params that label its shape and the torch call the benchmark times against
it. The exporter renders templates and writes dispatches from it, the runtimes only read the
manifest, and the parity tests / `ditweb validate` / the benchmark are parametrised over it.
Adding a kernel = one entry here + one template + its reference and bound.

Batch-dependent values are linear forms [b, n, c] = b*B + n*N + c (see docs/bundle-format.md).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jinja2

from ditformat import noise
from ditformat.forms import const
from ditformat.layout import OP_PARAMS, wgsl_step_struct

from . import bounds
from .reference import (ref_bmm, ref_conv2d, ref_groupnorm, ref_softmax_rows, ref_upsample_nearest,
                        ref_attention, ref_cond_tokens, ref_expand_batch, ref_gated_residual, ref_guide_combine,
                        ref_label_embed, ref_layernorm_mod, ref_matmul, ref_matmul_naive, ref_patchify,
                        ref_pos_embed_add, ref_rng_normal, ref_sampler_step, ref_timestep_embed, ref_unpatchify,
                        torch_attention, torch_layernorm_mod, torch_matmul)

TEMPLATES = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def jinja_env() -> jinja2.Environment:
    """The one template environment (built on first use; it caches the parsed templates)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)

# ------------------------------------------------------------------ declarations

@dataclass(frozen=True)
class Binding:
    name: str       # WGSL variable name (never a WGSL keyword or built-in)
    kind: str       # "f32" | "u32" | "w" (weight: f32 or f16-in-u32 per bundle dtype) | "step"
    access: str     # "read" | "rw" | "uniform"


@dataclass(frozen=True)
class Op:
    """One kernel, everything the exporter, the runtimes, the parity checks and the benchmark know of it."""
    name: str
    template: str                          # jinja2 template in wgsl/
    bindings: tuple[Binding, ...]          # bindings 1.. (0 is the params uniform)
    workgroup_size: tuple[int, int, int]
    groups: tuple                          # per dimension: (param name or int, divisor) -> ceil(value / divisor)
    reference: Callable                    # (inputs: name -> tensor, p, variant, step) -> written name -> tensor
    bound: Callable                        # same arguments, float64 inputs -> written name -> max error per element
    variants: dict = field(default_factory=dict)   # template switch -> the values it offers (None: any int);
                                                   # switches make the kernel name (besides the weight dtype)
    exact: bool = False                    # bit-exact op (RNG): compared bit for bit
    vec4_bindings: tuple[str, ...] = ()    # with variant vec4="vec4": bound as arrays of vec4 (K % 4 == 0)
    workgroup_storage: Callable = lambda variant: 0    # bytes of var<workgroup> memory the variant declares
    shape_keys: tuple[str, ...] = ("count",)           # params that name a dispatch's shape in tables
    reduce: str | None = None              # param (or switch) that is the length of the op's longest sum
    flops: Callable | None = None          # (p) -> float multiply-adds*2, for the benchmark
    torch_equivalent: Callable | None = None   # (p, variant) -> zero-argument torch call doing the same work
                                               # (benchmark; None: the op's float32 reference)
    params: tuple[str, ...] = field(default=(), kw_only=True)   # u32 params, in uniform order: always
                                                                # ditformat.layout.OP_PARAMS[name]

    def __post_init__(self):
        object.__setattr__(self, "params", OP_PARAMS[self.name])

    def kernel_name(self, variant: dict, wdtype: str) -> str:
        for k, offered in self.variants.items():
            if k not in variant or (offered is not None and variant[k] not in offered):
                raise ValueError(f"op {self.name}: variant {k}={variant.get(k)!r} is not one it offers "
                                 f"({', '.join(map(str, offered)) if offered else 'an integer'})")
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
        env = jinja_env()
        header = render_header(self, wdtype, variant)
        derived = {}
        if "head_dim" in variant:
            derived = {"hd4": -(-variant["head_dim"] // 4), "tk": ATTENTION_TILE}
        text = env.get_template(self.template).render(header=header, wg=self.workgroup_size, wdtype=wdtype,
                                                      noise=noise, **variant, **derived)
        return text


STEP_STRUCT = wgsl_step_struct()     # generated from ditformat/layout.py STEP_FIELDS


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


# Keys per workgroup-memory tile of the attention kernel. 16 keeps the K + V tiles within WebGPU's
# default 16 KiB of workgroup storage up to head dim 128; 32 and 64 keys (fewer barriers) measured no
# faster on lavapipe (Favicon-T/2 attention: 57 / 97 / 47 ms median of 4 noisy runs, minima 22-26 ms for
# all three), and larger tiles cost occupancy on GPUs.
ATTENTION_TILE = bounds.ATTENTION_TILE


def workgroup_bytes(op_name: str, variant: dict) -> int:
    """var<workgroup> bytes of one kernel (the exporter records the largest in the manifest)."""
    return ALL_OPS[op_name].workgroup_storage(variant)


def binding_type(b: Binding) -> str:
    return {"uniform": "uniform", "read": "read-only-storage", "rw": "storage"}[b.access]


# ------------------------------------------------------------------ the table

def B(name, kind="f32", access="read"):
    return Binding(name, kind, access)


ELEMS = 256 * 4   # elementwise kernels: 256 invocations x 4 elements each
MATMUL_BINDINGS = (B("a"), B("w", "w"), B("bias", "w"), B("dst", access="rw"))
ACTS = {"in_act": ("none", "silu"), "act": ("none", "gelu", "silu")}


def _matmul_flops(p):
    return 2.0 * p["M"] * p["N"] * p["K"]


def _elementwise(name, bindings, reference, bound, **kw):
    """An op of the elementwise frame (_elementwise.wgsl.j2): 256 invocations x 4 elements of P.count;
    its params (OP_PARAMS[name]) start with count."""
    return Op(name=name, template=f"{name}.wgsl.j2", bindings=bindings, workgroup_size=(256, 1, 1),
              groups=(("count", ELEMS), (1, 1), (1, 1)), reference=reference, bound=bound, **kw)


OPS: dict[str, Op] = {op.name: op for op in [
    # matmul: 4x4 outputs per invocation in registers, no workgroup memory (fastest on the software adapters
    # lavapipe / SwiftShader, where barriers are costly: bench/results/kernels.md); matmul_shared stages
    # 32x32 tiles in workgroup memory (the classic GPU kernel, `ditweb export --matmul shared`).
    Op(name="matmul", template="matmul.wgsl.j2", bindings=MATMUL_BINDINGS, workgroup_size=(8, 8, 1), groups=(("N", 32), ("M", 32), (1, 1)),
       reference=ref_matmul, bound=bounds.bound_matmul, variants={**ACTS, "vec4": ("scalar", "vec4")},
       vec4_bindings=("a", "w"), shape_keys=("M", "N", "K"), reduce="K", flops=_matmul_flops,
       torch_equivalent=torch_matmul),
    # int8 weights (`export --dtype int8`): the register-blocked vec4 design, q as 4 signed bytes a u32 (K % 4 == 0),
    # a scale per output channel applied after the sum; scales and biases f32
    Op(name="matmul_q8", template="matmul_q8.wgsl.j2",
       bindings=(B("a"), B("wq", "u32"), B("scale"), B("bias"), B("dst", access="rw")), workgroup_size=(8, 8, 1), groups=(("N", 32), ("M", 32), (1, 1)),
       reference=ref_matmul, bound=bounds.bound_matmul, variants={**ACTS, "vec4": ("vec4",)},
       vec4_bindings=("a",), shape_keys=("M", "N", "K"), reduce="K", flops=_matmul_flops,
       torch_equivalent=torch_matmul),
    Op(name="matmul_shared", template="matmul_shared.wgsl.j2", bindings=MATMUL_BINDINGS, workgroup_size=(8, 8, 1), groups=(("N", 32), ("M", 32), (1, 1)),
       reference=ref_matmul, bound=bounds.bound_matmul, variants=dict(ACTS),
       workgroup_storage=lambda v: 2 * 32 * 32 * 4,            # As, Ws: 32 x 32 f32 each
       shape_keys=("M", "N", "K"), reduce="K", flops=_matmul_flops, torch_equivalent=torch_matmul),
    Op(name="layernorm_mod", template="layernorm_mod.wgsl.j2", bindings=(B("x"), B("ada"), B("dst", access="rw")),
       workgroup_size=(64, 1, 1), groups=(("rows", 1), (1, 1), (1, 1)),
       reference=ref_layernorm_mod, bound=bounds.bound_layernorm_mod,
       workgroup_storage=lambda v: 64 * 4,                      # red: one f32 per invocation
       shape_keys=("rows", "D"), reduce="D", torch_equivalent=torch_layernorm_mod),
    Op(name="attention", template="attention.wgsl.j2", bindings=(B("q"), B("kv"), B("dst", access="rw")),
       workgroup_size=(64, 1, 1), groups=(("T_q", 64), ("H", 1), ("batch", 1)),
       reference=ref_attention, bound=bounds.bound_attention, variants={"head_dim": None},
       workgroup_storage=lambda v: 2 * ATTENTION_TILE * -(-v["head_dim"] // 4) * 16,   # Ks, Vs: vec4 tiles
       shape_keys=("T_q", "T_kv", "H"), reduce="T_kv",
       flops=lambda p: 4.0 * p["batch"] * p["H"] * p["T_q"] * p["T_kv"] * p["head_dim"],
       torch_equivalent=torch_attention),
    _elementwise("gated_residual", (B("h", access="rw"), B("y"), B("ada")), ref_gated_residual,
                 bounds.bound_gated_residual),
    _elementwise("patchify", (B("img"), B("dst", access="rw")), ref_patchify,
                 bounds.bound_exact),
    _elementwise("unpatchify", (B("src"), B("dst", access="rw")), ref_unpatchify,
                 bounds.bound_exact),
    _elementwise("pos_embed_add", (B("h", access="rw"), B("pos", "w")),
                 ref_pos_embed_add, bounds.bound_pos_embed_add),
    _elementwise("timestep_embed", (B("t", "u32"), B("freqs"), B("dst", access="rw")),
                 ref_timestep_embed, bounds.bound_timestep_embed),
    _elementwise("label_embed", (B("y", "u32"), B("table", "w"), B("t_emb"), B("y_emb", access="rw"),
                                 B("c", access="rw")), ref_label_embed,
                 bounds.bound_label_embed),
    # int8 bundles: the table as int8 (4 values a u32 word) with an f32 scale per row (export/bundle.py
    # quantize_linear's rule), dequantised as it is read; label_embed.wgsl.j2 with q8 set
    _elementwise("label_embed_q8", (B("y", "u32"), B("table", "u32"), B("scale"), B("t_emb"), B("y_emb", access="rw"),
                                    B("c", access="rw")), ref_label_embed,
                 bounds.bound_label_embed),
    _elementwise("cond_tokens", (B("t_emb"), B("y_emb"), B("dst", access="rw")),
                 ref_cond_tokens, bounds.bound_exact),
    _elementwise("rng_normal", (B("st", "step", "uniform"), B("dst", access="rw")),
                 ref_rng_normal, bounds.bound_exact, exact=True),
    _elementwise("expand_batch", (B("st", "step", "uniform"), B("x"), B("x_in", access="rw"), B("t_in", "u32", "rw")),
                 ref_expand_batch, bounds.bound_expand_batch),
    _elementwise("guide_combine", (B("st", "step", "uniform"), B("model_out"), B("guided", access="rw")),
                 ref_guide_combine, bounds.bound_guide_combine),
    _elementwise("sampler_step", (B("st", "step", "uniform"), B("guided"), B("x", access="rw")),
                 ref_sampler_step, bounds.bound_sampler_step),
]}

# The VAE decoder's kernels (docs/vae.md): activations NCHW. conv2d weights are stored transposed,
# (C_in * k * k, C_out4): four output channels are one vec4 (f16: one vec2<u32>, unpacked without shader-f16).
def _conv_flops(p):
    return 2.0 * p["blocks"] * 8 * p["C_out"] * p["C_in"] * p["k"] ** 2      # pixels rounded up to blocks of 8


OPS.update({op.name: op for op in [
    Op(name="conv2d", template="conv2d.wgsl.j2",
       bindings=(B("src"), B("w", "w"), B("bias", "w"), B("res"), B("dst", access="rw")),
       workgroup_size=(8, 8, 1), groups=(("C_out", 64), ("blocks", 8), (1, 1)),
       reference=ref_conv2d, bound=bounds.bound_conv2d, variants={"k": (1, 3), "vec4": ("vec4",)},
       vec4_bindings=("w",), shape_keys=("C_in", "C_out", "H", "W"), reduce="C_in", flops=_conv_flops),
    # int8 weights: the same template and layout, q as signed bytes (4 output channels a u32), a scale per output
    # channel applied after the sum; scales and biases f32
    Op(name="conv2d_q8", template="conv2d.wgsl.j2",
       bindings=(B("src"), B("wq", "u32"), B("scale"), B("bias"), B("res"), B("dst", access="rw")),
       workgroup_size=(8, 8, 1), groups=(("C_out", 64), ("blocks", 8), (1, 1)),
       reference=ref_conv2d, bound=bounds.bound_conv2d, variants={"k": (1, 3), "q8": ("q8",)},
       shape_keys=("C_in", "C_out", "H", "W"), reduce="C_in", flops=_conv_flops),
    Op(name="groupnorm", template="groupnorm.wgsl.j2",
       bindings=(B("src"), B("norm_w", "w"), B("norm_b", "w"), B("dst", access="rw")),
       workgroup_size=(256, 1, 1), groups=(("rows", 1), (1, 1), (1, 1)),
       reference=ref_groupnorm, bound=bounds.bound_groupnorm, variants={"act": ("none", "silu")},
       workgroup_storage=lambda v: 256 * 4, shape_keys=("rows", "C", "HW"), reduce="HW"),
    _elementwise("upsample_nearest", (B("src"), B("dst", access="rw")), ref_upsample_nearest,
                 bounds.bound_exact),
    Op(name="bmm", template="bmm.wgsl.j2", bindings=(B("a"), B("bm"), B("dst", access="rw")),
       workgroup_size=(8, 8, 1), groups=(("N", 32), ("M", 32), ("batch", 1)),
       reference=ref_bmm, bound=bounds.bound_bmm, shape_keys=("M", "N", "K"), reduce="K",
       flops=lambda p: 2.0 * p["batch"] * p["M"] * p["N"] * p["K"]),
    Op(name="softmax_rows", template="softmax_rows.wgsl.j2", bindings=(B("x", access="rw"),), workgroup_size=(256, 1, 1), groups=(("rows", 1), (1, 1), (1, 1)),
       reference=ref_softmax_rows, bound=bounds.bound_softmax_rows,
       workgroup_storage=lambda v: 256 * 4, shape_keys=("rows", "L"), reduce="L"),
]})

# Candidates (docs/bundle-format.md, "candidates"): kernels with the contract of an op above (the same params,
# bindings and result within the same kind of bound) in another design. The exporter lists them beside the
# op's kernel and the runtimes time them on the visitor's device: the CPU adapters run barrier-free
# designs faster, GPUs the workgroup-memory ones.
OPS.update({op.name: op for op in [
    Op(name="layernorm_rows", template="layernorm_rows.wgsl.j2", bindings=(B("x"), B("ada"), B("dst", access="rw")),
       workgroup_size=(16, 1, 1), groups=(("rows", 16), (1, 1), (1, 1)),
       reference=ref_layernorm_mod, bound=bounds.bound_layernorm_rows, shape_keys=("rows", "D"), reduce="D",
       torch_equivalent=torch_layernorm_mod),
    *[Op(name=f"matmul_{tile}", template="matmul_wide.wgsl.j2", bindings=MATMUL_BINDINGS, workgroup_size=(8, 8, 1), groups=(("N", 8 * int(tile[2])), ("M", 8 * int(tile[0])), (1, 1)),
         reference=ref_matmul, bound=bounds.bound_matmul, variants={**ACTS, "tile": (tile,), "vec4": ("vec4",)},
         vec4_bindings=("a", "w"), shape_keys=("M", "N", "K"), reduce="K", flops=_matmul_flops,
         torch_equivalent=torch_matmul) for tile in ("8x4", "8x8")],
    Op(name="matmul_shared64", template="matmul_shared64.wgsl.j2", bindings=MATMUL_BINDINGS, workgroup_size=(8, 8, 1), groups=(("N", 64), ("M", 64), (1, 1)),
       reference=ref_matmul, bound=bounds.bound_matmul, variants=dict(ACTS),
       workgroup_storage=lambda v: 2 * 16 * 64 * 4,            # As, Ws: 16 x 64 f32 each
       shape_keys=("M", "N", "K"), reduce="K", flops=_matmul_flops, torch_equivalent=torch_matmul),
    Op(name="attention_direct", template="attention_direct.wgsl.j2", bindings=OPS["attention"].bindings,
       workgroup_size=(16, 1, 1), groups=(("T_q", 16), ("H", 1), ("batch", 1)),
       reference=ref_attention, bound=bounds.bound_attention, variants={"head_dim": None},
       shape_keys=("T_q", "T_kv", "H"), reduce="T_kv", flops=OPS["attention"].flops,
       torch_equivalent=torch_attention),
    # 4 queries per invocation, vec4 rows (head dim, strides and offsets multiples of 4): the same bits as
    # attention_direct, each key/value load serving 4 queries
    Op(name="attention_q4", template="attention_q4.wgsl.j2", bindings=OPS["attention"].bindings,
       workgroup_size=(8, 1, 1), groups=(("T_q", 32), ("H", 1), ("batch", 1)),
       reference=ref_attention, bound=bounds.bound_attention, variants={"head_dim": None, "vec4": ("vec4",)},
       vec4_bindings=("q", "kv", "dst"), shape_keys=("T_q", "T_kv", "H"), reduce="T_kv",
       flops=OPS["attention"].flops, torch_equivalent=torch_attention),
]})

# Not exported, not in OPS: the benchmark's baseline (one invocation per output, no tiling) that shows
# what register blocking buys; the parity tests check it like the others.
BASELINE_OPS: dict[str, Op] = {op.name: op for op in [
    Op(name="matmul_naive", template="matmul_naive.wgsl.j2", bindings=MATMUL_BINDINGS, workgroup_size=(64, 1, 1), groups=(("MN", 64), (1, 1), (1, 1)),
       reference=ref_matmul_naive, bound=bounds.bound_matmul_naive, shape_keys=("M", "N", "K"), reduce="K",
       flops=_matmul_flops),
]}
ALL_OPS: dict[str, Op] = {**OPS, **BASELINE_OPS}


def shape_of(op: Op, params: dict) -> dict:
    """The params that name a dispatch's shape (for result tables)."""
    return {k: params[k] for k in op.shape_keys if k in params}

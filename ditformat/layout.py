"""The bundle's binary layouts, declared once as data: the 128-byte step record, its flags and each op's u32
params (the order of a dispatch's params uniform). Everything that lays these out in another language is
generated from here (ditformat/generate.py, `python -m ditformat`):
  WGSL   wgsl_step_struct(): the `Step` struct rendered into the kernels that bind the step uniform
  JS     web/bundle-layout.js: STEP_FIELDS, STEP_FLAGS, OP_PARAMS and packStep (web/schedule.js, web/wasm-runtime.js)
  C      wasm/bundle-layout.h: the Step struct, one params struct and one PARAMS_<op> macro per op and the noise
         constants of ditformat/noise.py (included by wasm/kernels.c)
ditformat/step.py packs the record in Python from the same declaration; tests/test_format.py fails when a
generated file is stale."""
from __future__ import annotations

from .schema import SCHEMA

STEP_BYTES = SCHEMA["step_bytes"]            # 128
MAX_BRANCHES = SCHEMA["max_branches"]        # 8 guidance coefficients the record holds (coef: 2 x vec4)

# (name, type, count): 32 words in order; names starting with "_" are padding (always 0)
STEP_FIELDS = (
    ("t", "u32", 1), ("i", "u32", 1), ("seed", "u32", 1), ("zero", "u32", 1),
    ("K", "u32", 1), ("J", "u32", 1), ("N", "u32", 1), ("var_branch", "u32", 1),
    ("flags", "u32", 1), ("_p0", "u32", 1), ("_p1", "u32", 1), ("_p2", "u32", 1),
    ("sqrt_abar", "f32", 1), ("sqrt_1m_abar", "f32", 1), ("coef1", "f32", 1), ("coef2", "f32", 1),
    ("log_beta", "f32", 1), ("log_post_var", "f32", 1), ("sqrt_abar_prev", "f32", 1), ("ddim_dir", "f32", 1),
    ("sigma", "f32", 1), ("perturb", "f32", 1), ("_p3", "f32", 1), ("_p4", "f32", 1),
    ("coef", "f32", MAX_BRANCHES),
)
# flags bits: clip x0 to [-1, 1]; DDPM (else DDIM); add noise this step; the network output is v (else eps)
STEP_FLAGS = {"clip": 1, "ddpm": 2, "noise": 4, "v": 8}


def step_words() -> dict:
    """name -> (first word, type, count)."""
    out, word = {}, 0
    for name, ty, count in STEP_FIELDS:
        out[name] = (word, ty, count)
        word += count
    assert 4 * word == STEP_BYTES, (word, STEP_BYTES)
    return out


STEP_WORDS = step_words()
U32S = tuple(n for n, ty, _ in STEP_FIELDS if ty == "u32" and not n.startswith("_"))
FLOATS = tuple(n for n, ty, c in STEP_FIELDS if ty == "f32" and c == 1 and not n.startswith("_"))

_MATMUL = ("M", "N", "K", "out_group", "out_stride")
_LAYERNORM = ("rows", "D", "T", "T_in", "has_mod", "mod_stride", "shift_off", "scale_off")
_ATTENTION = ("batch", "T_q", "T_kv", "H", "q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride")
_CONV = ("blocks", "C_in", "C_out", "C_out4", "H", "W", "has_res")

# Each op's u32 params, in the order of its params uniform (binding 0); wgsl/ops.py declares its ops with these.
OP_PARAMS: dict[str, tuple[str, ...]] = {
    "matmul": _MATMUL, "matmul_q8": _MATMUL, "matmul_shared": _MATMUL, "matmul_8x4": _MATMUL, "matmul_8x8": _MATMUL,
    "matmul_shared64": _MATMUL,
    "matmul_naive": ("M", "N", "K", "MN"),
    "layernorm_mod": _LAYERNORM, "layernorm_rows": _LAYERNORM,
    "attention": _ATTENTION, "attention_direct": _ATTENTION, "attention_q4": _ATTENTION,
    "gated_residual": ("count", "D", "T", "has_gate", "mod_stride", "gate_off"),
    "patchify": ("count", "C", "I", "p"),
    "unpatchify": ("count", "C", "I", "p"),
    "pos_embed_add": ("count", "T", "D", "T_buf"),
    "timestep_embed": ("count", "half"),
    "label_embed": ("count", "D", "rows", "levels"), "label_embed_q8": ("count", "D", "rows", "levels"),
    "cond_tokens": ("count", "D", "T_dst", "tok0"),
    "rng_normal": ("count", "stream", "use_step"),
    "expand_batch": ("count", "P", "B"),
    "guide_combine": ("count", "C", "C_out", "P2"),
    "sampler_step": ("count", "C", "P2", "learn_sigma"),
    # the VAE decoder's (docs/vae.md)
    "conv2d": _CONV, "conv2d_q8": _CONV,
    "groupnorm": ("rows", "G", "C", "HW", "eps_bits"),
    "upsample_nearest": ("count", "H", "W"),
    "bmm": ("batch", "M", "N", "K", "a_off", "a_sb", "a_sm", "a_sk", "b_off", "b_sb", "b_sn", "b_sk", "alpha_bits"),
    "softmax_rows": ("rows", "L"),
}


def wgsl_step_struct() -> str:
    """The WGSL `Step` struct: four scalar fields a line, the coefficients as vec4s."""
    scalars = [(n, ty) for n, ty, c in STEP_FIELDS if c == 1]
    lines = ["struct Step {"]
    for k in range(0, len(scalars), 4):
        lines.append("  " + " ".join(f"{n}: {ty}," for n, ty in scalars[k:k + 4]))
    for n, ty, c in STEP_FIELDS:
        if c > 1:
            assert c % 4 == 0
            lines.append(f"  {n}: array<vec4<{ty}>, {c // 4}>,")
    lines.append("};")
    return "\n".join(lines) + "\n"

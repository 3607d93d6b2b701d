// Generated from ditformat/layout.py by `python -m ditformat`; do not edit.
// The 128-byte step record (docs/bundle-format.md, "The step uniform") and each op's params, by name.

export const STEP_BYTES = 128;
/** @type {Record<string, {word: number, type: string, count?: number}>} */
export const STEP_FIELDS = {
 "t": {"word": 0, "type": "u32"},
 "i": {"word": 1, "type": "u32"},
 "seed": {"word": 2, "type": "u32"},
 "zero": {"word": 3, "type": "u32"},
 "K": {"word": 4, "type": "u32"},
 "J": {"word": 5, "type": "u32"},
 "N": {"word": 6, "type": "u32"},
 "var_branch": {"word": 7, "type": "u32"},
 "flags": {"word": 8, "type": "u32"},
 "sqrt_abar": {"word": 12, "type": "f32"},
 "sqrt_1m_abar": {"word": 13, "type": "f32"},
 "coef1": {"word": 14, "type": "f32"},
 "coef2": {"word": 15, "type": "f32"},
 "log_beta": {"word": 16, "type": "f32"},
 "log_post_var": {"word": 17, "type": "f32"},
 "sqrt_abar_prev": {"word": 18, "type": "f32"},
 "ddim_dir": {"word": 19, "type": "f32"},
 "sigma": {"word": 20, "type": "f32"},
 "perturb": {"word": 21, "type": "f32"},
 "coef": {"word": 24, "type": "f32", "count": 8}
};
/** @type {Record<string, number>} */
export const STEP_FLAGS = {"clip": 1, "ddpm": 2, "noise": 4, "v": 8};
/** @type {Record<string, string[]>} */
export const OP_PARAMS = {
 "matmul": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_q8": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_shared": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_8x4": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_8x8": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_shared64": ["M", "N", "K", "out_group", "out_stride"],
 "matmul_naive": ["M", "N", "K", "MN"],
 "layernorm_mod": ["rows", "D", "T", "T_in", "has_mod", "mod_stride", "shift_off", "scale_off"],
 "layernorm_rows": ["rows", "D", "T", "T_in", "has_mod", "mod_stride", "shift_off", "scale_off"],
 "attention": ["batch", "T_q", "T_kv", "H", "q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride"],
 "attention_direct": ["batch", "T_q", "T_kv", "H", "q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride"],
 "attention_q4": ["batch", "T_q", "T_kv", "H", "q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride"],
 "gated_residual": ["count", "D", "T", "has_gate", "mod_stride", "gate_off"],
 "patchify": ["count", "C", "I", "p"],
 "unpatchify": ["count", "C", "I", "p"],
 "pos_embed_add": ["count", "T", "D", "T_buf"],
 "timestep_embed": ["count", "half"],
 "label_embed": ["count", "D", "rows", "levels"],
 "label_embed_q8": ["count", "D", "rows", "levels"],
 "cond_tokens": ["count", "D", "T_dst", "tok0"],
 "rng_normal": ["count", "stream", "use_step"],
 "expand_batch": ["count", "P", "B"],
 "guide_combine": ["count", "C", "C_out", "P2"],
 "sampler_step": ["count", "C", "P2", "learn_sigma"],
 "conv2d": ["blocks", "C_in", "C_out", "C_out4", "H", "W", "has_res"],
 "conv2d_q8": ["blocks", "C_in", "C_out", "C_out4", "H", "W", "has_res"],
 "groupnorm": ["rows", "G", "C", "HW", "eps_bits"],
 "upsample_nearest": ["count", "H", "W"],
 "bmm": [
  "batch",
  "M",
  "N",
  "K",
  "a_off",
  "a_sb",
  "a_sm",
  "a_sk",
  "b_off",
  "b_sb",
  "b_sn",
  "b_sk",
  "alpha_bits"
 ],
 "softmax_rows": ["rows", "L"]
};

/**
 * The step record holding `fields` (name -> number, or an array for `coef`); fields not given are 0.
 * Floats are rounded to f32 here, as the format says.
 * @param {Record<string, number | number[]>} fields
 * @returns {ArrayBuffer}
 */
export function packStep(fields) {
  const buf = new ArrayBuffer(STEP_BYTES);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  for (const [name, value] of Object.entries(fields)) {
    const spec = STEP_FIELDS[name];
    if (!spec) throw new RangeError(`the step record has no field ${name}`);
    const view = spec.type === "u32" ? u : f;
    const values = Array.isArray(value) ? value : [value];
    if (values.length > (spec.count || 1)) throw new RangeError(`step field ${name} holds ${spec.count || 1} values, got ${values.length}`);
    values.forEach((v, j) => { view[spec.word + j] = v; });
  }
  return buf;
}

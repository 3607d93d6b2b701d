// Generated from ditformat/layout.py and ditformat/noise.py by `python -m ditformat`; do not edit.
// Needs u32 and f32 (uint32_t, float) declared before it.
#ifndef DITWEB_BUNDLE_LAYOUT_H
#define DITWEB_BUNDLE_LAYOUT_H

// the step record (128 bytes, docs/bundle-format.md)
typedef struct {
  u32 t;
  u32 i;
  u32 seed;
  u32 zero;
  u32 K;
  u32 J;
  u32 N;
  u32 var_branch;
  u32 flags;
  u32 _p0;
  u32 _p1;
  u32 _p2;
  f32 sqrt_abar;
  f32 sqrt_1m_abar;
  f32 coef1;
  f32 coef2;
  f32 log_beta;
  f32 log_post_var;
  f32 sqrt_abar_prev;
  f32 ddim_dir;
  f32 sigma;
  f32 perturb;
  f32 _p3;
  f32 _p4;
  f32 coef[8];
} Step;

#define STEP_FLAG_CLIP 1u
#define STEP_FLAG_DDPM 2u
#define STEP_FLAG_NOISE 4u
#define STEP_FLAG_V 8u

// each op's params: a struct, and PARAMS_<op>(ptr) declaring one const u32 local per param
typedef struct { u32 M, N, K, out_group, out_stride; } matmul_params;
#define PARAMS_matmul(ptr) const u32 M = (ptr)[0], N = (ptr)[1], K = (ptr)[2], out_group = (ptr)[3], out_stride = (ptr)[4]
typedef matmul_params matmul_q8_params;
#define PARAMS_matmul_q8(ptr) PARAMS_matmul(ptr)
typedef matmul_params matmul_shared_params;
#define PARAMS_matmul_shared(ptr) PARAMS_matmul(ptr)
typedef matmul_params matmul_8x4_params;
#define PARAMS_matmul_8x4(ptr) PARAMS_matmul(ptr)
typedef matmul_params matmul_8x8_params;
#define PARAMS_matmul_8x8(ptr) PARAMS_matmul(ptr)
typedef matmul_params matmul_shared64_params;
#define PARAMS_matmul_shared64(ptr) PARAMS_matmul(ptr)
typedef struct { u32 M, N, K, MN; } matmul_naive_params;
#define PARAMS_matmul_naive(ptr) const u32 M = (ptr)[0], N = (ptr)[1], K = (ptr)[2], MN = (ptr)[3]
typedef struct { u32 rows, D, T, T_in, has_mod, mod_stride, shift_off, scale_off; } layernorm_mod_params;
#define PARAMS_layernorm_mod(ptr) const u32 rows = (ptr)[0], D = (ptr)[1], T = (ptr)[2], T_in = (ptr)[3], has_mod = (ptr)[4], mod_stride = (ptr)[5], shift_off = (ptr)[6], scale_off = (ptr)[7]
typedef layernorm_mod_params layernorm_rows_params;
#define PARAMS_layernorm_rows(ptr) PARAMS_layernorm_mod(ptr)
typedef struct { u32 batch, T_q, T_kv, H, q_stride, q_off, kv_stride, k_off, v_off, out_stride; } attention_params;
#define PARAMS_attention(ptr) const u32 batch = (ptr)[0], T_q = (ptr)[1], T_kv = (ptr)[2], H = (ptr)[3], q_stride = (ptr)[4], q_off = (ptr)[5], kv_stride = (ptr)[6], k_off = (ptr)[7], v_off = (ptr)[8], out_stride = (ptr)[9]
typedef attention_params attention_direct_params;
#define PARAMS_attention_direct(ptr) PARAMS_attention(ptr)
typedef attention_params attention_q4_params;
#define PARAMS_attention_q4(ptr) PARAMS_attention(ptr)
typedef struct { u32 count, D, T, has_gate, mod_stride, gate_off; } gated_residual_params;
#define PARAMS_gated_residual(ptr) const u32 count = (ptr)[0], D = (ptr)[1], T = (ptr)[2], has_gate = (ptr)[3], mod_stride = (ptr)[4], gate_off = (ptr)[5]
typedef struct { u32 count, C, I, p; } patchify_params;
#define PARAMS_patchify(ptr) const u32 count = (ptr)[0], C = (ptr)[1], I = (ptr)[2], p = (ptr)[3]
typedef patchify_params unpatchify_params;
#define PARAMS_unpatchify(ptr) PARAMS_patchify(ptr)
typedef struct { u32 count, T, D, T_buf; } pos_embed_add_params;
#define PARAMS_pos_embed_add(ptr) const u32 count = (ptr)[0], T = (ptr)[1], D = (ptr)[2], T_buf = (ptr)[3]
typedef struct { u32 count, half; } timestep_embed_params;
#define PARAMS_timestep_embed(ptr) const u32 count = (ptr)[0], half = (ptr)[1]
typedef struct { u32 count, D, rows, levels; } label_embed_params;
#define PARAMS_label_embed(ptr) const u32 count = (ptr)[0], D = (ptr)[1], rows = (ptr)[2], levels = (ptr)[3]
typedef label_embed_params label_embed_q8_params;
#define PARAMS_label_embed_q8(ptr) PARAMS_label_embed(ptr)
typedef struct { u32 count, D, T_dst, tok0; } cond_tokens_params;
#define PARAMS_cond_tokens(ptr) const u32 count = (ptr)[0], D = (ptr)[1], T_dst = (ptr)[2], tok0 = (ptr)[3]
typedef struct { u32 count, stream, use_step; } rng_normal_params;
#define PARAMS_rng_normal(ptr) const u32 count = (ptr)[0], stream = (ptr)[1], use_step = (ptr)[2]
typedef struct { u32 count, P, B; } expand_batch_params;
#define PARAMS_expand_batch(ptr) const u32 count = (ptr)[0], P = (ptr)[1], B = (ptr)[2]
typedef struct { u32 count, C, C_out, P2; } guide_combine_params;
#define PARAMS_guide_combine(ptr) const u32 count = (ptr)[0], C = (ptr)[1], C_out = (ptr)[2], P2 = (ptr)[3]
typedef struct { u32 count, C, P2, learn_sigma; } sampler_step_params;
#define PARAMS_sampler_step(ptr) const u32 count = (ptr)[0], C = (ptr)[1], P2 = (ptr)[2], learn_sigma = (ptr)[3]
typedef struct { u32 blocks, C_in, C_out, C_out4, H, W, has_res; } conv2d_params;
#define PARAMS_conv2d(ptr) const u32 blocks = (ptr)[0], C_in = (ptr)[1], C_out = (ptr)[2], C_out4 = (ptr)[3], H = (ptr)[4], W = (ptr)[5], has_res = (ptr)[6]
typedef conv2d_params conv2d_q8_params;
#define PARAMS_conv2d_q8(ptr) PARAMS_conv2d(ptr)
typedef struct { u32 rows, G, C, HW, eps_bits; } groupnorm_params;
#define PARAMS_groupnorm(ptr) const u32 rows = (ptr)[0], G = (ptr)[1], C = (ptr)[2], HW = (ptr)[3], eps_bits = (ptr)[4]
typedef struct { u32 count, H, W; } upsample_nearest_params;
#define PARAMS_upsample_nearest(ptr) const u32 count = (ptr)[0], H = (ptr)[1], W = (ptr)[2]
typedef struct { u32 batch, M, N, K, a_off, a_sb, a_sm, a_sk, b_off, b_sb, b_sn, b_sk, alpha_bits; } bmm_params;
#define PARAMS_bmm(ptr) const u32 batch = (ptr)[0], M = (ptr)[1], N = (ptr)[2], K = (ptr)[3], a_off = (ptr)[4], a_sb = (ptr)[5], a_sm = (ptr)[6], a_sk = (ptr)[7], b_off = (ptr)[8], b_sb = (ptr)[9], b_sn = (ptr)[10], b_sk = (ptr)[11], alpha_bits = (ptr)[12]
typedef struct { u32 rows, L; } softmax_rows_params;
#define PARAMS_softmax_rows(ptr) const u32 rows = (ptr)[0], L = (ptr)[1]

// the counter-based noise (ditformat/noise.py)
#define NOISE_PCG_MUL 1664525u
#define NOISE_PCG_INC 1013904223u
#define NOISE_RSQRT_MAGIC 0x5F3759DFu
#define NOISE_LN2 0.6931472f
#define NOISE_SQRT2 1.4142135f
#define NOISE_STREAM_INIT 0u
#define NOISE_STREAM_STEP 1u
#define NOISE_STREAM_PERTURB 2u
#define NOISE_LOG1P_TERMS 11
static const f32 NOISE_LOG1P[] = {0.0f, 1.0f, -0.49999976f, 0.3333337f, -0.25002462f, 0.20000857f, -0.16591594f, 0.1418735f, -0.13369992f, 0.12928559f, -0.073820256f};
#define NOISE_COS_Q_TERMS 9
static const f32 NOISE_COS_Q[] = {1.0f, 0.00000013102257f, -1.233704f, 0.000034794986f, 0.25349486f, 0.00048672303f, -0.02164285f, 0.0006913764f, 0.00063896226f};
#define NOISE_SIN_Q_TERMS 9
static const f32 NOISE_SIN_Q[] = {0.0f, 1.5707963f, 0.000003296861f, -0.6460008f, 0.00019882838f, 0.07909309f, 0.0010624186f, -0.005788612f, 0.00063555944f};

#endif

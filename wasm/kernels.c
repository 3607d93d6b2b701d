// kernels.c: the ditweb bundle's ops for WebAssembly SIMD128 (wasm32, one thread).
//
// The twin of wgsl/*.wgsl.j2: one function per op of the manifest's op table, same params (a u32
// array in the manifest's order), same bindings (pointers into linear memory, in binding order; the
// step uniform is a 128-byte record laid out as docs/bundle-format.md says). The step record, each op's
// params and the noise constants come from bundle-layout.h, generated from ditformat/layout.py and
// ditformat/noise.py by `python -m ditformat`: fields and params are read by name, never by position. web/wasm-runtime.js
// interprets the manifest's programs and calls these by op name. No libc: exp, sin/cos and the
// noise come from this file, so every browser computes the same bits.
//
// Weights arrive as f32: the runtime unpacks f16 once at load (f16_to_f32 below) and stores each
// matmul weight transposed, (K, N) instead of torch's (N, K), so the inner loop reads rows of w
// with vector loads and broadcasts one element of a.

#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name))) name

typedef float f32;
typedef uint32_t u32;
typedef int32_t i32;

#include "bundle-layout.h"   // Step, <op>_params, PARAMS_<op>, STEP_FLAG_*, NOISE_*

static inline u32 f2u(f32 x) { union { f32 f; u32 u; } v = { .f = x }; return v.u; }
static inline f32 u2f(u32 x) { union { u32 u; f32 f; } v = { .u = x }; return v.f; }

// ------------------------------------------------------------------ f16 -> f32 (exact)
void EXPORT(f16_to_f32)(const uint16_t *src, f32 *dst, u32 count) {
  for (u32 i = 0; i < count; i++) {
    u32 h = src[i], sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    u32 bits;
    if (e == 0x1Fu) bits = sign | 0x7F800000u | (m << 13);          // inf / nan
    else if (e != 0) bits = sign | ((e + 112u) << 23) | (m << 13);   // normal: rebias 15 -> 127
    else if (m == 0) bits = sign;                                    // +-0
    else {                                                           // subnormal: normalise
      e = 113u;
      while (!(m & 0x400u)) { m <<= 1; e--; }
      bits = sign | (e << 23) | ((m & 0x3FFu) << 13);
    }
    dst[i] = u2f(bits);
  }
}

// (N, K) -> (K, N): the layout the matmul inner loop wants
void EXPORT(transpose)(const f32 *src, f32 *dst, u32 rows, u32 cols) {
  for (u32 r = 0; r < rows; r++)
    for (u32 c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

// ------------------------------------------------------------------ math (no libm in wasm32)
// exp: x = n ln2 + r, |r| <= ln2/2, Cephes single-precision polynomial; ~1 ulp
static inline f32 expf_(f32 x) {
  if (x > 88.72f) return u2f(0x7F800000u);
  if (x < -103.9f) return 0.0f;
  f32 n = __builtin_rintf(x * 1.44269504088896341f);
  f32 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  f32 p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int ni = (int)n;
  // 2^n in two halves so that n down to -149 (subnormal results) stays representable
  int n1 = ni / 2, n2 = ni - n1;
  return p * u2f((u32)(n1 + 127) << 23) * u2f((u32)(n2 + 127) << 23);
}

static inline v128_t exp4(v128_t x) {   // the same formula, four lanes
  // pmin/pmax (one instruction each on x86; min/max's NaN and -0 rules cost several): the same clamp, NaN kept
  x = wasm_f32x4_pmin(wasm_f32x4_pmax(x, wasm_f32x4_splat(-87.0f)), wasm_f32x4_splat(88.0f));
  // n = rint(x log2 e) by the 1.5 2^23 trick: the sum rounds to an integer (ties to even, as rint) and holds n in
  // its low mantissa bits, so 2^n is a shift of those bits: no float -> int conversion (several instructions
  // on x86), the same n and result bits as nearest + trunc_sat
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  v128_t tn = wasm_f32x4_add(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)), magic);
  v128_t n = wasm_f32x4_sub(tn, magic);
  v128_t r = wasm_f32x4_add(wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f))),
                            wasm_f32x4_mul(n, wasm_f32x4_splat(2.12194440e-4f)));
  v128_t p = wasm_f32x4_splat(1.9875691500e-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.3981999507e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(8.3334519073e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(4.1665795894e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.6666665459e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(5.0000001201e-1f));
  p = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, r), r), r), wasm_f32x4_splat(1.0f));
  v128_t e = wasm_i32x4_shl(wasm_i32x4_add(tn, wasm_i32x4_splat(127 - 0x4B400000)), 23);
  return wasm_f32x4_mul(p, e);
}

static inline f32 silu(f32 x) { return x / (1.0f + expf_(-x)); }

static inline v128_t silu4(v128_t x) {
  return wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.0f), exp4(wasm_f32x4_neg(x))));
}

// GELU, tanh form: 0.5 x (1 + tanh u), u = c (x + k x^3), c = sqrt(2/pi), k = 0.044715, rewritten with
// tanh u = 2 sigmoid(2u) - 1 as x sigmoid(2u) = x / (1 + 2^t), t = -2u log2(e) = x (A + B x^2) (A = -2c log2 e,
// B = A k), t clamped to [-100, 128], 2^t by exp2_4 below (t = 128 gives +inf: the result is then x / inf = 0,
// where the true value is below 1e-37 in size). 23 vector operations (the exp-of-|u| form with exp4 took 41).
// Error: t carries 6 roundings (the two constants included), |dt| <= 6 u |t| (u = 2^-24), so 2^t is within
// ln2 6 u |t| + 1.9e-7 relatively; it enters x / (1 + 2^t) weighted by s = 2^t / (1 + 2^t) <= 1, and the add and
// the divide round once each: |gelu~(x) - gelu(x)| <= |gelu(x)| (s (1.9e-7 + 4.2 u |t|) + 2 u) (to first order;
// tests/test_wasm_q8.py holds every output to it, gelu_err_wasm). Unfused in every module (the same bits plain and
// relaxed). The WGSL kernels keep the exp-of-|u| form (the two agree far within the >= 40 dB asked across paths).
#define GELU_A -2.302208198144325f    /* -2 c log2(e), rounded to f32 */
#define GELU_B -0.1029432395800235f   /* -2 c k log2(e) */
#define EXP2_P1 6.9314700365e-01f
#define EXP2_P2 2.4022242427e-01f
#define EXP2_P3 5.5507335812e-02f
#define EXP2_P4 9.6715129912e-03f
#define EXP2_P5 1.3264727313e-03f
// 2^t in four lanes for t in [-100, 128] (both callers clamp to it; NaN stays NaN): n = rint(t) by the 1.5 2^23 trick
// (as exp4), f = t - n in [-1/2, 1/2] (exact), 2^f = p = 1 + f P(f) with P of degree 4 (coefficients EXP2_P*: fitted
// for the least relative error on [-1/2, 1/2], 9.2e-8; evaluated in f32, 1.93e-7 at most over every f32 f there),
// then n added to p's exponent: tn's bits are those of 1.5 2^23 plus n, whose low 22 bits are 0, so tn << 23 is
// n << 23 (n mod 2^9 in the top bits) and one integer add scales p by 2^n exactly: p is in [2^-1/2, 2^1/2], so p 2^n
// is normal for every n here, and +inf at t = 128 (f = 0, p = 1: the bits of 2^128). (It was p times 2^n built as a
// float, one operation more; the same bits except for t in (127.5, 128), where that 2^128 was +inf and p 2^n is now
// the finite value.) 16 operations (exp4: 27).
static inline v128_t exp2_4(v128_t t) {
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  const v128_t tn = wasm_f32x4_add(t, magic);
  const v128_t f = wasm_f32x4_sub(t, wasm_f32x4_sub(tn, magic));
  v128_t p = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_splat(EXP2_P5), f), wasm_f32x4_splat(EXP2_P4));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(EXP2_P3));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(EXP2_P2));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(EXP2_P1));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), wasm_f32x4_splat(1.0f));
  return wasm_i32x4_add(p, wasm_i32x4_shl(tn, 23));
}

static inline v128_t gelu4(v128_t x) {
  v128_t t = wasm_f32x4_mul(x, wasm_f32x4_add(wasm_f32x4_splat(GELU_A), wasm_f32x4_mul(wasm_f32x4_splat(GELU_B),
                                                                                       wasm_f32x4_mul(x, x))));
  t = wasm_f32x4_pmin(wasm_f32x4_pmax(t, wasm_f32x4_splat(-100.0f)), wasm_f32x4_splat(128.0f));
  return wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.0f), exp2_4(t)));
}

// the sum of four lanes in the order every kernel here adds them: (l0 + l1) + (l2 + l3)
static inline f32 hsum4(v128_t v) {
  return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
         (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}

static inline v128_t act4(v128_t v, u32 act) { return act == 1 ? gelu4(v) : act == 2 ? silu4(v) : v; }

static inline f32 gelu_tanh(f32 x) {   // gelu4 in one lane (the same operations, so the same bits)
  return wasm_f32x4_extract_lane(gelu4(wasm_f32x4_splat(x)), 0);
}

// ------------------------------------------------------------------ the counter-based noise
// ditformat/noise.py (the spec, docs/noise.md) and wgsl/_rng.wgsl.j2 bit for bit. wasm has no fused multiply-add for f32 and
// the build passes -ffp-contract=off, so every product below is rounded before the add, as in numpy.
static inline void pcg4d(u32 v[4]) {
  for (int e = 0; e < 4; e++) v[e] = v[e] * NOISE_PCG_MUL + NOISE_PCG_INC;
  v[0] += v[1] * v[3]; v[1] += v[2] * v[0]; v[2] += v[0] * v[1]; v[3] += v[1] * v[2];
  for (int e = 0; e < 4; e++) v[e] ^= v[e] >> 16;
  v[0] += v[1] * v[3]; v[1] += v[2] * v[0]; v[2] += v[0] * v[1]; v[3] += v[1] * v[2];
}

static inline f32 horner(const f32 *c, int n, f32 x) {
  f32 p = c[n - 1];
  for (int k = n - 2; k >= 0; k--) p = p * x + c[k];
  return p;
}

static inline f32 ln_u24(u32 k) {   // ln(k 2^-24), k in [1, 2^24]
  int e = 31 - __builtin_clz(k);
  f32 m = (f32)k * u2f((u32)(127 - e) << 23);                        // in [1, 2), exact
  if (m > NOISE_SQRT2) { m = m * 0.5f; e += 1; }
  return (f32)(e - 24) * NOISE_LN2 + horner(NOISE_LOG1P, NOISE_LOG1P_TERMS, m - 1.0f);
}

static inline f32 sqrt_newton(f32 a) {
  f32 y = u2f(NOISE_RSQRT_MAGIC - (f2u(a) >> 1));
  for (int n = 0; n < 3; n++) y = y * (1.5f - 0.5f * a * y * y);
  return a * y;
}

static inline f32 cos_2pi_u24(u32 j) {
  u32 q = j >> 22;
  f32 r = (f32)(j & 0x3FFFFFu) * 2.384185791015625e-7f;
  f32 c = horner(NOISE_COS_Q, NOISE_COS_Q_TERMS, r), s = horner(NOISE_SIN_Q, NOISE_SIN_Q_TERMS, r);
  return q == 0 ? c : q == 1 ? -s : q == 2 ? -c : s;
}

static inline f32 normal(u32 seed, u32 stream, u32 step_i, u32 index) {
  u32 h[4] = {index, step_i, seed, stream};
  pcg4d(h);
  u32 k = (h[0] >> 8) + 1u, j = h[1] >> 8;
  f32 radius = sqrt_newton(-2.0f * ln_u24(k));
  return radius * cos_2pi_u24(j);
}

// ------------------------------------------------------------------ multiply-add
// acc + x w in four lanes, the inner step of matmul, attention and conv2d. Every module but the relaxed ones
// rounds the product before the add, as the rest of this file does. ditweb-kernels-relaxed.wasm (built with
// -mrelaxed-simd, wasm/build.sh) uses f32x4.relaxed_madd: one rounding where the CPU has fused multiply-add,
// two where it has not (the engine chooses; a module's results may differ in the last bits between machines).
// The noise, the sampler and every other expression stay unfused in all modules (-ffp-contract=off).
// (a macro: the plain modules' code stays as it was before the relaxed ones)
#ifdef __wasm_relaxed_simd__
#define madd4(acc, x, w) wasm_f32x4_relaxed_madd((x), (w), (acc))
#else
#define madd4(acc, x, w) wasm_f32x4_add((acc), wasm_f32x4_mul((x), (w)))
#endif

// ------------------------------------------------------------------ matmul
// dst[row(m), n] = act(in_act(a[m, :]) . w[:, n] + bias[n]), w transposed to (K, N).
// 4 rows x 8 columns of outputs in 8 vector accumulators: per k, 4 broadcasts of a and 2 vector
// loads of w feed 8 vector multiply-adds (16 registers on x86, so nothing spills).
// act: 0 none, 1 gelu, 2 silu; in_act: 0 none, 1 silu (applied to a copy of a, in scratch).
static inline f32 apply_act(f32 v, u32 act) { return act == 1 ? gelu_tanh(v) : act == 2 ? silu(v) : v; }

// The 4 x 8 block of products of rows a0..a3 (K values each, value k at a_r + k * astride) with 8 columns of w (row
// k at w + k * stride), summed in k order in 8 vector accumulators: matmul's inner loop, the attention's scores
// (astride 1) and its P V (the 8 queries' weights of key j interleaved: astride 8).
static inline __attribute__((always_inline)) void dot_4x8(const f32 *a0, const f32 *a1, const f32 *a2, const f32 *a3,
                                                          u32 astride, const f32 *w, u32 stride, u32 K,
                                                          v128_t acc[4][2]) {
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (u32 k = 0; k < K; k++, w += stride) {
    v128_t w0 = wasm_v128_load(w), w1 = wasm_v128_load(w + 4);
    v128_t x0 = wasm_f32x4_splat(a0[k * astride]), x1 = wasm_f32x4_splat(a1[k * astride]);
    v128_t x2 = wasm_f32x4_splat(a2[k * astride]), x3 = wasm_f32x4_splat(a3[k * astride]);
    c00 = madd4(c00, x0, w0); c01 = madd4(c01, x0, w1);
    c10 = madd4(c10, x1, w0); c11 = madd4(c11, x1, w1);
    c20 = madd4(c20, x2, w0); c21 = madd4(c21, x2, w1);
    c30 = madd4(c30, x3, w0); c31 = madd4(c31, x3, w1);
  }
  acc[0][0] = c00; acc[0][1] = c01; acc[1][0] = c10; acc[1][1] = c11;
  acc[2][0] = c20; acc[2][1] = c21; acc[3][0] = c30; acc[3][1] = c31;
}

// Rows [m_lo, m_hi) of the product: a thread's share (threads split M in blocks of 4 rows; every output's sum
// runs in the same order whatever the split, so any number of threads gives the same bits).
static void matmul_rows(const u32 *params, const f32 *a, const f32 *wt, const f32 *bias, f32 *dst,
                        u32 in_act, u32 act, f32 *scratch, u32 m_lo, u32 m_hi) {
  PARAMS_matmul(params);
  (void)M;
  if (in_act == 1) {   // SiLU on the (small) input once, not per output tile; each share its own rows
    for (u32 i = m_lo * K; i < m_hi * K; i++) scratch[i] = silu(a[i]);
    a = scratch;
  }
  for (u32 m = m_lo; m < m_hi; m += 4) {
    const u32 rows = m_hi - m < 4 ? m_hi - m : 4;
    const f32 *a0 = a + m * K, *a1 = a + (m + (rows > 1)) * K, *a2 = a + (m + (rows > 2) * 2) * K,
              *a3 = a + (m + (rows > 3) * 3) * K;   // missing rows re-read row m; their results are dropped
    u32 n = 0;
    for (; n + 8 <= N; n += 8) {
      v128_t acc[4][2];
      dot_4x8(a0, a1, a2, a3, 1, wt + n, N, K, acc);
      v128_t b0 = wasm_v128_load(bias + n), b1 = wasm_v128_load(bias + n + 4);
      for (u32 r = 0; r < rows; r++) {
        u32 mm = m + r;
        f32 *o = dst + ((mm / out_group) * out_stride + mm % out_group) * N + n;
        v128_t v0 = wasm_f32x4_add(acc[r][0], b0), v1 = wasm_f32x4_add(acc[r][1], b1);
        wasm_v128_store(o, act4(v0, act));
        wasm_v128_store(o + 4, act4(v1, act));
      }
    }
    for (; n < N; n++) {   // N % 8 columns, scalar
      const f32 *ar[4] = {a0, a1, a2, a3};
      for (u32 r = 0; r < rows; r++) {
        f32 s = 0;
        for (u32 k = 0; k < K; k++) s += ar[r][k] * wt[k * N + n];
        u32 mm = m + r;
        dst[((mm / out_group) * out_stride + mm % out_group) * N + n] = apply_act(s + bias[n], act);
      }
    }
  }
}

// share `part` of `parts` of `count` items taken in blocks of `block`: [lo, hi)
static inline void share(u32 count, u32 block, u32 part, u32 parts, u32 *lo, u32 *hi) {
  const u32 blocks = (count + block - 1) / block;
  const u32 b0 = (u32)((uint64_t)blocks * part / parts), b1 = (u32)((uint64_t)blocks * (part + 1) / parts);
  *lo = b0 * block < count ? b0 * block : count;
  *hi = b1 * block < count ? b1 * block : count;
}

void EXPORT(op_matmul)(const u32 *params, const f32 *a, const f32 *wt, const f32 *bias, f32 *dst,
                       u32 in_act, u32 act, f32 *scratch) {
  matmul_rows(params, a, wt, bias, dst, in_act, act, scratch, 0, params[0]);
}

// the same, rows of share `part` of `parts` (threads: web/wasm-threads.js)
void EXPORT(op_matmul_part)(const u32 *params, const f32 *a, const f32 *wt, const f32 *bias, f32 *dst,
                            u32 in_act, u32 act, f32 *scratch, u32 part, u32 parts) {
  u32 lo, hi;
  share(params[0], 4, part, parts, &lo, &hi);
  if (lo < hi) matmul_rows(params, a, wt, bias, dst, in_act, act, scratch, lo, hi);
}

// ------------------------------------------------------------------ matmul_q8 (int8 weights)
// dst[row(m), n] = act(scale[n] * (in_act(a[m, :]) . q[n, :]) + bias[n]), as matmul_q8.wgsl.j2: q (N, K) signed
// bytes in torch's layout, kept as int8 in memory (a quarter of the f32 bytes). In integers:
//   each row x = in_act(a[m, :]) is quantised to int16 with its own step s_m = max_k |x_k| / Q:
//     p_k = round(x_k / s_m), |p_k| <= Q, so |x_k - s_m p_k| <= s_m / 2 (plus a few f32 roundings of s_m, 1/s_m
//     and x_k / s_m: under 2^-21 max |x| more);
//   the sum S = sum_k p_k q_k is exact in int32: |S| <= K 127 Q < 2^31 with Q = min(32767, floor((2^31 - 1) / (127 K)));
//   dst = act((f32)S * (s_m scale[n]) + bias[n]): three roundings (S to f32, the factor, the product) and the bias add.
// So the error against the f32 inputs is the quantisation's, |sum_k (x_k - s_m p_k) q_k scale[n]| <=
// (s_m / 2) sum_k |q_k| scale[n], and a few roundings; the sum itself has none, whatever order, so every module
// (plain or relaxed SIMD) and any split into threads gives the same bits.
// The inner loop: i32x4.dot_i16x8_s (x86 pmaddwd) multiplies 8 pairs of int16 and adds neighbours: lane c of
// dot(splat(p_2j, p_2j+1), (q[c][2j], q[c][2j+1]) for 4 columns c) is p_2j q[c][2j] + p_2j+1 q[c][2j+1]: 8
// multiply-adds an instruction (an f32x4 multiply-add does 4). For each block of 8 output columns the K x 8 panel
// of q is widened to int16 once, in k pairs (the panel below), and every block of 4 rows reuses it: 4 x 8 outputs
// in 8 i32x4 accumulators, per pair of k 4 broadcasts of a pair of p and 2 loads of the panel.
// scratch (floats, each part 16-byte aligned): the silu'd rows (M K, when in_act), the int16 rows (M Kp / 2,
// Kp = K rounded up to even), their steps s_m (M), then one panel (8 Kp int16 = 4 Kp floats) per part.
static inline u32 q8_pairs(u32 K) { return (K + 1) & ~1u; }   // Kp: k in pairs, a zero after an odd K
static inline u32 round4(u32 n) { return (n + 3) & ~3u; }

// Where the int16 values of row m go (q8_rows_at): in pairs of k, each pair one int32 slot; pair j of row m in slot
// base + j stride. M <= 2 (the two-row path): row after row (base m Kp / 2, stride 1). Otherwise the rows are
// interleaved by blocks of 4, so that the panel loop reads the 4 rows' pairs at one address and fixed offsets (one
// pointer to advance instead of one per row: V8 gives every wasm address its own register): block b of 4 rows holds
// its pairs j at slots (4 b Kp / 2) + 4 j + r; the last block of t = M % 4 rows (if any) at (4 (M / 4) Kp / 2) + t j + r.
// Either way the rows take M Kp / 2 slots; a block of rows is the same whichever share quantises it (the shares
// split M in blocks of 4).
typedef struct { u32 base, stride; } RowAt;
static inline RowAt q8_rows_at(u32 m, u32 M, u32 Kh) {
  if (M <= 2) return (RowAt){m * Kh, 1};
  const u32 full = M / 4, b = m / 4, r = m % 4;
  return b < full ? (RowAt){4 * b * Kh + r, 4} : (RowAt){4 * full * Kh + r, M - 4 * full};
}

// A 4 x 4 matrix of i32 lanes transposed: out + j stride (int16 units) gets lane j of r[0..3]. The panel's rows of 4 k
// pairs into vectors of one pair (q8_panel), the quantised values of 4 rows into their block's interleave.
static inline void q8_transpose_pairs(const v128_t r[4], int16_t *out, u32 stride) {
  v128_t t0 = wasm_i32x4_shuffle(r[0], r[1], 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r[0], r[1], 2, 6, 3, 7);
  v128_t t2 = wasm_i32x4_shuffle(r[2], r[3], 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(r[2], r[3], 2, 6, 3, 7);
  wasm_v128_store(out, wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5));
  wasm_v128_store(out + stride, wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7));
  wasm_v128_store(out + 2 * stride, wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5));
  wasm_v128_store(out + 3 * stride, wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7));
}

// Row m's step s_m = max_k |x_k| / Q into step[m]; returns 1 / s_m (as Q / max), 0 for an all-zero row. max |x_k| as
// the largest of the bits of |x_k| (i32x4.max_s: for finite |x| the integer order is the float order); bits above
// the largest finite f32's mean an infinity or a NaN in the row: step NaN, 1 / s_m 0.
static inline f32 q8_row_step(const f32 *row, u32 K, f32 Q, f32 *step) {
  const v128_t absmask = wasm_i32x4_splat(0x7FFFFFFF);
  v128_t mx = wasm_i32x4_splat(0), mx1 = mx;
  u32 k = 0;
  for (; k + 8 <= K; k += 8) {
    mx = wasm_i32x4_max(mx, wasm_v128_and(wasm_v128_load(row + k), absmask));
    mx1 = wasm_i32x4_max(mx1, wasm_v128_and(wasm_v128_load(row + k + 4), absmask));
  }
  if (k + 4 <= K) { mx = wasm_i32x4_max(mx, wasm_v128_and(wasm_v128_load(row + k), absmask)); k += 4; }
  i32 l[4];
  wasm_v128_store(l, wasm_i32x4_max(mx, mx1));
  i32 bits = l[0] > l[1] ? l[0] : l[1], t = l[2] > l[3] ? l[2] : l[3];
  bits = bits > t ? bits : t;
  for (; k < K; k++) { const i32 v = (i32)(f2u(row[k]) & 0x7FFFFFFFu); bits = v > bits ? v : bits; }
  if (bits > 0x7F7FFFFF) { *step = u2f(0x7FC00000u); return 0; }
  const f32 amax = u2f((u32)bits);
  *step = amax / Q;
  return amax > 0 ? Q / amax : 0;
}

// 8 values of a row quantised (x_k / s_m rounded, as int32 lanes) and narrowed to int16: 4 pairs in i32 lanes
static inline v128_t q8_round8(const f32 *x, v128_t vi) {
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  v128_t p0 = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x), vi), magic), magic);
  v128_t p1 = wasm_i32x4_sub(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x + 4), vi), magic), magic);
  return wasm_i16x8_narrow_i32x4(p0, p1);   // |p| <= Q: the narrowing never saturates
}

// rows [lo, hi) of x (K floats each) to int16 rows of Kp (zero padded; laid out by q8_rows_at) and their steps s_m.
// Rounding to the nearest integer by the 1.5 2^23 trick (as exp4): |x_k / s_m| <= Q < 2^22, so the f32 sum
// x_k / s_m + 1.5 2^23 rounds to an integer (ties to even) held in its low mantissa bits, read back by an integer
// subtraction of the constant's bits. A row with a NaN or an infinity gets the step NaN (its outputs are NaN, as
// torch's would be non-finite); an all-zero row the step 0 (its outputs are the bias). A whole block of 4 rows goes
// 8 k at a time: each row's 4 pairs, then the 4 x 4 pairs transposed into the block's interleave; other rows (the
// last block of M % 4, M <= 2's rows, the K % 8 rest) a pair at a time.
static void q8_quantize_rows(const f32 *x, int16_t *xq, f32 *step, u32 K, u32 M, u32 lo, u32 hi) {
  const u32 Kp = q8_pairs(K), qk = 2147483647u / (127u * K), K8 = K & ~7u;
  const f32 Q = (f32)(qk < 32767u ? qk : 32767u);
  for (u32 m = lo; m < hi;) {
    const RowAt at = q8_rows_at(m, M, Kp / 2);
    const u32 rows = at.stride == 4 ? 4 : 1;   // a whole block of 4 (lo and hi split M at multiples of 4), or one row
    f32 inv[4];
    for (u32 r = 0; r < rows; r++) inv[r] = q8_row_step(x + (m + r) * K, K, Q, step + m + r);
    u32 k = 0;
    if (rows == 4) {
      const f32 *row = x + m * K;
      const v128_t i0 = wasm_f32x4_splat(inv[0]), i1 = wasm_f32x4_splat(inv[1]), i2 = wasm_f32x4_splat(inv[2]),
                   i3 = wasm_f32x4_splat(inv[3]);
      for (; k < K8; k += 8) {
        const v128_t v[4] = {q8_round8(row + k, i0), q8_round8(row + K + k, i1), q8_round8(row + 2 * K + k, i2),
                             q8_round8(row + 3 * K + k, i3)};
        q8_transpose_pairs(v, xq + 2 * (at.base + 2 * k), 8);   // pairs k/2 .. k/2 + 3 of the 4 rows
      }
    }
    for (u32 r = 0; r < rows; r++) {
      const f32 *row = x + (m + r) * K;
      const RowAt ra = q8_rows_at(m + r, M, Kp / 2);
      i32 *o = (i32 *)xq + ra.base;   // pair j at o[j * ra.stride]
      u32 kk = k;
      if (ra.stride == 1)
        for (; kk < K8; kk += 8) wasm_v128_store(o + kk / 2, q8_round8(row + kk, wasm_f32x4_splat(inv[r])));
      for (; kk + 8 <= K; kk += 8) {
        const v128_t v = q8_round8(row + kk, wasm_f32x4_splat(inv[r]));
        i32 *op = o + (kk / 2) * ra.stride;
        wasm_v128_store32_lane(op, v, 0);
        wasm_v128_store32_lane(op + ra.stride, v, 1);
        wasm_v128_store32_lane(op + 2 * ra.stride, v, 2);
        wasm_v128_store32_lane(op + 3 * ra.stride, v, 3);
      }
      for (; kk < Kp; kk++)
        ((int16_t *)(o + (kk / 2) * ra.stride))[kk & 1] =
            kk < K ? (int16_t)(i32)(f2u(row[kk] * inv[r] + 12582912.0f) - 0x4B400000u) : 0;
    }
    m += rows;
  }
}

// The panel of columns n..n+7: per pair of k (j), 16 int16: (q[n+c][2j], q[n+c][2j+1]) for c = 0..7, i.e. two
// vectors of 4 columns whose i32 lanes are k pairs. 8 k of each column at a time: sign-extended to int16 (a row of 4
// k pairs), then 4 such rows transposed as a 4 x 4 matrix of i32 lanes into 4 vectors of one k pair each.
static inline void q8_panel(const int8_t *wq, int16_t *panel, u32 n, u32 cols, u32 K) {
  const int8_t *col[8];
  for (u32 c = 0; c < 8; c++) col[c] = wq + (n + (c < cols ? c : 0)) * K;   // missing columns re-read column n; dropped later
  u32 k = 0;
  for (; k + 8 <= K; k += 8) {
    v128_t r[8];
    for (u32 c = 0; c < 8; c++) r[c] = wasm_i16x8_load8x8(col[c] + k);
    q8_transpose_pairs(r, panel + k * 8, 16);          // columns 0..3 of pairs k/2 .. k/2 + 3
    q8_transpose_pairs(r + 4, panel + k * 8 + 8, 16);  // columns 4..7
  }
  for (; k < q8_pairs(K); k++)
    for (u32 c = 0; c < 8; c++) panel[(k >> 1) * 16 + c * 2 + (k & 1)] = k < K ? col[c][k] : 0;
}

// The epilogue of rows m.. (rows of them) at columns n..n+cols-1 (cols <= 8) from their int32 sums acc[r][h] (lane c of
// half h: column n + 4h + c): act(S (s_m scale[n]) + bias[n]); a full block of 8 columns in vectors, the N % 8 rest one
// lane at a time (the same expressions)
static __attribute__((noinline)) void q8_store(const v128_t acc[][2], u32 rows, u32 m, u32 n, u32 cols, u32 N,
                                               u32 out_group, u32 out_stride, const f32 *step, const f32 *scale,
                                               const f32 *bias, f32 *dst, u32 act) {
  for (u32 r = 0; r < rows; r++) {
    const u32 mm = m + r;
    f32 *o = dst + ((mm / out_group) * out_stride + mm % out_group) * N + n;
    if (cols == 8) {
      const v128_t s = wasm_f32x4_splat(step[mm]);
      const v128_t f0 = wasm_f32x4_mul(s, wasm_v128_load(scale + n)), f1 = wasm_f32x4_mul(s, wasm_v128_load(scale + n + 4));
      v128_t v0 = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[r][0]), f0), wasm_v128_load(bias + n));
      v128_t v1 = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[r][1]), f1), wasm_v128_load(bias + n + 4));
      wasm_v128_store(o, act4(v0, act));
      wasm_v128_store(o + 4, act4(v1, act));
    } else {   // N % 8 columns: the same expressions, one lane at a time
      i32 l[8];
      wasm_v128_store(l, acc[r][0]);
      wasm_v128_store(l + 4, acc[r][1]);
      for (u32 c = 0; c < cols; c++) o[c] = apply_act((f32)l[c] * (step[mm] * scale[n + c]) + bias[n + c], act);
    }
  }
}

// lane c: the sum of the four lanes of v[c] (exact: int32, no overflow by Q's choice)
static inline v128_t q8_hsum4x4(v128_t v0, v128_t v1, v128_t v2, v128_t v3) {
  const v128_t s01 = wasm_i32x4_add(wasm_i32x4_shuffle(v0, v1, 0, 4, 1, 5), wasm_i32x4_shuffle(v0, v1, 2, 6, 3, 7));
  const v128_t s23 = wasm_i32x4_add(wasm_i32x4_shuffle(v2, v3, 0, 4, 1, 5), wasm_i32x4_shuffle(v2, v3, 2, 6, 3, 7));
  return wasm_i32x4_add(wasm_i32x4_shuffle(s01, s23, 0, 1, 4, 5), wasm_i32x4_shuffle(s01, s23, 2, 3, 6, 7));
}

// One or two rows (the adaLN and timestep matmuls: M = the batch's rows): the sums straight from q in torch's layout,
// no panel (widening and transposing K x 8 weights for two rows cost as much as their products). Per 16 k of a column:
// one load, sign-extended into two halves, two i32x4.dot_i16x8 per row against the row's int16 values; 4 columns in
// 8 i32x4 accumulators (lane j: the k = j mod 4 pairs), their lanes summed at the end (exact in int32: the same sums as
// the panel path, whatever order), the K % 16 rest one k at a time. The epilogue is q8_store's, as the panel path's.
static void matmul_q8_two_rows(const int16_t *xq, const f32 *step, const int8_t *wq, const f32 *scale, const f32 *bias,
                               f32 *dst, u32 act, u32 N, u32 K, u32 out_group, u32 out_stride, u32 m, u32 rows,
                               u32 n_lo, u32 n_hi) {
  const u32 Kp = q8_pairs(K), K16 = K & ~15u;
  const int16_t *x0 = xq + m * Kp, *x1 = xq + (m + (rows > 1)) * Kp;   // one row: row m twice, the second dropped
  const v128_t zero = wasm_i32x4_splat(0);
  for (u32 n = n_lo; n < n_hi; n += 8) {
    const u32 cols = N - n < 8 ? N - n : 8;
    v128_t acc[2][2];
    for (u32 h = 0; h < 2; h++) {
      const int8_t *q[4];
      for (u32 c = 0; c < 4; c++) q[c] = wq + (n + (4 * h + c < cols ? 4 * h + c : 0)) * K;   // missing: column n again
      v128_t a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero;
      for (u32 k = 0; k < K16; k += 16) {
        const v128_t xl0 = wasm_v128_load(x0 + k), xh0 = wasm_v128_load(x0 + k + 8);
        const v128_t xl1 = wasm_v128_load(x1 + k), xh1 = wasm_v128_load(x1 + k + 8);
#define Q8_COLUMN(c, A, B)                                                                                        \
        {                                                                                                        \
          const v128_t w = wasm_v128_load(q[c] + k);                                                             \
          const v128_t wl = wasm_i16x8_extend_low_i8x16(w), wh = wasm_i16x8_extend_high_i8x16(w);                \
          A = wasm_i32x4_add(A, wasm_i32x4_add(wasm_i32x4_dot_i16x8(xl0, wl), wasm_i32x4_dot_i16x8(xh0, wh)));   \
          B = wasm_i32x4_add(B, wasm_i32x4_add(wasm_i32x4_dot_i16x8(xl1, wl), wasm_i32x4_dot_i16x8(xh1, wh)));   \
        }
        Q8_COLUMN(0, a0, b0) Q8_COLUMN(1, a1, b1) Q8_COLUMN(2, a2, b2) Q8_COLUMN(3, a3, b3)
#undef Q8_COLUMN
      }
      i32 t0[4] = {0, 0, 0, 0}, t1[4] = {0, 0, 0, 0};
      for (u32 k = K16; k < K; k++)
        for (u32 c = 0; c < 4; c++) { t0[c] += (i32)x0[k] * q[c][k]; t1[c] += (i32)x1[k] * q[c][k]; }
      acc[0][h] = wasm_i32x4_add(q8_hsum4x4(a0, a1, a2, a3), wasm_v128_load(t0));
      acc[1][h] = wasm_i32x4_add(q8_hsum4x4(b0, b1, b2, b3), wasm_v128_load(t1));
    }
    q8_store(acc, rows, m, n, cols, N, out_group, out_stride, step, scale, bias, dst, act);
  }
}

// The 4 x 8 int32 sums of a block of rows with the panel: the rows' pairs j at p[j S], p[j S + o1], p[j S + o2],
// p[j S + o3] (q8_rows_at: S = 4 and offsets 1, 2, 3 for a block of 4, constants here, so that one pointer advances;
// the last block of t rows: S = t, a missing row's offset that of row 0, its results dropped), the panel's pair j at
// w + 16 j: per pair 4 broadcasts of a pair of p and 2 loads of the panel feed 8 i32x4.dot_i16x8 and adds
static inline __attribute__((always_inline)) void q8_dot_4x8(const i32 *p, u32 o1, u32 o2, u32 o3, u32 S,
                                                             const int16_t *w, u32 Kh, v128_t acc[4][2]) {
  v128_t c00 = wasm_i32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (u32 j = 0; j < Kh; j++, p += S, w += 16) {
    v128_t w0 = wasm_v128_load(w), w1 = wasm_v128_load(w + 8);   // columns 0..3, 4..7 at the pair j
    v128_t p0 = wasm_v128_load32_splat(p), p1 = wasm_v128_load32_splat(p + o1);
    v128_t p2 = wasm_v128_load32_splat(p + o2), p3 = wasm_v128_load32_splat(p + o3);
    c00 = wasm_i32x4_add(c00, wasm_i32x4_dot_i16x8(p0, w0)); c01 = wasm_i32x4_add(c01, wasm_i32x4_dot_i16x8(p0, w1));
    c10 = wasm_i32x4_add(c10, wasm_i32x4_dot_i16x8(p1, w0)); c11 = wasm_i32x4_add(c11, wasm_i32x4_dot_i16x8(p1, w1));
    c20 = wasm_i32x4_add(c20, wasm_i32x4_dot_i16x8(p2, w0)); c21 = wasm_i32x4_add(c21, wasm_i32x4_dot_i16x8(p2, w1));
    c30 = wasm_i32x4_add(c30, wasm_i32x4_dot_i16x8(p3, w0)); c31 = wasm_i32x4_add(c31, wasm_i32x4_dot_i16x8(p3, w1));
  }
  acc[0][0] = c00; acc[0][1] = c01; acc[1][0] = c10; acc[1][1] = c11;
  acc[2][0] = c20; acc[2][1] = c21; acc[3][0] = c30; acc[3][1] = c31;
}

// rows [m_lo, m_hi), columns [n_lo, n_hi) of the product (a thread's share; the single-thread call passes 0, M and
// 0, N), from the int16 rows xq (laid out by q8_rows_at)
static void matmul_q8_rows(const u32 *params, const int16_t *xq, const f32 *step, const int8_t *wq, const f32 *scale,
                           const f32 *bias, f32 *dst, u32 act, int16_t *panel, u32 m_lo, u32 m_hi, u32 n_lo, u32 n_hi) {
  PARAMS_matmul_q8(params);
  const u32 Kh = q8_pairs(K) / 2;
  if (M <= 2) {
    matmul_q8_two_rows(xq, step, wq, scale, bias, dst, act, N, K, out_group, out_stride, m_lo, m_hi - m_lo, n_lo, n_hi);
    return;
  }
  for (u32 n = n_lo; n < n_hi; n += 8) {
    const u32 cols = N - n < 8 ? N - n : 8;
    q8_panel(wq, panel, n, cols, K);
    for (u32 m = m_lo; m < m_hi; m += 4) {
      const u32 rows = m_hi - m < 4 ? m_hi - m : 4;   // 4, or the last block's M % 4
      const i32 *p = (const i32 *)xq + q8_rows_at(m, M, Kh).base;
      v128_t acc[4][2];
      if (rows == 4) q8_dot_4x8(p, 1, 2, 3, 4, panel, Kh, acc);
      else q8_dot_4x8(p, rows > 1, (rows > 2) * 2, 0, rows, panel, Kh, acc);
      q8_store(acc, rows, m, n, cols, N, out_group, out_stride, step, scale, bias, dst, act);
    }
  }
}

// Whether a split into `parts` shares goes by blocks of 8 output columns instead of blocks of 4 rows: when there are
// fewer row blocks than parts (the adaLN and timestep matmuls: M = the batch's rows), so that every thread has work.
// Each column share then quantises every row itself, into its own copy of the rows' area (web/wasm-runtime.js sizes
// the scratch by the same rule); a row's quantisation and each output's sum are the same whichever share computes them.
static inline u32 q8_split_columns(u32 M, u32 parts) { return parts > 1 && (M + 3) / 4 < parts; }

// the share `part` of `parts` (blocks of 4 rows, or of 8 columns: q8_split_columns): SiLU on its rows when in_act,
// its rows quantised, then its outputs; the scratch layout above, the rows' area once per part when split by columns
static void matmul_q8_part(const u32 *params, const f32 *a, const int8_t *wq, const f32 *scale, const f32 *bias,
                           f32 *dst, u32 in_act, u32 act, f32 *scratch, u32 part, u32 parts) {
  PARAMS_matmul_q8(params);
  (void)out_group; (void)out_stride;
  const u32 Kp = q8_pairs(K), by_columns = q8_split_columns(M, parts);
  const u32 rows_area = (in_act == 1 ? round4(M * K) : 0) + round4(M * Kp / 2) + round4(M);
  int16_t *panel = (int16_t *)(scratch + (by_columns ? parts : 1) * rows_area) + part * 8 * Kp;
  u32 lo = 0, hi = M, n_lo = 0, n_hi = N;
  if (by_columns) {
    share(N, 8, part, parts, &n_lo, &n_hi);
    if (n_lo >= n_hi) return;
    scratch += part * rows_area;
  } else {
    share(M, 4, part, parts, &lo, &hi);
    if (lo >= hi) return;
  }
  if (in_act == 1) {
    for (u32 i = lo * K; i < hi * K; i++) scratch[i] = silu(a[i]);
    a = scratch;
    scratch += round4(M * K);
  }
  int16_t *xq = (int16_t *)scratch;
  f32 *step = scratch + round4(M * Kp / 2);
  q8_quantize_rows(a, xq, step, K, M, lo, hi);
  matmul_q8_rows(params, xq, step, wq, scale, bias, dst, act, panel, lo, hi, n_lo, n_hi);
}

void EXPORT(op_matmul_q8)(const u32 *params, const f32 *a, const int8_t *wq, const f32 *scale, const f32 *bias,
                          f32 *dst, u32 in_act, u32 act, f32 *scratch) {
  matmul_q8_part(params, a, wq, scale, bias, dst, in_act, act, scratch, 0, 1);
}

void EXPORT(op_matmul_q8_part)(const u32 *params, const f32 *a, const int8_t *wq, const f32 *scale, const f32 *bias,
                               f32 *dst, u32 in_act, u32 act, f32 *scratch, u32 part, u32 parts) {
  matmul_q8_part(params, a, wq, scale, bias, dst, in_act, act, scratch, part, parts);
}

// ------------------------------------------------------------------ layernorm + modulation
void EXPORT(op_layernorm_mod)(const u32 *params, const f32 *x, const f32 *ada, f32 *dst) {
  PARAMS_layernorm_mod(params);
  for (u32 r = 0; r < rows; r++) {
    const u32 b = r / T;
    const f32 *xr = x + (b * T_in + r % T) * D;
    // both sums in 4 lanes (lane j: the d = j mod 4 terms), then (l0 + l1) + (l2 + l3), then the D mod 4 rest:
    // chains of D / 4 + 3 roundings (layernorm_rows' order; the serial sum's D - 1 is what the bound allows).
    // D a multiple of 16 (every shipped model): four vectors, lane j of vector i summing the d = 4i + j mod 16 terms,
    // added (v0 + v1) + (v2 + v3) before the lanes: chains of D / 16 + 4 roundings, four of them independent (one
    // chain of D / 4 adds waited on each add's latency)
    const u32 D4 = D & ~3u;
    v128_t sv = wasm_f32x4_splat(0);
    u32 d0 = 0;
    if (D % 16 == 0) {
      v128_t s1 = sv, s2 = sv, s3 = sv;
      for (; d0 < D; d0 += 16) {
        sv = wasm_f32x4_add(sv, wasm_v128_load(xr + d0)); s1 = wasm_f32x4_add(s1, wasm_v128_load(xr + d0 + 4));
        s2 = wasm_f32x4_add(s2, wasm_v128_load(xr + d0 + 8)); s3 = wasm_f32x4_add(s3, wasm_v128_load(xr + d0 + 12));
      }
      sv = wasm_f32x4_add(wasm_f32x4_add(sv, s1), wasm_f32x4_add(s2, s3));
    }
    for (u32 d = d0; d < D4; d += 4) sv = wasm_f32x4_add(sv, wasm_v128_load(xr + d));
    f32 s = hsum4(sv);
    for (u32 d = D4; d < D; d++) s += xr[d];
    const f32 mean = s / (f32)D;
    const v128_t mv = wasm_f32x4_splat(mean);
    v128_t vv = wasm_f32x4_splat(0);
    if (D % 16 == 0) {
      v128_t v1 = vv, v2 = vv, v3 = vv;
      for (u32 d = 0; d < D; d += 16) {
        const v128_t c0 = wasm_f32x4_sub(wasm_v128_load(xr + d), mv), c1 = wasm_f32x4_sub(wasm_v128_load(xr + d + 4), mv);
        const v128_t c2 = wasm_f32x4_sub(wasm_v128_load(xr + d + 8), mv), c3 = wasm_f32x4_sub(wasm_v128_load(xr + d + 12), mv);
        vv = wasm_f32x4_add(vv, wasm_f32x4_mul(c0, c0)); v1 = wasm_f32x4_add(v1, wasm_f32x4_mul(c1, c1));
        v2 = wasm_f32x4_add(v2, wasm_f32x4_mul(c2, c2)); v3 = wasm_f32x4_add(v3, wasm_f32x4_mul(c3, c3));
      }
      vv = wasm_f32x4_add(wasm_f32x4_add(vv, v1), wasm_f32x4_add(v2, v3));
    }
    for (u32 d = d0; d < D4; d += 4) {
      const v128_t c = wasm_f32x4_sub(wasm_v128_load(xr + d), mv);
      vv = wasm_f32x4_add(vv, wasm_f32x4_mul(c, c));
    }
    f32 v = hsum4(vv);
    for (u32 d = D4; d < D; d++) { f32 c = xr[d] - mean; v += c * c; }
    const f32 rstd = 1.0f / __builtin_sqrtf(v / (f32)D + 1e-6f);
    const f32 *shift = ada + b * mod_stride + shift_off, *scale = ada + b * mod_stride + scale_off;
    f32 *o = dst + r * D;
    const v128_t rv = wasm_f32x4_splat(rstd), one = wasm_f32x4_splat(1.0f);
    u32 d = 0;
    for (; d < D4; d += 4) {
      v128_t y = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xr + d), mv), rv);
      if (has_mod == 1) y = wasm_f32x4_add(wasm_f32x4_mul(y, wasm_f32x4_add(one, wasm_v128_load(scale + d))), wasm_v128_load(shift + d));
      wasm_v128_store(o + d, y);
    }
    for (; d < D; d++) {
      f32 y = (xr[d] - mean) * rstd;
      if (has_mod == 1) y = y * (1.0f + scale[d]) + shift[d];
      o[d] = y;
    }
  }
}

// ------------------------------------------------------------------ attention
// softmax(q k^T / sqrt(HD)) v per (batch, head, query). Keys are taken 256 at a time with the running
// max / sum rescale of the WGSL kernel (online softmax), so any T_kv works in fixed scratch.
// Head dims 32 and 64 (HD / 4 = 8 or 16 vectors) get a copy with q and the accumulator in registers.
#define KEYS 256

typedef attention_params AttnParams;

// r_lo..r_hi: a range of the batch H T_q (b, h, i) rows (a thread's share), each computed alone
static inline __attribute__((always_inline)) void attention_vec(const AttnParams *A, const f32 *q, const f32 *kv,
                                                                  f32 *dst, const u32 HDV, u32 r_lo, u32 r_hi) {
  const u32 HD = 4 * HDV;
  const f32 scale = 1.0f / __builtin_sqrtf((f32)HD);
  f32 s[KEYS];
  for (u32 r = r_lo; r < r_hi; r++) {
        const u32 i = r % A->T_q, h = (r / A->T_q) % A->H, b = r / (A->T_q * A->H);
        const f32 *qr = q + (b * A->T_q + i) * A->q_stride + A->q_off + h * HD;
        v128_t qv[16], acc[16];
        for (u32 d = 0; d < HDV; d++) {
          qv[d] = wasm_f32x4_mul(wasm_v128_load(qr + 4 * d), wasm_f32x4_splat(scale));
          acc[d] = wasm_f32x4_splat(0);
        }
        f32 m = -3.0e38f, l = 0;
        for (u32 j0 = 0; j0 < A->T_kv; j0 += KEYS) {
          const u32 n = A->T_kv - j0 < KEYS ? A->T_kv - j0 : KEYS;
          const f32 *kbase = kv + (b * A->T_kv + j0) * A->kv_stride + A->k_off + h * HD;
          const f32 *vbase = kv + (b * A->T_kv + j0) * A->kv_stride + A->v_off + h * HD;
          f32 m_new = m;
          u32 jj = 0;
          // four keys at a time: their lane sums transposed into one vector, each (l0 + l1) + (l2 + l3) as the
          // one-key loop below adds them; the running maximum lane-wise (pmax: a < b ? b : a, the scalar test)
          v128_t mv = wasm_f32x4_splat(m_new);
          for (; jj + 4 <= n; jj += 4) {
            const f32 *k0 = kbase + jj * A->kv_stride, *k1 = k0 + A->kv_stride, *k2 = k1 + A->kv_stride,
                      *k3 = k2 + A->kv_stride;
            v128_t d0 = wasm_f32x4_mul(qv[0], wasm_v128_load(k0)), d1 = wasm_f32x4_mul(qv[0], wasm_v128_load(k1));
            v128_t d2 = wasm_f32x4_mul(qv[0], wasm_v128_load(k2)), d3 = wasm_f32x4_mul(qv[0], wasm_v128_load(k3));
            for (u32 d = 1; d < HDV; d++) {
              d0 = madd4(d0, qv[d], wasm_v128_load(k0 + 4 * d));
              d1 = madd4(d1, qv[d], wasm_v128_load(k1 + 4 * d));
              d2 = madd4(d2, qv[d], wasm_v128_load(k2 + 4 * d));
              d3 = madd4(d3, qv[d], wasm_v128_load(k3 + 4 * d));
            }
            const v128_t p01 = wasm_f32x4_add(wasm_i32x4_shuffle(d0, d1, 0, 2, 4, 6), wasm_i32x4_shuffle(d0, d1, 1, 3, 5, 7));
            const v128_t p23 = wasm_f32x4_add(wasm_i32x4_shuffle(d2, d3, 0, 2, 4, 6), wasm_i32x4_shuffle(d2, d3, 1, 3, 5, 7));
            const v128_t dots = wasm_f32x4_add(wasm_i32x4_shuffle(p01, p23, 0, 2, 4, 6),
                                               wasm_i32x4_shuffle(p01, p23, 1, 3, 5, 7));
            wasm_v128_store(s + jj, dots);
            mv = wasm_f32x4_pmax(mv, dots);
          }
          f32 lanes[4];
          wasm_v128_store(lanes, mv);
          for (u32 lane = 0; lane < 4; lane++) if (lanes[lane] > m_new) m_new = lanes[lane];
          for (; jj < n; jj++) {
            const f32 *kr = kbase + jj * A->kv_stride;
            v128_t dv = wasm_f32x4_mul(qv[0], wasm_v128_load(kr));
            for (u32 d = 1; d < HDV; d++) dv = madd4(dv, qv[d], wasm_v128_load(kr + 4 * d));
            const f32 dot = hsum4(dv);
            s[jj] = dot;
            if (dot > m_new) m_new = dot;
          }
          const v128_t corr = wasm_f32x4_splat(expf_(m - m_new));
          l *= wasm_f32x4_extract_lane(corr, 0);
          for (u32 d = 0; d < HDV; d++) acc[d] = wasm_f32x4_mul(acc[d], corr);
          for (u32 jj = 0; jj < n; jj += 4) wasm_v128_store(s + jj, exp4(wasm_f32x4_sub(wasm_v128_load(s + jj), wasm_f32x4_splat(m_new))));
          for (u32 jj = 0; jj < n; jj++) {
            const f32 pj = s[jj];
            l += pj;
            const v128_t pv = wasm_f32x4_splat(pj);
            const f32 *vr = vbase + jj * A->kv_stride;
            for (u32 d = 0; d < HDV; d++) acc[d] = madd4(acc[d], pv, wasm_v128_load(vr + 4 * d));
          }
          m = m_new;
        }
        f32 *o = dst + (b * A->T_q + i) * A->out_stride + h * HD;
        const v128_t inv_l = wasm_f32x4_splat(1.0f / l);
        for (u32 d = 0; d < HDV; d++) wasm_v128_store(o + 4 * d, wasm_f32x4_mul(acc[d], inv_l));
      }
}

// The blocked path (head dims a multiple of 8 up to 64, T_kv up to ATT_KEYS, rows aligned to 4 floats: every
// shipped model): 8 queries of one (batch, head) at a time, the two products as register-blocked small matmuls.
//   qt = (q c)^T (HD x 8, a copy; c = fl(log2(e) / sqrt(HD)): the scores in log2 units), then S^T = K qt: 4 keys x
//     8 queries per block, per d 4 broadcasts of k[j][d] and 2 vector loads of qt[d] feed 8 multiply-adds (dot_4x8,
//     as matmul), each score summed over d in order;
//   the softmax down the columns of S^T (one lane per query, nothing horizontal): m = max_j s_j,
//     p_j = 2^max(s_j - m, -100) (exp2_4: 1.9e-7 relative; the floor keeps products with p normal and moves a weight
//     by at most 2^-100 where the largest is 1), l = sum_j p_j in j order;
//   o = P V: 4 queries x 8 dims per block, per key 4 broadcasts of p_j and 2 vector loads of v[j] feed 8
//     multiply-adds (dot_4x8 again, the weights read 8 apart), summed in j order; o / l as o * (1 / l).
// Every query's arithmetic is its own lane's and the same whichever 8 it is computed with (a missing query re-reads
// one that exists; its results are dropped), so any split into threads gives the same bits. Against the online
// path above (T_kv > ATT_KEYS or other head dims): one key block, sums in other orders, exp2_4 for exp.
#define ATT_KEYS 512

static void attention_blocked(const AttnParams *A, const f32 *q, const f32 *kv, f32 *dst, u32 HD, u32 r_lo, u32 r_hi) {
  const f32 scale = 1.0f / __builtin_sqrtf((f32)HD) * 1.44269504088896341f;   // scores in log2 units
  const v128_t vscale = wasm_f32x4_splat(scale);
  const u32 T = A->T_kv, ks = A->kv_stride;
  f32 qt[64 * 8] __attribute__((aligned(16)));         // qt[d * 8 + c]: query c's d-th value times scale log2(e)
  f32 st[ATT_KEYS * 8] __attribute__((aligned(16)));   // st[j * 8 + c]: query c's score of key j, then its p_j
  for (u32 r = r_lo; r < r_hi;) {
    const u32 i0 = r % A->T_q, bh = r / A->T_q, h = bh % A->H, b = bh / A->H;
    u32 nq = A->T_q - i0;
    if (nq > r_hi - r) nq = r_hi - r;
    if (nq > 8) nq = 8;
    // qt: 4 queries x 4 dims at a time, scaled, then transposed (each value the same one product as one at a time)
    for (u32 c0 = 0; c0 < 8; c0 += 4) {
      const f32 *qr[4];
      for (u32 c = 0; c < 4; c++)
        qr[c] = q + (b * A->T_q + i0 + (c0 + c < nq ? c0 + c : 0)) * A->q_stride + A->q_off + h * HD;
      for (u32 d = 0; d < HD; d += 4) {
        v128_t v[4];
        for (u32 c = 0; c < 4; c++) v[c] = wasm_f32x4_mul(wasm_v128_load(qr[c] + d), vscale);
        const v128_t t0 = wasm_i32x4_shuffle(v[0], v[1], 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(v[0], v[1], 2, 6, 3, 7);
        const v128_t t2 = wasm_i32x4_shuffle(v[2], v[3], 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(v[2], v[3], 2, 6, 3, 7);
        wasm_v128_store(qt + d * 8 + c0, wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5));
        wasm_v128_store(qt + (d + 1) * 8 + c0, wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7));
        wasm_v128_store(qt + (d + 2) * 8 + c0, wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5));
        wasm_v128_store(qt + (d + 3) * 8 + c0, wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7));
      }
    }
    const f32 *kb = kv + b * T * ks + A->k_off + h * HD, *vb = kv + b * T * ks + A->v_off + h * HD;
    v128_t m0 = wasm_f32x4_splat(-3.0e38f), m1 = m0;
    for (u32 j = 0; j < T; j += 4) {
      const u32 nk = T - j < 4 ? T - j : 4;
      const f32 *k0 = kb + j * ks;
      v128_t acc[4][2];
      dot_4x8(k0, k0 + (nk > 1) * ks, k0 + (nk > 2) * 2 * ks, k0 + (nk > 3) * 3 * ks, 1, qt, 8, HD, acc);
      for (u32 e = 0; e < nk; e++) {
        wasm_v128_store(st + (j + e) * 8, acc[e][0]);
        wasm_v128_store(st + (j + e) * 8 + 4, acc[e][1]);
        m0 = wasm_f32x4_pmax(m0, acc[e][0]);
        m1 = wasm_f32x4_pmax(m1, acc[e][1]);
      }
    }
    v128_t l0 = wasm_f32x4_splat(0), l1 = l0;
    const v128_t lo = wasm_f32x4_splat(-100.0f);
    for (u32 j = 0; j < T; j++) {
      const v128_t p0 = exp2_4(wasm_f32x4_pmax(wasm_f32x4_sub(wasm_v128_load(st + j * 8), m0), lo));
      const v128_t p1 = exp2_4(wasm_f32x4_pmax(wasm_f32x4_sub(wasm_v128_load(st + j * 8 + 4), m1), lo));
      wasm_v128_store(st + j * 8, p0);
      wasm_v128_store(st + j * 8 + 4, p1);
      l0 = wasm_f32x4_add(l0, p0);
      l1 = wasm_f32x4_add(l1, p1);
    }
    f32 inv[8];
    wasm_v128_store(inv, wasm_f32x4_div(wasm_f32x4_splat(1.0f), l0));
    wasm_v128_store(inv + 4, wasm_f32x4_div(wasm_f32x4_splat(1.0f), l1));
    for (u32 c0 = 0; c0 < nq; c0 += 4)
      for (u32 d0 = 0; d0 < HD; d0 += 8) {
        v128_t acc[4][2];
        // acc[r][h] = sum_j P[j][c0 + r] v[j][d0 + 4h ..], j in order
        dot_4x8(st + c0, st + c0 + 1, st + c0 + 2, st + c0 + 3, 8, vb + d0, ks, T, acc);
        for (u32 e = 0; e < 4 && c0 + e < nq; e++) {
          f32 *o = dst + (b * A->T_q + i0 + c0 + e) * A->out_stride + h * HD + d0;
          const v128_t il = wasm_f32x4_splat(inv[c0 + e]);
          wasm_v128_store(o, wasm_f32x4_mul(acc[e][0], il));
          wasm_v128_store(o + 4, wasm_f32x4_mul(acc[e][1], il));
        }
      }
    r += nq;
  }
}

static void attention_scalar(const AttnParams *A, const f32 *q, const f32 *kv, f32 *dst, u32 HD, u32 r_lo, u32 r_hi) {
  const f32 scale = 1.0f / __builtin_sqrtf((f32)HD);
  f32 s[KEYS], acc[256], qs[256];
  if (HD > 256) return;   // the exporter's head dims are far below
  for (u32 r = r_lo; r < r_hi; r++) {
        const u32 i = r % A->T_q, h = (r / A->T_q) % A->H, b = r / (A->T_q * A->H);
        const f32 *qr = q + (b * A->T_q + i) * A->q_stride + A->q_off + h * HD;
        for (u32 d = 0; d < HD; d++) { qs[d] = qr[d] * scale; acc[d] = 0; }
        f32 m = -3.0e38f, l = 0;
        for (u32 j0 = 0; j0 < A->T_kv; j0 += KEYS) {
          const u32 n = A->T_kv - j0 < KEYS ? A->T_kv - j0 : KEYS;
          f32 m_new = m;
          for (u32 jj = 0; jj < n; jj++) {
            const f32 *kr = kv + (b * A->T_kv + j0 + jj) * A->kv_stride + A->k_off + h * HD;
            f32 dot = 0;
            for (u32 d = 0; d < HD; d++) dot += qs[d] * kr[d];
            s[jj] = dot;
            if (dot > m_new) m_new = dot;
          }
          const f32 corr = expf_(m - m_new);
          l *= corr;
          for (u32 d = 0; d < HD; d++) acc[d] *= corr;
          for (u32 jj = 0; jj < n; jj++) {
            const f32 pj = expf_(s[jj] - m_new);
            l += pj;
            const f32 *vr = kv + (b * A->T_kv + j0 + jj) * A->kv_stride + A->v_off + h * HD;
            for (u32 d = 0; d < HD; d++) acc[d] += pj * vr[d];
          }
          m = m_new;
        }
        f32 *o = dst + (b * A->T_q + i) * A->out_stride + h * HD;
        for (u32 d = 0; d < HD; d++) o[d] = acc[d] / l;
      }
}

static void attention_part(const u32 *params, const f32 *q, const f32 *kv, f32 *dst, u32 HD, u32 part, u32 parts) {
  const AttnParams *A = (const AttnParams *)params;
  // the vector loads need 4-float alignment of every row start (strides and offsets)
  const int aligned = ((A->q_stride | A->q_off | A->kv_stride | A->k_off | A->v_off | A->out_stride) % 4) == 0;
  const int blocked = aligned && HD % 8 == 0 && HD <= 64 && A->T_kv <= ATT_KEYS;
  u32 lo, hi;
  share(A->batch * A->H * A->T_q, blocked ? 8 : 1, part, parts, &lo, &hi);   // the blocked path: shares of 8 queries
  if (blocked) attention_blocked(A, q, kv, dst, HD, lo, hi);
  else if (aligned && HD == 32) attention_vec(A, q, kv, dst, 8, lo, hi);
  else if (aligned && HD == 64) attention_vec(A, q, kv, dst, 16, lo, hi);
  else attention_scalar(A, q, kv, dst, HD, lo, hi);
}

void EXPORT(op_attention)(const u32 *params, const f32 *q, const f32 *kv, f32 *dst, u32 HD) {
  attention_part(params, q, kv, dst, HD, 0, 1);
}

void EXPORT(op_attention_part)(const u32 *params, const f32 *q, const f32 *kv, f32 *dst, u32 HD, u32 part, u32 parts) {
  attention_part(params, q, kv, dst, HD, part, parts);
}

// ------------------------------------------------------------------ elementwise ops
void EXPORT(op_gated_residual)(const u32 *params, f32 *h, const f32 *y, const f32 *ada) {
  PARAMS_gated_residual(params);
  if (has_gate != 1) { for (u32 i = 0; i < count; i++) h[i] += y[i]; return; }
  for (u32 r = 0; r * D < count; r++) {
    const f32 *g = ada + (r / T) * mod_stride + gate_off;
    f32 *hr = h + r * D;
    const f32 *yr = y + r * D;
    for (u32 d = 0; d < D; d++) hr[d] = hr[d] + g[d] * yr[d];
  }
}

// patchify and unpatchify: one permutation between the NCHW image (b, c, y, x) and the token layout, token
// (b G + y / p) G + x / p of G x G patches, its p p C values (c, pr, pc) in patchify's order, (pr, pc, c) in
// unpatchify's (the final layer's). to_tokens: dst is the token layout (patchify), else src is (unpatchify).
static void patch_permute(const u32 *params, const f32 *src, f32 *dst, int to_tokens) {
  PARAMS_patchify(params);
  const u32 G = I / p, B = count / (C * I * I);
  u32 idx = 0;   // the NCHW index, in order
  // yy = gy p + pr and xx = gx p + pc kept as counters (no division per element)
  for (u32 b = 0; b < B; b++)
    for (u32 c = 0; c < C; c++)
      for (u32 yy = 0, gy = 0, pr = 0; yy < I; yy++) {
        for (u32 xx = 0, gx = 0, pc = 0; xx < I; xx++, idx++) {
          const u32 token = (b * G + gy) * G + gx;
          if (to_tokens) dst[((token * C + c) * p + pr) * p + pc] = src[idx];
          else dst[idx] = src[((token * p + pr) * p + pc) * C + c];
          if (++pc == p) { pc = 0; gx++; }
        }
        if (++pr == p) { pr = 0; gy++; }
      }
}

void EXPORT(op_patchify)(const u32 *params, const f32 *img, f32 *dst) { patch_permute(params, img, dst, 1); }

void EXPORT(op_unpatchify)(const u32 *params, const f32 *src, f32 *dst) { patch_permute(params, src, dst, 0); }

void EXPORT(op_pos_embed_add)(const u32 *params, f32 *h, const f32 *pos) {
  PARAMS_pos_embed_add(params);
  // idx = (b T + t) D + d in order, as nested loops (no divisions per element)
  if (T == 0 || D == 0) return;
  for (u32 b = 0, idx = 0; idx < count; b++)
    for (u32 t = 0; t < T && idx < count; t++) {
      f32 *hr = h + (b * T_buf + t) * D;
      const f32 *pr = pos + t * D;
      for (u32 d = 0; d < D && idx < count; d++, idx++) hr[d] += pr[d];
    }
}

// cos/sin as timestep_embed.wgsl.j2: Cody-Waite reduction by pi/2, Cephes polynomials
void EXPORT(op_timestep_embed)(const u32 *params, const u32 *t, const f32 *freqs, f32 *dst) {
  PARAMS_timestep_embed(params);
  if (half == 0) return;
  // dst[b 2 half + j] = cos, dst[b 2 half + half + j] = sin of the same x: one reduction and both polynomials per
  // (b, j), each value written once (the same expressions as one value at a time)
  for (u32 b = 0; b * 2 * half < count; b++)
    for (u32 j = 0; j < half; j++) {
      const f32 x = (f32)t[b] * freqs[j];
      const f32 k = __builtin_rintf(x * 0.63661977236758134f);
      const f32 r = ((x - k * 1.5703125f) - k * 4.837512969970703125e-4f) - k * 7.549789948768648e-8f;
      const f32 z = r * r;
      const f32 s = r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
      const f32 c = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
      const u32 qd = (u32)((int)k & 3);
      f32 cs_c = c, cs_s = s;
      if (qd == 1) { cs_c = -s; cs_s = c; }
      if (qd == 2) { cs_c = -c; cs_s = -s; }
      if (qd == 3) { cs_c = s; cs_s = -c; }
      const u32 ic = b * 2 * half + j;
      if (ic < count) dst[ic] = cs_c;
      if (ic + half < count) dst[ic + half] = cs_s;
    }
}

// y_emb = the sum of the L levels' table rows (added in level order, as the WGSL; a row >= rows reads the last row),
// c = t_emb + y_emb. The table is f32 (op_label_embed), or int8 with an f32 scale per row (op_label_embed_q8, int8
// bundles, label_embed.wgsl.j2 with q8): each value q * scale, q exact in f32, one rounding.
static inline __attribute__((always_inline)) void label_embed(u32 count, u32 D, u32 rows, u32 levels, const u32 *y,
                                                                const f32 *table, const int8_t *q, const f32 *scale,
                                                                const f32 *t_emb, f32 *y_emb, f32 *c) {
  for (u32 idx = 0, b = 0, d = 0; idx < count; idx++) {   // b = idx / D, d = idx % D
    f32 e = 0.0f;
    for (u32 l = 0; l < levels; l++) {
      const u32 r = y[b * levels + l] < rows - 1 ? y[b * levels + l] : rows - 1;
      const f32 v = q ? (f32)q[r * D + d] * scale[r] : table[r * D + d];
      e = l == 0 ? v : e + v;
    }
    y_emb[idx] = e;
    c[idx] = t_emb[idx] + e;
    if (++d == D) { d = 0; b++; }
  }
}

void EXPORT(op_label_embed)(const u32 *params, const u32 *y, const f32 *table, const f32 *t_emb, f32 *y_emb, f32 *c) {
  PARAMS_label_embed(params);
  label_embed(count, D, rows, levels, y, table, 0, 0, t_emb, y_emb, c);
}

void EXPORT(op_label_embed_q8)(const u32 *params, const u32 *y, const int8_t *table, const f32 *scale, const f32 *t_emb,
                               f32 *y_emb, f32 *c) {
  PARAMS_label_embed_q8(params);
  label_embed(count, D, rows, levels, y, 0, table, scale, t_emb, y_emb, c);
}

void EXPORT(op_cond_tokens)(const u32 *params, const f32 *t_emb, const f32 *y_emb, f32 *dst) {
  PARAMS_cond_tokens(params);
  for (u32 idx = 0; idx < count; idx++) {
    const u32 d = idx % D, which = (idx / D) % 2, b = idx / (2 * D);
    dst[(b * T_dst + tok0 + which) * D + d] = which == 0 ? t_emb[b * D + d] : y_emb[b * D + d];
  }
}

void EXPORT(op_rng_normal)(const u32 *params, const Step *st, f32 *dst) {
  PARAMS_rng_normal(params);
  const u32 step = use_step == 1 ? st->i : 0;
  for (u32 idx = 0; idx < count; idx++) dst[idx] = normal(st->seed, stream, step, idx);
}

void EXPORT(op_expand_batch)(const u32 *params, const Step *st, const f32 *x, f32 *x_in, u32 *t_in) {
  PARAMS_expand_batch(params);   // P: elements per image
  for (u32 idx = 0, row = 0; idx < count; row++) {   // idx = row P + e
    const u32 n = row % st->N, k = row / (st->J * st->N);
    for (u32 e = 0; e < P && idx < count; e++, idx++) {
      f32 v = x[n * P + e];
      if (st->K > 1) v = v + st->perturb * normal(st->seed, NOISE_STREAM_PERTURB, st->i, (k * st->N + n) * P + e);
      x_in[idx] = v;
    }
  }
  for (u32 b = 0; b < B && b < count; b++) t_in[b] = st->t;
}

void EXPORT(op_guide_combine)(const u32 *params, const Step *st, const f32 *out, f32 *guided) {
  PARAMS_guide_combine(params);
  for (u32 idx = 0, pix = 0, ch = 0, n = 0; idx < count; idx++) {   // idx = (n C_out + ch) P2 + pix
    f32 total = 0;
    for (u32 k = 0; k < st->K; k++) {
      if (ch < C) {
        f32 s = 0;
        for (u32 j = 0; j < st->J; j++) s += st->coef[j] * out[(((k * st->J + j) * st->N + n) * C_out + ch) * P2 + pix];
        total += s;
      } else {
        total += out[(((k * st->J + st->var_branch) * st->N + n) * C_out + ch) * P2 + pix];
      }
    }
    guided[idx] = total / (f32)st->K;
    if (++pix == P2) { pix = 0; if (++ch == C_out) { ch = 0; n++; } }
  }
}

// one DDPM / DDIM step; flags: clip x0, DDPM (else DDIM), add noise, the output is v (else eps)
void EXPORT(op_sampler_step)(const u32 *params, const Step *st, const f32 *guided, f32 *x) {
  PARAMS_sampler_step(params);
  const u32 c_out = learn_sigma == 1 ? 2 * C : C;
  for (u32 idx = 0, pix = 0, c = 0, n = 0; idx < count; idx++) {   // idx = (n C + c) P2 + pix
    const f32 out = guided[(n * c_out + c) * P2 + pix];
    const f32 xt = x[idx];
    f32 x0 = (st->flags & STEP_FLAG_V) ? st->sqrt_abar * xt - st->sqrt_1m_abar * out : (xt - st->sqrt_1m_abar * out) / st->sqrt_abar;
    if (st->flags & STEP_FLAG_CLIP) x0 = x0 < -1.0f ? -1.0f : x0 > 1.0f ? 1.0f : x0;
    const f32 z = (st->flags & STEP_FLAG_NOISE) ? normal(st->seed, NOISE_STREAM_STEP, st->i, idx) : 0.0f;
    f32 result;
    if (st->flags & STEP_FLAG_DDPM) {
      f32 logvar = st->log_post_var;
      if (learn_sigma == 1) {
        const f32 f = (guided[(n * c_out + C + c) * P2 + pix] + 1.0f) / 2.0f;
        logvar = f * st->log_beta + (1.0f - f) * st->log_post_var;
      }
      result = st->coef1 * x0 + st->coef2 * xt + expf_(0.5f * logvar) * z;
    } else {
      const f32 eps2 = (xt - st->sqrt_abar * x0) / st->sqrt_1m_abar;
      result = st->sqrt_abar_prev * x0 + st->ddim_dir * eps2 + st->sigma * z;
    }
    x[idx] = result;
    if (++pix == P2) { pix = 0; if (++c == C) { c = 0; n++; } }
  }
}

// ------------------------------------------------------------------ the VAE decoder's ops (docs/vae.md)
// NCHW activations, as conv2d.wgsl.j2, groupnorm.wgsl.j2 and upsample_nearest.wgsl.j2.

// conv2d: dst[n, co, y, x] = bias[co] + sum_{ci, ky, kx} w[ci, ky, kx, co] src[n, ci, y + ky - P, x + kx - P]
// (+ res[n, co, y, x] when has_res = 1), a k x k convolution (k = 1 or 3, the kernel's variant), stride 1,
// zero padding P = (k - 1) / 2. w is the bundle's transposed layout (C_in k^2, C_out4) as f32 (the runtime
// unpacks f16 at load), C_out4 = C_out rounded up to 4 with zero columns; bias (C_out,).
// Blocked like the WGSL kernel: 8 neighbouring pixels of a row x 8 output channels (16 vec4 accumulators);
// per input channel and kernel row the 8 + 2P inputs are loaded once (zero outside the image), then k x 8 x 2
// vector multiply-adds, summed in the order ci, ky, kx. blocks = batch * H * ceil(W / 8).
#define CONV_TILE(K)                                                                                          \
  for (u32 ci = 0; ci < C_in; ci++) {                                                                         \
    const f32 *plane = src + (n * C_in + ci) * HW;                                                            \
    for (u32 ky = 0; ky < (K); ky++) {                                                                        \
      const int iy = (int)y + (int)ky - (int)pad;                                                             \
      if (iy < 0 || iy >= (int)H) continue;                                                                   \
      f32 r[8 + (K) - 1];                                                                                     \
      for (int j = 0; j < 8 + (K) - 1; j++) {                                                                 \
        const int ix = (int)x0 + j - (int)pad;                                                                \
        r[j] = ix < 0 || ix >= (int)W ? 0.0f : plane[(u32)iy * W + (u32)ix];                                  \
      }                                                                                                       \
      const f32 *wrow = w + (ci * (K) * (K) + ky * (K)) * C_out4 + co0;                                       \
      for (u32 kx = 0; kx < (K); kx++) {                                                                      \
        const v128_t wa = wasm_v128_load(wrow + kx * C_out4);                                                 \
        const v128_t wb = two ? wasm_v128_load(wrow + kx * C_out4 + 4) : zero;                                \
        for (u32 p = 0; p < 8; p++) {                                                                         \
          const v128_t s = wasm_f32x4_splat(r[kx + p]);                                                       \
          acc[p][0] = madd4(acc[p][0], s, wa);                                                                \
          acc[p][1] = madd4(acc[p][1], s, wb);                                                                \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }

void EXPORT(op_conv2d)(const u32 *params, const f32 *src, const f32 *w, const f32 *bias, const f32 *res, f32 *dst,
                       u32 k) {
  PARAMS_conv2d(params);
  const u32 WB = (W + 7) / 8, HW = H * W, pad = k == 3 ? 1 : 0;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (u32 pb = 0; pb < blocks; pb++) {
    const u32 x0 = (pb % WB) * 8, y = (pb / WB) % H, n = pb / WB / H;
    for (u32 co0 = 0; co0 < C_out; co0 += 8) {
      const int two = co0 + 4 < C_out4;              // the second vec4 of channels exists in the layout
      v128_t acc[8][2];
      for (u32 p = 0; p < 8; p++) acc[p][0] = acc[p][1] = zero;
      if (k == 3) { CONV_TILE(3) } else { CONV_TILE(1) }
      for (u32 p = 0; p < 8 && x0 + p < W; p++) {
        f32 lanes[8];
        wasm_v128_store(lanes, acc[p][0]);
        wasm_v128_store(lanes + 4, acc[p][1]);
        for (u32 c = 0; c < 8 && co0 + c < C_out; c++) {
          const u32 co = co0 + c, o = ((n * C_out + co) * H + y) * W + x0 + p;
          f32 v = lanes[c] + bias[co];
          if (has_res == 1) v = v + res[o];
          dst[o] = v;
        }
      }
    }
  }
}

// groupnorm: dst = act(GroupNorm(src) w[c] + b[c]) (act: 0 none, 1 silu, the kernel's variant), per (item, group)
// row of C / G contiguous channels of HW values; eps = the f32 with bits eps_bits. Two passes as torch (the mean,
// then the mean of (x - mean)^2); the sums run in f64 (no lane or tree order to match: more exact than the WGSL
// kernel's f32 tree, within the same bound).
void EXPORT(op_groupnorm)(const u32 *params, const f32 *src, const f32 *norm_w, const f32 *norm_b, f32 *dst, u32 act) {
  PARAMS_groupnorm(params);
  const u32 cpg = C / G, count = cpg * HW;
  const f32 eps = u2f(eps_bits);
  for (u32 r = 0; r < rows; r++) {
    const u32 c0 = (r % G) * cpg, base = ((r / G) * C + c0) * HW;
    const f32 *x = src + base;
    double s = 0;
    for (u32 i = 0; i < count; i++) s += x[i];
    const f32 mean = (f32)(s / count);
    double v = 0;
    for (u32 i = 0; i < count; i++) { const f32 d = x[i] - mean; v += (double)(d * d); }
    const f32 rstd = 1.0f / __builtin_sqrtf((f32)(v / count) + eps);
    for (u32 c = 0; c < cpg; c++) {
      const f32 wc = norm_w[c0 + c], bc = norm_b[c0 + c];
      const f32 *xc = x + c * HW;
      f32 *o = dst + base + c * HW;
      u32 i = 0;
      const v128_t m4 = wasm_f32x4_splat(mean), r4 = wasm_f32x4_splat(rstd), w4 = wasm_f32x4_splat(wc),
                   b4 = wasm_f32x4_splat(bc);
      for (; i + 4 <= HW; i += 4) {
        const v128_t y = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(xc + i), m4), r4);
        const v128_t z = wasm_f32x4_add(wasm_f32x4_mul(y, w4), b4);
        wasm_v128_store(o + i, act == 1 ? silu4(z) : z);
      }
      for (; i < HW; i++) {
        const f32 z = (xc[i] - mean) * rstd * wc + bc;
        o[i] = act == 1 ? silu(z) : z;
      }
    }
  }
}

// upsample_nearest: dst[n, c, y, x] = src[n, c, y / 2, x / 2]; count = batch C 2H 2W, H and W the input's. A copy.
void EXPORT(op_upsample_nearest)(const u32 *params, const f32 *src, f32 *dst) {
  PARAMS_upsample_nearest(params);
  const u32 W2 = 2 * W, H2 = 2 * H;
  for (u32 idx = 0; idx < count; idx++) {
    const u32 x = idx % W2, y = (idx / W2) % H2, plane = idx / (W2 * H2);
    dst[idx] = src[(plane * H + y / 2) * W + x / 2];
  }
}

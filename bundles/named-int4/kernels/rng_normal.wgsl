// rng_normal: dst[idx] = normal(seed, stream, step, idx), the counter-based N(0, 1) of ditformat/noise.py.
// bindings: 0 params {count, stream, use_step}; 1 st (step uniform: seed, i, zero); 2 dst (count,).
// step = st.i if use_step = 1 else 0 (x_T uses stream 0, step 0). Invocation: 4 elements.
struct Params {
  count: u32,
  stream: u32,
  use_step: u32,
  _pad0: u32,
};
struct Step {
  t: u32, i: u32, seed: u32, zero: u32,
  K: u32, J: u32, N: u32, var_branch: u32,
  flags: u32, _p0: u32, _p1: u32, _p2: u32,
  sqrt_abar: f32, sqrt_1m_abar: f32, coef1: f32, coef2: f32,
  log_beta: f32, log_post_var: f32, sqrt_abar_prev: f32, ddim_dir: f32,
  sigma: f32, perturb: f32, _p3: f32, _p4: f32,
  coef: array<vec4<f32>, 2>,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// --- the project's counter-based normal generator (ditformat/noise.py, docs/noise.md), bit for bit ---
// Every f32 product goes through fmul: xor with a runtime zero hides the product from the compiler,
// which then cannot contract it with the following add into a fused multiply-add (numpy never fuses).
fn fmul(a: f32, b: f32) -> f32 { return bitcast<f32>(bitcast<u32>(a * b) ^ st.zero); }

fn pcg4d(v_in: vec4<u32>) -> vec4<u32> {
  var v = v_in * 1664525u + 1013904223u;
  v.x += v.y * v.w; v.y += v.z * v.x; v.z += v.x * v.y; v.w += v.y * v.z;
  v = v ^ (v >> vec4<u32>(16u));
  v.x += v.y * v.w; v.y += v.z * v.x; v.z += v.x * v.y; v.w += v.y * v.z;
  return v;
}

fn poly_log1p(x: f32) -> f32 {
  var p = (-0.073820256f);
  p = fmul(p, x) + (0.12928559f);
  p = fmul(p, x) + (-0.13369992f);
  p = fmul(p, x) + (0.1418735f);
  p = fmul(p, x) + (-0.16591594f);
  p = fmul(p, x) + (0.20000857f);
  p = fmul(p, x) + (-0.25002462f);
  p = fmul(p, x) + (0.3333337f);
  p = fmul(p, x) + (-0.49999976f);
  p = fmul(p, x) + (1f);
  p = fmul(p, x) + (0.0f);
  return p;
}

fn poly_cos_q(x: f32) -> f32 {
  var p = (0.00063896226f);
  p = fmul(p, x) + (0.0006913764f);
  p = fmul(p, x) + (-0.02164285f);
  p = fmul(p, x) + (0.00048672303f);
  p = fmul(p, x) + (0.25349486f);
  p = fmul(p, x) + (0.000034794986f);
  p = fmul(p, x) + (-1.233704f);
  p = fmul(p, x) + (0.00000013102257f);
  p = fmul(p, x) + (1f);
  return p;
}

fn poly_sin_q(x: f32) -> f32 {
  var p = (0.00063555944f);
  p = fmul(p, x) + (-0.005788612f);
  p = fmul(p, x) + (0.0010624186f);
  p = fmul(p, x) + (0.07909309f);
  p = fmul(p, x) + (0.00019882838f);
  p = fmul(p, x) + (-0.6460008f);
  p = fmul(p, x) + (0.000003296861f);
  p = fmul(p, x) + (1.5707963f);
  p = fmul(p, x) + (0.0f);
  return p;
}


// ln(k 2^-24) for k in [1, 2^24]
fn ln_u24(k: u32) -> f32 {
  var e = i32(firstLeadingBit(k));                                  // floor(log2 k), exact
  var m = fmul(f32(k), ldexp(1.0, -e));                             // in [1, 2), exact
  if (m > 1.4142135f) { m = fmul(m, 0.5); e += 1; }
  return fmul(f32(e - 24), 0.6931472f) + poly_log1p(m - 1.0);
}

// sqrt(a), a >= 0: bit-level guess of 1/sqrt(a), three Newton steps, times a
fn sqrt_newton(a: f32) -> f32 {
  var y = bitcast<f32>(0x5F3759DFu - (bitcast<u32>(a) >> 1u));
  for (var n = 0; n < 3; n++) {
    y = fmul(y, 1.5 - fmul(fmul(fmul(0.5, a), y), y));
  }
  return fmul(a, y);
}

// cos(2 pi j 2^-24), j in [0, 2^24)
fn cos_2pi_u24(j: u32) -> f32 {
  let q = j >> 22u;
  let r = fmul(f32(j & 0x3FFFFFu), 2.384185791015625e-7);       // 2^-22, exact
  let c = poly_cos_q(r);
  let s = poly_sin_q(r);
  if (q == 0u) { return c; }
  if (q == 1u) { return -s; }
  if (q == 2u) { return -c; }
  return s;
}

fn normal(seed: u32, stream: u32, step_i: u32, index: u32) -> f32 {
  let h = pcg4d(vec4<u32>(index, step_i, seed, stream));
  let k = (h.x >> 8u) + 1u;                         // u1 = k 2^-24 in (0, 1]
  let j = h.y >> 8u;                                // u2 = j 2^-24 in [0, 1)
  let radius = sqrt_newton(fmul(-2.0, ln_u24(k)));
  return fmul(radius, cos_2pi_u24(j));
}

fn element(idx: u32) {
  dst[idx] = normal(st.seed, P.stream, select(0u, st.i, P.use_step == 1u), idx);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

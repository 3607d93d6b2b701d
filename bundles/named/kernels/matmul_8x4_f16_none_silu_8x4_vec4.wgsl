// matmul_wide: matmul's contract (the same params, bindings and sums, in the same order: K in steps of 4,
// each step a dot of 4 products added to the accumulator) with a 8x4 block of outputs per
// invocation instead of 4x4: each weight vec4 (an f16 unpack) serves 8 rows and each row of a
// 4 columns, fewer loads per multiply-add on CPU adapters, more registers (GPUs: the plan picks).
// An 8x8 workgroup covers 64 rows x 32 columns. K % 4 == 0; rows past M or N are
// clamped reads whose results are dropped. in_act = none, act = silu.
struct Params {
  M: u32,
  N: u32,
  K: u32,
  out_group: u32,
  out_stride: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
fn load4_a(i: u32) -> vec4<f32> { return a[i]; }
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;
fn load4_w(i: u32) -> vec4<f32> { let pair = w[i]; return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y)); }
@group(0) @binding(3) var<storage, read> bias: array<u32>;
fn load_bias(i: u32) -> f32 { let pair = unpack2x16float(bias[i >> 1u]); return select(pair.x, pair.y, (i & 1u) == 1u); }
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn in_act(x: f32) -> f32 {
  return x;
}

fn in_act4(x: vec4<f32>) -> vec4<f32> {
  return x;
}

fn tanh_stable(u: f32) -> f32 {
  // 1 - 2 / (e^{2|u|} + 1): saturates to 1 instead of inf/inf for large |u|
  let t = 1.0 - 2.0 / (exp(2.0 * abs(u)) + 1.0);
  return select(t, -t, u < 0.0);
}

fn act(x: f32) -> f32 {
  return x / (1.0 + exp(-x));
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * 8u;
  let n0 = gid.x * 4u;
  if (m0 >= P.M || n0 >= P.N) { return; }
  let K4 = P.K / 4u;
  let ar0 = min(m0 + 0u, P.M - 1u) * K4;
  let ar1 = min(m0 + 1u, P.M - 1u) * K4;
  let ar2 = min(m0 + 2u, P.M - 1u) * K4;
  let ar3 = min(m0 + 3u, P.M - 1u) * K4;
  let ar4 = min(m0 + 4u, P.M - 1u) * K4;
  let ar5 = min(m0 + 5u, P.M - 1u) * K4;
  let ar6 = min(m0 + 6u, P.M - 1u) * K4;
  let ar7 = min(m0 + 7u, P.M - 1u) * K4;
  let wr0 = min(n0 + 0u, P.N - 1u) * K4;
  let wr1 = min(n0 + 1u, P.N - 1u) * K4;
  let wr2 = min(n0 + 2u, P.N - 1u) * K4;
  let wr3 = min(n0 + 3u, P.N - 1u) * K4;
  var acc0_0 = vec4<f32>(0.0);
  var acc1_0 = vec4<f32>(0.0);
  var acc2_0 = vec4<f32>(0.0);
  var acc3_0 = vec4<f32>(0.0);
  var acc4_0 = vec4<f32>(0.0);
  var acc5_0 = vec4<f32>(0.0);
  var acc6_0 = vec4<f32>(0.0);
  var acc7_0 = vec4<f32>(0.0);
  for (var k = 0u; k < K4; k++) {
    let w0 = load4_w(wr0 + k);
    let w1 = load4_w(wr1 + k);
    let w2 = load4_w(wr2 + k);
    let w3 = load4_w(wr3 + k);
    let a0 = in_act4(a[ar0 + k]);
    acc0_0 += vec4<f32>(dot(a0, w0), dot(a0, w1), dot(a0, w2), dot(a0, w3));
    let a1 = in_act4(a[ar1 + k]);
    acc1_0 += vec4<f32>(dot(a1, w0), dot(a1, w1), dot(a1, w2), dot(a1, w3));
    let a2 = in_act4(a[ar2 + k]);
    acc2_0 += vec4<f32>(dot(a2, w0), dot(a2, w1), dot(a2, w2), dot(a2, w3));
    let a3 = in_act4(a[ar3 + k]);
    acc3_0 += vec4<f32>(dot(a3, w0), dot(a3, w1), dot(a3, w2), dot(a3, w3));
    let a4 = in_act4(a[ar4 + k]);
    acc4_0 += vec4<f32>(dot(a4, w0), dot(a4, w1), dot(a4, w2), dot(a4, w3));
    let a5 = in_act4(a[ar5 + k]);
    acc5_0 += vec4<f32>(dot(a5, w0), dot(a5, w1), dot(a5, w2), dot(a5, w3));
    let a6 = in_act4(a[ar6 + k]);
    acc6_0 += vec4<f32>(dot(a6, w0), dot(a6, w1), dot(a6, w2), dot(a6, w3));
    let a7 = in_act4(a[ar7 + k]);
    acc7_0 += vec4<f32>(dot(a7, w0), dot(a7, w1), dot(a7, w2), dot(a7, w3));
  }
  if (m0 + 0u < P.M) {
    let orow = ((m0 + 0u) / P.out_group) * P.out_stride + (m0 + 0u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc0_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 1u < P.M) {
    let orow = ((m0 + 1u) / P.out_group) * P.out_stride + (m0 + 1u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc1_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 2u < P.M) {
    let orow = ((m0 + 2u) / P.out_group) * P.out_stride + (m0 + 2u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc2_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 3u < P.M) {
    let orow = ((m0 + 3u) / P.out_group) * P.out_stride + (m0 + 3u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc3_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 4u < P.M) {
    let orow = ((m0 + 4u) / P.out_group) * P.out_stride + (m0 + 4u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc4_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 5u < P.M) {
    let orow = ((m0 + 5u) / P.out_group) * P.out_stride + (m0 + 5u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc5_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 6u < P.M) {
    let orow = ((m0 + 6u) / P.out_group) * P.out_stride + (m0 + 6u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc6_0[e] + load_bias(n)); }
    }
  }
  if (m0 + 7u < P.M) {
    let orow = ((m0 + 7u) / P.out_group) * P.out_stride + (m0 + 7u) % P.out_group;
    for (var e = 0u; e < 4u; e++) {
      let n = n0 + 0u + e;
      if (n < P.N) { dst[orow * P.N + n] = act(acc7_0[e] + load_bias(n)); }
    }
  }
}

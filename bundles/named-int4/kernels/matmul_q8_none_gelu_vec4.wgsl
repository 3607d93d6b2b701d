// matmul_q8 (int8 weights, `ditweb export --dtype int8`): dst[row(m), n] = act(scale[n] * (in_act(a[m, :]) . q[n, :]) + bias[n])
// bindings: 0 params {M, N, K, out_group, out_stride}; 1 a (M, K) f32 row-major, read as vec4 along K (K % 4 == 0);
//   2 wq (N, K) int8 in torch Linear layout, 4 values of K a u32 word (the first in the low byte);
//   3 scale (N,) f32: per output channel, applied once after the sum; 4 bias (N,) f32;
//   5 dst: row m is written at row (m / out_group) * out_stride + m % out_group of an N-column matrix.
// The register-blocked design of matmul.wgsl.j2 (vec4 variant): invocation (x, y) of an 8x8 workgroup owns 4x4
// outputs (32x32 per workgroup) and walks K four at a time; a weight load is one u32 of 4 int8 values, sign-
// extended with shifts (no extension needed), a quarter of the f32 bytes and half of f16's. The integers q are
// exact in f32, so the products round as matmul's do; the scale adds one rounding. in_act = none, act = gelu.
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
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;

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
  let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);    // sqrt(2/pi) (x + 0.044715 x^3)
  return 0.5 * x * (1.0 + tanh_stable(u));
}

// 4 signed bytes of a u32 word, low byte first
fn q4(v: u32) -> vec4<f32> {
  return vec4<f32>(f32(i32(v << 24u) >> 24u), f32(i32(v << 16u) >> 24u), f32(i32(v << 8u) >> 24u), f32(i32(v) >> 24u));
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let m0 = gid.y * 4u;
  let n0 = gid.x * 4u;
  if (m0 >= P.M || n0 >= P.N) { return; }
  let K4 = P.K / 4u;
  // first vec4 / word of each of the 4 rows of a and q; rows past the edge re-read the last row
  let ar = vec4<u32>(m0, min(m0 + 1u, P.M - 1u), min(m0 + 2u, P.M - 1u), min(m0 + 3u, P.M - 1u)) * K4;
  let wr = vec4<u32>(n0, min(n0 + 1u, P.N - 1u), min(n0 + 2u, P.N - 1u), min(n0 + 3u, P.N - 1u)) * K4;
  var acc0 = vec4<f32>(0.0);                        // acc_r[c] = sum for output (m0 + r, n0 + c)
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k = 0u; k < K4; k++) {
    let a0 = in_act4(a[ar.x + k]);
    let a1 = in_act4(a[ar.y + k]);
    let a2 = in_act4(a[ar.z + k]);
    let a3 = in_act4(a[ar.w + k]);
    let w0 = q4(wq[wr.x + k]);
    let w1 = q4(wq[wr.y + k]);
    let w2 = q4(wq[wr.z + k]);
    let w3 = q4(wq[wr.w + k]);
    acc0 += vec4<f32>(dot(a0, w0), dot(a0, w1), dot(a0, w2), dot(a0, w3));
    acc1 += vec4<f32>(dot(a1, w0), dot(a1, w1), dot(a1, w2), dot(a1, w3));
    acc2 += vec4<f32>(dot(a2, w0), dot(a2, w1), dot(a2, w2), dot(a2, w3));
    acc3 += vec4<f32>(dot(a3, w0), dot(a3, w1), dot(a3, w2), dot(a3, w3));
  }
  let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
  for (var r = 0u; r < 4u; r++) {
    let m = m0 + r;
    if (m >= P.M) { break; }
    let orow = (m / P.out_group) * P.out_stride + m % P.out_group;
    for (var c = 0u; c < 4u; c++) {
      let n = n0 + c;
      if (n < P.N) { dst[orow * P.N + n] = act(acc[r][c] * scale[n] + bias[n]); }
    }
  }
}

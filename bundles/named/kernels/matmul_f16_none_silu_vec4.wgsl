// matmul (register-blocked, no workgroup memory): dst[row(m), n] = act(in_act(a[m, :]) . w[n, :] + bias[n])
// bindings: 0 params {M, N, K, out_group, out_stride}; 1 a (M, K) f32 row-major;
//   2 w (N, K) weights in torch Linear layout (contiguous along K, like a); 3 bias (N,);
//   4 dst: row m is written at row (m / out_group) * out_stride + m % out_group of an N-column matrix.
// Invocation (x, y) of an 8x8 workgroup owns a 4x4 block of outputs (rows 4y.., columns 4x.. of the
// global grid; 32x32 per workgroup) and walks K four at a time with 4 rows of a and 4 rows of w in
// registers: 32 loads feed 64 multiply-adds, with no barriers (what the software adapters lavapipe and
// SwiftShader pay most for; matmul_shared.wgsl.j2 is the workgroup-memory variant). Loads outside M, N, K
// read 0, so any shape works. vec4 = "vec4" (K % 4 == 0, chosen by the exporter): a and w are read as vec4
// along K, 8 vector loads per 64 multiply-adds, rows past M or N clamped (their results are dropped):
// 4-5x the scalar variant on lavapipe. in_act = none, act = silu, vec4 = vec4.
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
  let m0 = gid.y * 4u;
  let n0 = gid.x * 4u;
  if (m0 >= P.M || n0 >= P.N) { return; }
  let K4 = P.K / 4u;
  // first vec4 of each of the 4 rows of a and w; rows past the edge re-read the last row
  let ar = vec4<u32>(m0, min(m0 + 1u, P.M - 1u), min(m0 + 2u, P.M - 1u), min(m0 + 3u, P.M - 1u)) * K4;
  let wr = vec4<u32>(n0, min(n0 + 1u, P.N - 1u), min(n0 + 2u, P.N - 1u), min(n0 + 3u, P.N - 1u)) * K4;
  var acc0 = vec4<f32>(0.0);                        // acc_r[c] = output (m0 + r, n0 + c)
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k = 0u; k < K4; k++) {
    let a0 = in_act4(a[ar.x + k]);
    let a1 = in_act4(a[ar.y + k]);
    let a2 = in_act4(a[ar.z + k]);
    let a3 = in_act4(a[ar.w + k]);
    let w0 = load4_w(wr.x + k);
    let w1 = load4_w(wr.y + k);
    let w2 = load4_w(wr.z + k);
    let w3 = load4_w(wr.w + k);
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
      if (n < P.N) { dst[orow * P.N + n] = act(acc[r][c] + load_bias(n)); }
    }
  }
}

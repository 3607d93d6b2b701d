// matmul_shared (workgroup-memory tiles): dst[row(m), n] = act(in_act(a[m, :]) . w[n, :] + bias[n])
// bindings: 0 params {M, N, K, out_group, out_stride}; 1 a (M, K) f32 row-major;
//   2 w (N, K) weights in torch Linear layout (contiguous along K, like a); 3 bias (N,);
//   4 dst: row m is written at row (m / out_group) * out_stride + m % out_group of an N-column matrix
//   (out_group = out_stride for a compact result; in-context writes T of T+2 token rows).
// A workgroup of 8x8 invocations computes a 32x32 output tile; invocation (x, y) owns rows y*4..y*4+3 and
// columns x*4..x*4+3 (16 accumulators in registers); K advances in chunks of 32 staged in workgroup
// memory. Loads outside M, N, K read 0, so any shape works. in_act = none, act = silu.
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
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
fn load_w(i: u32) -> f32 { let pair = unpack2x16float(w[i >> 1u]); return select(pair.x, pair.y, (i & 1u) == 1u); }
@group(0) @binding(3) var<storage, read> bias: array<u32>;
fn load_bias(i: u32) -> f32 { let pair = unpack2x16float(bias[i >> 1u]); return select(pair.x, pair.y, (i & 1u) == 1u); }
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

const TILE: u32 = 32u;
var<workgroup> As: array<f32, 1024>;   // [row][k], 32 x 32
var<workgroup> Ws: array<f32, 1024>;   // [col][k], 32 x 32

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
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * TILE;
  let col0 = wid.x * TILE;
  var acc: array<vec4<f32>, 4>;                     // acc[r][c]: rows lid.y*4+r, columns lid.x*4+c
  for (var k0 = 0u; k0 < P.K; k0 += TILE) {
    for (var e = 0u; e < 16u; e++) {                // 64 invocations stage 1024 values of each tile
      let idx = e * 64u + li;
      let r = idx / TILE;
      let k = k0 + idx % TILE;
      var av = 0.0;
      if (row0 + r < P.M && k < P.K) { av = in_act(a[(row0 + r) * P.K + k]); }
      As[idx] = av;
      var wv = 0.0;
      if (col0 + r < P.N && k < P.K) { wv = load_w((col0 + r) * P.K + k); }
      Ws[idx] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE; kk++) {
      let wv = vec4<f32>(Ws[(lid.x * 4u) * TILE + kk], Ws[(lid.x * 4u + 1u) * TILE + kk],
                         Ws[(lid.x * 4u + 2u) * TILE + kk], Ws[(lid.x * 4u + 3u) * TILE + kk]);
      for (var r = 0u; r < 4u; r++) {
        acc[r] += As[(lid.y * 4u + r) * TILE + kk] * wv;
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let m = row0 + lid.y * 4u + r;
    if (m >= P.M) { break; }
    let orow = (m / P.out_group) * P.out_stride + m % P.out_group;
    for (var c = 0u; c < 4u; c++) {
      let n = col0 + lid.x * 4u + c;
      if (n < P.N) { dst[orow * P.N + n] = act(acc[r][c] + load_bias(n)); }
    }
  }
}

// matmul_shared64 (workgroup-memory tiles for GPUs): matmul_shared's contract and sums (K products added
// one at a time in k order) with a 64x64 output tile per 8x8 workgroup: invocation (x, y) owns rows
// y + 8i and columns x + 8j, i, j < 8 (64 accumulators in registers), so neighbouring invocations read
// neighbouring workgroup-memory words and write neighbouring outputs. K advances 16 at a time; a and w
// tiles are staged [k][row] (coalesced global reads along k). Loads outside M, N, K read 0.
// in_act = none, act = gelu. Bindings as matmul_shared.wgsl.j2.
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

const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>;   // [k][row], 16 x 64
var<workgroup> Ws: array<f32, 1024>;   // [k][col], 16 x 64

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

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wid.y * 64u;
  let col0 = wid.x * 64u;
  var acc: array<vec4<f32>, 16>;                    // acc[2i + h][c]: row y + 8i, column x + 8(4h + c)
  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var e = 0u; e < 16u; e++) {                // 64 invocations stage 1024 values of each tile
      let idx = e * 64u + li;
      let r = idx / BK;
      let k = k0 + idx % BK;
      var av = 0.0;
      if (row0 + r < P.M && k < P.K) { av = in_act(a[(row0 + r) * P.K + k]); }
      As[(idx % BK) * 64u + r] = av;
      var wv = 0.0;
      if (col0 + r < P.N && k < P.K) { wv = load_w((col0 + r) * P.K + k); }
      Ws[(idx % BK) * 64u + r] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let wb = kk * 64u + lid.x;
      let w0 = vec4<f32>(Ws[wb], Ws[wb + 8u], Ws[wb + 16u], Ws[wb + 24u]);
      let w1 = vec4<f32>(Ws[wb + 32u], Ws[wb + 40u], Ws[wb + 48u], Ws[wb + 56u]);
      let ab = kk * 64u + lid.y;
      for (var i = 0u; i < 8u; i++) {
        let av = As[ab + 8u * i];
        acc[2u * i] += av * w0;
        acc[2u * i + 1u] += av * w1;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 8u; i++) {
    let m = row0 + lid.y + 8u * i;
    if (m >= P.M) { break; }
    let orow = (m / P.out_group) * P.out_stride + m % P.out_group;
    for (var j = 0u; j < 8u; j++) {
      let n = col0 + lid.x + 8u * j;
      if (n < P.N) { dst[orow * P.N + n] = act(acc[2u * i + j / 4u][j % 4u] + load_bias(n)); }
    }
  }
}

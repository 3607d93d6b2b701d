// attention: dst[b, i, h*HD:(h+1)*HD] = softmax(q_i . K^T / sqrt(HD)) V for one head h, HD = 32.
// bindings: 0 params {batch, T_q, T_kv, H, q_stride, q_off, kv_stride, k_off, v_off, out_stride};
//   1 q: query row (b, i) of head h at q[(b*T_q + i)*q_stride + q_off + h*HD ..];
//   2 kv: key row (b, j) at kv[(b*T_kv + j)*kv_stride + k_off + h*HD ..], value at v_off instead of k_off
//     (self-attention binds the qkv buffer twice: q_off 0, k_off D, v_off 2D);
//   3 dst (B, T_q, out_stride), heads concatenated.
// Workgroup (x, h, b): invocation lx owns query i = x*64 + lx, holds q and the output accumulator in
// registers as 8 vec4 (head dim zero-padded to a multiple of 4), and keeps a running max m and sum l
// (online softmax): the T_q x T_kv scores are never written to memory. Keys/values are staged 16 rows
// at a time in workgroup memory (wgsl/ops.py ATTENTION_TILE).
struct Params {
  batch: u32,
  T_q: u32,
  T_kv: u32,
  H: u32,
  q_stride: u32,
  q_off: u32,
  kv_stride: u32,
  k_off: u32,
  v_off: u32,
  out_stride: u32,
  _pad0: u32,
  _pad1: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

const HD: u32 = 32u;
const HD4: u32 = 8u;                        // vec4s per head row
const TK: u32 = 16u;
var<workgroup> Ks: array<vec4<f32>, 128>;
var<workgroup> Vs: array<vec4<f32>, 128>;

fn load4(base: u32, d: u32) -> vec4<f32> {         // kv[base + d .. d+3], zero past the head dim
  var v = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (d + e < HD) { v[e] = kv[base + d + e]; }
  }
  return v;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lx: u32) {
  let b = wid.z;
  let h = wid.y;
  let i = wid.x * 64u + lx;
  let valid = i < P.T_q;
  var qr: array<vec4<f32>, HD4>;
  var acc: array<vec4<f32>, HD4>;
  if (valid) {
    let qbase = (b * P.T_q + i) * P.q_stride + P.q_off + h * HD;
    for (var d = 0u; d < HD; d++) {
      qr[d / 4u][d % 4u] = q[qbase + d] * 1.767766953e-01;   // q / sqrt(HD)
    }
  }
  var m = -3.0e38;      // running max of the scores
  var l = 0.0;          // running sum of exp(score - m)
  for (var j0 = 0u; j0 < P.T_kv; j0 += TK) {
    for (var e = lx; e < TK * HD4; e += 64u) {
      let j = j0 + e / HD4;
      var kval = vec4<f32>(0.0);
      var vval = vec4<f32>(0.0);
      if (j < P.T_kv) {
        let base = (b * P.T_kv + j) * P.kv_stride + h * HD;
        kval = load4(base + P.k_off, (e % HD4) * 4u);
        vval = load4(base + P.v_off, (e % HD4) * 4u);
      }
      Ks[e] = kval;
      Vs[e] = vval;
    }
    workgroupBarrier();
    if (valid) {
      let n = min(TK, P.T_kv - j0);
      var s: array<f32, TK>;
      var m_new = m;
      for (var jj = 0u; jj < n; jj++) {
        var dv = vec4<f32>(0.0);
        for (var d = 0u; d < HD4; d++) { dv += qr[d] * Ks[jj * HD4 + d]; }
        let dot_ = dv.x + dv.y + dv.z + dv.w;
        s[jj] = dot_;
        m_new = max(m_new, dot_);
      }
      let corr = exp(m - m_new);      // rescale what was accumulated under the old max
      l *= corr;
      for (var d = 0u; d < HD4; d++) { acc[d] *= corr; }
      for (var jj = 0u; jj < n; jj++) {
        let pj = exp(s[jj] - m_new);
        l += pj;
        for (var d = 0u; d < HD4; d++) { acc[d] += pj * Vs[jj * HD4 + d]; }
      }
      m = m_new;
    }
    workgroupBarrier();
  }
  if (valid) {
    let obase = (b * P.T_q + i) * P.out_stride + h * HD;
    let inv_l = 1.0 / l;
    for (var d = 0u; d < HD; d++) { dst[obase + d] = acc[d / 4u][d % 4u] * inv_l; }
  }
}

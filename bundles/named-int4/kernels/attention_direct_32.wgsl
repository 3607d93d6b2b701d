// attention_direct: attention's contract and arithmetic (the same online softmax over blocks of 16
// keys, in the same order: the same rounding), but every invocation reads keys and values straight
// from the storage buffer: no workgroup memory, no barriers, and 16 queries per workgroup (more
// workgroups for the CPU adapters' threads). GPUs prefer attention's staged tiles; the plan picks.
// bindings: 0 params {batch, T_q, T_kv, H, q_stride, q_off, kv_stride, k_off, v_off, out_stride};
//   1 q: query row (b, i) of head h at q[(b*T_q + i)*q_stride + q_off + h*HD ..];
//   2 kv: key row (b, j) at kv[(b*T_kv + j)*kv_stride + k_off + h*HD ..], value at v_off instead of k_off
//     (self-attention binds the qkv buffer twice: q_off 0, k_off D, v_off 2D);
//   3 dst (B, T_q, out_stride), heads concatenated.
// Workgroup (x, h, b): invocation lx owns query i = x*16 + lx, holds q and the output accumulator in
// registers as 8 vec4 (head dim zero-padded to a multiple of 4), and keeps a running max m and sum l
// (online softmax): the T_q x T_kv scores are never written to memory. Keys/values are staged 16 rows
// at a time in workgroup memory (wgsl/ops.py ATTENTION_TILE) in attention; here they are read in place.
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

fn load4(base: u32, d: u32) -> vec4<f32> {         // kv[base + d .. d+3], zero past the head dim
  var v = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (d + e < HD) { v[e] = kv[base + d + e]; }
  }
  return v;
}

@compute @workgroup_size(16, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lx: u32) {
  let b = wid.z;
  let h = wid.y;
  let i = wid.x * 16u + lx;
  if (i >= P.T_q) { return; }                       // no barriers: idle invocations may leave
  var qr: array<vec4<f32>, HD4>;
  var acc: array<vec4<f32>, HD4>;
  {
    let qbase = (b * P.T_q + i) * P.q_stride + P.q_off + h * HD;
    for (var d = 0u; d < HD; d++) {
      qr[d / 4u][d % 4u] = q[qbase + d] * 1.767766953e-01;   // q / sqrt(HD)
    }
  }
  var m = -3.0e38;      // running max of the scores
  var l = 0.0;          // running sum of exp(score - m)
  for (var j0 = 0u; j0 < P.T_kv; j0 += TK) {
    let n = min(TK, P.T_kv - j0);
    var s: array<f32, TK>;
    var m_new = m;
    for (var jj = 0u; jj < n; jj++) {
      let kbase = (b * P.T_kv + j0 + jj) * P.kv_stride + h * HD + P.k_off;
      var dv = vec4<f32>(0.0);
      for (var d = 0u; d < HD4; d++) { dv += qr[d] * load4(kbase, d * 4u); }
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
      let vbase = (b * P.T_kv + j0 + jj) * P.kv_stride + h * HD + P.v_off;
      for (var d = 0u; d < HD4; d++) { acc[d] += pj * load4(vbase, d * 4u); }
    }
    m = m_new;
  }
  let obase = (b * P.T_q + i) * P.out_stride + h * HD;
  let inv_l = 1.0 / l;
  for (var d = 0u; d < HD; d++) { dst[obase + d] = acc[d / 4u][d % 4u] * inv_l; }
}

// attention_q4: attention's contract and arithmetic (each query's online softmax over blocks of 16 keys,
// in the same order as attention and attention_direct: the same rounding, the same bits), but every
// invocation owns 4 queries, so each key or value row read from storage serves 4 queries (the register
// blocking of the matmul kernels). Rows are read and written as vec4: the exporter offers it only where the
// head dim, the strides and the offsets are multiples of 4. No workgroup memory, no barriers: the design for
// the CPU adapters (lavapipe, SwiftShader: 4-6x attention_direct at 64 tokens, head dim 32); the plan picks.
// bindings: 0 params {batch, T_q, T_kv, H, q_stride, q_off, kv_stride, k_off, v_off, out_stride} (f32 units);
//   1 q: query row (b, i) of head h at q[(b*T_q + i)*q_stride + q_off + h*HD ..] (in vec4s: / 4);
//   2 kv: key row (b, j) at kv[(b*T_kv + j)*kv_stride + k_off + h*HD ..], value at v_off instead of k_off;
//   3 dst (B, T_q, out_stride), heads concatenated.
// Workgroup (x, h, b): invocation lx owns queries i0 + r*8, r < 4, i0 = x*32 + lx (past T_q: a copy of
// the last query, never stored); q and the 4 accumulators in registers as 8 vec4 each; the 4 running
// maxima, sums and scores are the components of vec4s.
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
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
fn load4_q(i: u32) -> vec4<f32> { return q[i]; }
@group(0) @binding(2) var<storage, read> kv: array<vec4<f32>>;
fn load4_kv(i: u32) -> vec4<f32> { return kv[i]; }
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;
fn load4_dst(i: u32) -> vec4<f32> { return dst[i]; }

const HD4: u32 = 8u;
const TK: u32 = 16u;
const WG: u32 = 8u;

@compute @workgroup_size(8, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lx: u32) {
  let b = wid.z;
  let h = wid.y;
  let i0 = wid.x * 4u * WG + lx;                    // queries i0, i0 + WG, i0 + 2 WG, i0 + 3 WG
  var qr: array<vec4<f32>, 32>;          // [r * HD4 + d]
  var acc: array<vec4<f32>, 32>;
  for (var r = 0u; r < 4u; r++) {
    let i = min(i0 + r * WG, P.T_q - 1u);
    let qbase = ((b * P.T_q + i) * P.q_stride + P.q_off) / 4u + h * HD4;
    for (var d = 0u; d < HD4; d++) {
      qr[r * HD4 + d] = q[qbase + d] * 1.767766953e-01;
      acc[r * HD4 + d] = vec4<f32>(0.0);
    }
  }
  let kv4 = P.kv_stride / 4u;
  let koff = P.k_off / 4u + h * HD4;
  let voff = P.v_off / 4u + h * HD4;
  var m = vec4<f32>(-3.0e38);     // running max of the scores, query r in component r
  var l = vec4<f32>(0.0);
  for (var j0 = 0u; j0 < P.T_kv; j0 += TK) {
    let n = min(TK, P.T_kv - j0);
    var s: array<vec4<f32>, TK>;
    var m_new = m;
    for (var jj = 0u; jj < n; jj++) {
      let kbase = (b * P.T_kv + j0 + jj) * kv4 + koff;
      var dv0 = vec4<f32>(0.0);
      var dv1 = vec4<f32>(0.0);
      var dv2 = vec4<f32>(0.0);
      var dv3 = vec4<f32>(0.0);
      for (var d = 0u; d < HD4; d++) {
        let k4 = kv[kbase + d];
        dv0 += qr[d] * k4;
        dv1 += qr[HD4 + d] * k4;
        dv2 += qr[2u * HD4 + d] * k4;
        dv3 += qr[3u * HD4 + d] * k4;
      }
      let sc = vec4<f32>(dv0.x + dv0.y + dv0.z + dv0.w, dv1.x + dv1.y + dv1.z + dv1.w,
                         dv2.x + dv2.y + dv2.z + dv2.w, dv3.x + dv3.y + dv3.z + dv3.w);
      s[jj] = sc;
      m_new = max(m_new, sc);
    }
    let corr = exp(m - m_new);
    l *= corr;
    for (var d = 0u; d < HD4; d++) {
      acc[d] *= corr.x;
      acc[HD4 + d] *= corr.y;
      acc[2u * HD4 + d] *= corr.z;
      acc[3u * HD4 + d] *= corr.w;
    }
    for (var jj = 0u; jj < n; jj++) {
      let pj = exp(s[jj] - m_new);
      l += pj;
      let vbase = (b * P.T_kv + j0 + jj) * kv4 + voff;
      for (var d = 0u; d < HD4; d++) {
        let v4 = kv[vbase + d];
        acc[d] += pj.x * v4;
        acc[HD4 + d] += pj.y * v4;
        acc[2u * HD4 + d] += pj.z * v4;
        acc[3u * HD4 + d] += pj.w * v4;
      }
    }
    m = m_new;
  }
  let inv_l = 1.0 / l;
  for (var r = 0u; r < 4u; r++) {
    let i = i0 + r * WG;
    if (i < P.T_q) {
      let obase = (b * P.T_q + i) * (P.out_stride / 4u) + h * HD4;
      for (var d = 0u; d < HD4; d++) { dst[obase + d] = acc[r * HD4 + d] * inv_l[r]; }
    }
  }
}

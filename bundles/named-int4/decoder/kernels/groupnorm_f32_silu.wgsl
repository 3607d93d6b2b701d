// groupnorm: dst = act(GroupNorm(src) * norm_w[c] + norm_b[c]), act = silu; NCHW activations.
// bindings: 0 params {rows, G, C, HW, eps_bits}; 1 src (batch, C, H, W); 2 norm_w (C,); 3 norm_b (C,);
//   4 dst like src. eps = bitcast<f32>(eps_bits) (the VAE's 1e-6 as an f32).
// One workgroup of 256 invocations per (item, group) row: the C / G channels of a group are one contiguous
// span of C / G * HW values. Mean first, then the variance of (x - mean) (two passes, as torch: no
// E[x^2] - E[x]^2 cancellation), then normalise, scale, shift and SiLU x / (1 + exp(-x)).
struct Params {
  rows: u32,
  G: u32,
  C: u32,
  HW: u32,
  eps_bits: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> norm_w: array<f32>;
fn load_norm_w(i: u32) -> f32 { return norm_w[i]; }
@group(0) @binding(3) var<storage, read> norm_b: array<f32>;
fn load_norm_b(i: u32) -> f32 { return norm_b[i]; }
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

var<workgroup> red: array<f32, 256>;

fn wg_sum(v: f32, li: u32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let r = wid.x;
  let cpg = P.C / P.G;
  let count = cpg * P.HW;
  let c0 = (r % P.G) * cpg;
  let base = ((r / P.G) * P.C + c0) * P.HW;
  let inv_n = 1.0 / f32(count);
  var s = 0.0;
  for (var i = li; i < count; i += 256u) { s += src[base + i]; }
  let mean = wg_sum(s, li) * inv_n;
  var v = 0.0;
  for (var i = li; i < count; i += 256u) { let d = src[base + i] - mean; v += d * d; }
  let rstd = 1.0 / sqrt(wg_sum(v, li) * inv_n + bitcast<f32>(P.eps_bits));
  for (var c = 0u; c < cpg; c++) {                  // channel by channel: no integer division per value
    let wc = load_norm_w(c0 + c);
    let bc = load_norm_b(c0 + c);
    let cbase = base + c * P.HW;
    for (var i = li; i < P.HW; i += 256u) {
      let y = (src[cbase + i] - mean) * rstd;
      let z = y * wc + bc;
      dst[cbase + i] = z / (1.0 + exp(-z));
    }
  }
}

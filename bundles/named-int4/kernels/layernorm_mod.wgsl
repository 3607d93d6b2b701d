// layernorm_mod: dst[r, :] = LN(x[row_in(r), :]) * (1 + scale[b]) + shift[b]   (LN without affine, eps 1e-6)
// bindings: 0 params {rows, D, T, T_in, has_mod, mod_stride, shift_off, scale_off}; 1 x (B*T_in, D);
//   2 ada (B, mod_stride): the adaLN projection, shift at shift_off, scale at scale_off (ignored if
//   has_mod = 0); 3 dst (rows = B*T, D), compact.
// Row r is item b = r / T, token t = r % T, read from input row b * T_in + t (T_in = T + 2 drops the
// in-context condition tokens before the final layer). One workgroup of 64 invocations per row;
// mean first, then the variance of (x - mean) (two passes, as torch, no E[x^2] - E[x]^2 cancellation).
struct Params {
  rows: u32,
  D: u32,
  T: u32,
  T_in: u32,
  has_mod: u32,
  mod_stride: u32,
  shift_off: u32,
  scale_off: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> ada: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

var<workgroup> red: array<f32, 64>;

fn wg_sum(v: f32, li: u32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let r = wid.x;
  let b = r / P.T;
  let base = (b * P.T_in + r % P.T) * P.D;
  let inv_d = 1.0 / f32(P.D);
  var s = 0.0;
  for (var d = li; d < P.D; d += 64u) { s += x[base + d]; }
  let mean = wg_sum(s, li) * inv_d;
  var v = 0.0;
  for (var d = li; d < P.D; d += 64u) { let c = x[base + d] - mean; v += c * c; }
  let rstd = 1.0 / sqrt(wg_sum(v, li) * inv_d + 1e-6);
  let mrow = b * P.mod_stride;
  for (var d = li; d < P.D; d += 64u) {
    var y = (x[base + d] - mean) * rstd;
    if (P.has_mod == 1u) {
      y = y * (1.0 + ada[mrow + P.scale_off + d]) + ada[mrow + P.shift_off + d];   // modulate
    }
    dst[r * P.D + d] = y;
  }
}

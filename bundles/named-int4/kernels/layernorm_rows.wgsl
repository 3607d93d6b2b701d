// layernorm_rows: layernorm_mod's contract (the same params, bindings and result up to rounding), one
// invocation per row instead of a workgroup per row: no workgroup memory and no barriers, which the CPU
// adapters (lavapipe, SwiftShader) execute slowly; GPUs prefer layernorm_mod. The plan picks by timing.
// Sums run over 4 interleaved accumulators (elements d = 4k + e), then (s0 + s1) + (s2 + s3): two passes
// (mean, then the variance of x - mean), as layernorm_mod.
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

@compute @workgroup_size(16, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= P.rows) { return; }
  let b = r / P.T;
  let base = (b * P.T_in + r % P.T) * P.D;
  let inv_d = 1.0 / f32(P.D);
  var s = vec4<f32>(0.0);
  var d = 0u;
  for (; d + 4u <= P.D; d += 4u) {
    s += vec4<f32>(x[base + d], x[base + d + 1u], x[base + d + 2u], x[base + d + 3u]);
  }
  for (var e = 0u; d + e < P.D; e++) { s[e] += x[base + d + e]; }
  let mean = ((s.x + s.y) + (s.z + s.w)) * inv_d;
  var v = vec4<f32>(0.0);
  d = 0u;
  for (; d + 4u <= P.D; d += 4u) {
    let c = vec4<f32>(x[base + d], x[base + d + 1u], x[base + d + 2u], x[base + d + 3u]) - mean;
    v += c * c;
  }
  for (var e = 0u; d + e < P.D; e++) { let c = x[base + d + e] - mean; v[e] += c * c; }
  let rstd = 1.0 / sqrt(((v.x + v.y) + (v.z + v.w)) * inv_d + 1e-6);
  let mrow = b * P.mod_stride;
  for (var k = 0u; k < P.D; k++) {
    var y = (x[base + k] - mean) * rstd;
    if (P.has_mod == 1u) {
      y = y * (1.0 + ada[mrow + P.scale_off + k]) + ada[mrow + P.shift_off + k];   // modulate
    }
    dst[r * P.D + k] = y;
  }
}

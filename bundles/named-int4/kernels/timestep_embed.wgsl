// timestep_embed: dst[b, :] = [cos(t_b f_i) | sin(t_b f_i)], i < half (dit_model.model.timestep_frequencies)
// bindings: 0 params {count = B*2*half, half}; 1 t (B,) u32; 2 freqs (half,) f32, the float32 table the
//   model computes; 3 dst (B, 2*half). Invocation: 4 elements.
// The argument t*f is one f32 product, as in torch. cos/sin are evaluated here rather than with the
// built-ins, whose accuracy WGSL only bounds on [-pi, pi] (t*f reaches 999): Cody-Waite reduction by
// pi/2 in three parts, then the Cephes single-precision polynomials on [-pi/4, pi/4].
struct Params {
  count: u32,
  half: u32,
  _pad0: u32,
  _pad1: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> t: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn sincos(x: f32) -> vec2<f32> {
  let k = round(x * 0.63661977236758134);           // nearest multiple of pi/2
  let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.549789948768648e-8;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let q = u32(i32(k) & 3);
  var cs = vec2<f32>(c, s);                         // (cos x, sin x) for each quadrant
  if (q == 1u) { cs = vec2<f32>(-s, c); }
  if (q == 2u) { cs = vec2<f32>(-c, -s); }
  if (q == 3u) { cs = vec2<f32>(s, -c); }
  return cs;
}

fn element(idx: u32) {
  let j = idx % (2u * P.half);
  let b = idx / (2u * P.half);
  let arg = f32(t[b]) * freqs[j % P.half];
  let cs = sincos(arg);
  dst[idx] = select(cs.y, cs.x, j < P.half);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

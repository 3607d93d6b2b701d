// gated_residual: h[r, d] += gate[b, d] * y[r, d]  (adaLN-Zero: x + gate_msa * attn(...)), or h += y.
// bindings: 0 params {count = rows*D, D, T, has_gate, mod_stride, gate_off}; 1 h (rows, D) read-write;
//   2 y (rows, D); 3 ada (B, mod_stride), gate at gate_off (ignored if has_gate = 0). Row r is item r / T.
// Invocation: 4 elements idx of the flat (rows, D) array.
struct Params {
  count: u32,
  D: u32,
  T: u32,
  has_gate: u32,
  mod_stride: u32,
  gate_off: u32,
  _pad0: u32,
  _pad1: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> ada: array<f32>;

fn element(idx: u32) {
  let d = idx % P.D;
  let b = idx / P.D / P.T;
  var g = 1.0;
  if (P.has_gate == 1u) { g = ada[b * P.mod_stride + P.gate_off + d]; }
  h[idx] = h[idx] + g * y[idx];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

// pos_embed_add: h[b, t, :] += pos_embed[t, :] for the T patch tokens (fixed 2D sin-cos table).
// bindings: 0 params {count = B*T*D, T, D, T_buf}; 1 h (B, T_buf, D) read-write (T_buf = T + 2 in-context);
//   2 pos (T, D) weights. Invocation: 4 elements of the (B, T, D) patch tokens.
struct Params {
  count: u32,
  T: u32,
  D: u32,
  T_buf: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
fn load_pos(i: u32) -> f32 { let pair = unpack2x16float(pos[i >> 1u]); return select(pair.x, pair.y, (i & 1u) == 1u); }

fn element(idx: u32) {
  let d = idx % P.D;
  let t = (idx / P.D) % P.T;
  let b = idx / (P.D * P.T);
  let at = (b * P.T_buf + t) * P.D + d;
  h[at] = h[at] + load_pos(t * P.D + d);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

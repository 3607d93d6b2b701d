// label_embed: y_emb[b, :] = sum over the L label levels of table[y[b L + l], :], c[b, :] = t_emb[b, :] + y_emb[b, :]
// label_embed_q8 (int8 bundles): the table int8, dequantised row by row: table[r, d] = q[r, d] * scale[r].
// bindings: 0 params {count = B*D, D, rows = table rows (num_classes + L), levels = L}; 1 y (B L,) u32 table rows
//   (the host adds each level's first row to its id); 2 table (rows, D) int8, 4 values a u32 word (the first in the
//   low byte); 3 scale (rows,) f32, one per row; 4 t_emb (B, D); 5 y_emb (B, D) out; 6 c (B, D) out. A row >= rows
//   reads the last row. Each value is q * scale (q exact in f32: one rounding); the L rows are added in level order.
// Invocation: 4 elements of (B, D).
struct Params {
  count: u32,
  D: u32,
  rows: u32,
  levels: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> y: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> t_emb: array<f32>;
@group(0) @binding(5) var<storage, read_write> y_emb: array<f32>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;

// value i of the table (row i / D): byte i & 3 of word i / 4, sign-extended, times its row's scale
fn load_table(i: u32) -> f32 {
  let q = bitcast<i32>(table[i >> 2u] << (24u - 8u * (i & 3u))) >> 24u;
  return f32(q) * scale[i / P.D];
}

fn element(idx: u32) {
  let b = idx / P.D;
  let d = idx % P.D;
  var e = load_table(min(y[b * P.levels], P.rows - 1u) * P.D + d);
  for (var l = 1u; l < P.levels; l++) {
    e = e + load_table(min(y[b * P.levels + l], P.rows - 1u) * P.D + d);
  }
  y_emb[idx] = e;
  c[idx] = t_emb[idx] + e;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

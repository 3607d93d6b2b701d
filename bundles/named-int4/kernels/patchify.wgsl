// patchify: img (B, C, I, I) -> dst (B*T, C*p*p), T = (I/p)^2, columns ordered (c, pr, pc) like the
// flattened Conv2d weight of x_embedder.proj, so the patch embedding is then a matmul.
// bindings: 0 params {count = B*C*I*I, C, I, p}; 1 img; 2 dst. Invocation: 4 output elements.
struct Params {
  count: u32,
  C: u32,
  I: u32,
  p: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> img: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn element(idx: u32) {
  let G = P.I / P.p;
  var rem = idx;
  let pc = rem % P.p; rem /= P.p;
  let pr = rem % P.p; rem /= P.p;
  let c = rem % P.C; rem /= P.C;
  let gc = rem % G; rem /= G;
  let gr = rem % G;
  let b = rem / G;
  dst[idx] = img[((b * P.C + c) * P.I + gr * P.p + pr) * P.I + gc * P.p + pc];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

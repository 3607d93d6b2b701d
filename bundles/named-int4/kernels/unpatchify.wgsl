// unpatchify: src (B*T, p*p*C) with columns ordered (pr, pc, c) -> dst (B, C, I, I)   (DiT.unpatchify)
// bindings: 0 params {count = B*C*I*I, C (= C_out), I, p}; 1 src; 2 dst. Invocation: 4 output pixels.
struct Params {
  count: u32,
  C: u32,
  I: u32,
  p: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn element(idx: u32) {
  let G = P.I / P.p;
  let xx = idx % P.I;
  let yy = (idx / P.I) % P.I;
  let c = (idx / (P.I * P.I)) % P.C;
  let b = idx / (P.I * P.I * P.C);
  let token = (b * G + yy / P.p) * G + xx / P.p;
  dst[idx] = src[((token * P.p + yy % P.p) * P.p + xx % P.p) * P.C + c];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

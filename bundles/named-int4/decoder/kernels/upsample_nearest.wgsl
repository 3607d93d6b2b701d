// upsample_nearest: dst[n, c, y, x] = src[n, c, y / 2, x / 2] (nearest-neighbour 2x, what F.interpolate
// scale_factor=2 mode="nearest" computes). bindings: 0 params {count = batch * C * 2H * 2W, H, W} (the input's
// H, W); 1 src (batch, C, H, W); 2 dst (batch, C, 2H, 2W). A copy: exact.
struct Params {
  count: u32,
  H: u32,
  W: u32,
  _pad0: u32,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn element(idx: u32) {
  let W2 = 2u * P.W;
  let x = idx % W2;
  let y = (idx / W2) % (2u * P.H);
  let plane = idx / (W2 * 2u * P.H);
  dst[idx] = src[(plane * P.H + y / 2u) * P.W + x / 2u];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

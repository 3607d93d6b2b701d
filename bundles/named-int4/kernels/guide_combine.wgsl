// guide_combine: every guide of ditformat/guidance.py (Guide, make_plan), eps_g[n] = mean_k sum_j a_j eps(x_k, y_j)[n];
// the variance half (learned sigma, channels C..C_out) is mean_k out[k, var_branch, n].
// bindings: 0 params {count = N*C_out*P2, C, C_out, P2 = I*I}; 1 st (K, J, N, var_branch, coef a_j);
//   2 model_out (K, J, N, C_out, P2); 3 guided (N, C_out, P2). Invocation: 4 output elements.
struct Params {
  count: u32,
  C: u32,
  C_out: u32,
  P2: u32,
};
struct Step {
  t: u32, i: u32, seed: u32, zero: u32,
  K: u32, J: u32, N: u32, var_branch: u32,
  flags: u32, _p0: u32, _p1: u32, _p2: u32,
  sqrt_abar: f32, sqrt_1m_abar: f32, coef1: f32, coef2: f32,
  log_beta: f32, log_post_var: f32, sqrt_abar_prev: f32, ddim_dir: f32,
  sigma: f32, perturb: f32, _p3: f32, _p4: f32,
  coef: array<vec4<f32>, 2>,
};
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> model_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> guided: array<f32>;

fn element(idx: u32) {
  let pix = idx % P.P2;
  let ch = (idx / P.P2) % P.C_out;
  let n = idx / (P.P2 * P.C_out);
  var total = 0.0;
  for (var k = 0u; k < st.K; k++) {
    if (ch < P.C) {
      var s = 0.0;
      for (var j = 0u; j < st.J; j++) {
        s += st.coef[j / 4u][j % 4u] * model_out[(((k * st.J + j) * st.N + n) * P.C_out + ch) * P.P2 + pix];
      }
      total += s;
    } else {
      total += model_out[(((k * st.J + st.var_branch) * st.N + n) * P.C_out + ch) * P.P2 + pix];
    }
  }
  guided[idx] = total / f32(st.K);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = 0u; e < 4u; e++) {
    let idx = wid.x * 1024u + e * 256u + li;     // consecutive invocations touch consecutive elements
    if (idx >= P.count) { return; }
    element(idx);
  }
}

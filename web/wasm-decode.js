// wasm-decode.js: a latent bundle's VAE decoder (decoder/, docs/vae.md) on the WebAssembly kernels, run in the
// worker (ditweb-worker.js) beside the DiT's WasmEngine, in the same module memory: the twin of web/decode.js's
// WebGPU Decoder. decoder/ is verified by web/decode.js before it gets here; its program runs once per image after
// the last step, through the buffers of one image.
//
// The decoder's kernels are the ops conv2d (variant k = 1 or 3), groupnorm (act none or silu) and upsample_nearest
// of wasm/kernels.c; conv2d_q8 (an int8 decoder) runs as conv2d on weights dequantised at load (q * scale, per
// output channel). A decoder with another kernel (bmm and softmax_rows: a mid-block attention) has no WebAssembly
// version: wasmDecoderProblem says so in one line, and the page checks it before it starts the worker.

import { OP_PARAMS } from "./bundle-layout.js";
import { evaluate } from "./forms.js";
import { checkExtents, named } from "./wasm-runtime.js";

const GN_ACT = { none: 0, silu: 1 };
// each decoder op the WebAssembly kernels run: the function, and the extra arguments its variant passes (null:
// a variant it does not have)
const OPS = {
  conv2d: { fn: "op_conv2d", extra: (v) => ([1, 3].includes(v.k) ? [v.k] : null) },
  conv2d_q8: { fn: "op_conv2d", extra: (v) => ([1, 3].includes(v.k) ? [v.k] : null) },
  groupnorm: { fn: "op_groupnorm", extra: (v) => (Object.prototype.hasOwnProperty.call(GN_ACT, v.act ?? "none") ? [GN_ACT[v.act ?? "none"]] : null) },
  upsample_nearest: { fn: "op_upsample_nearest", extra: () => [] },
};

// null when these kernels run every kernel of the decoder manifest m, else one line saying which one they do not
export function wasmDecoderProblem(m) {
  for (const [name, k] of Object.entries(m.kernels)) {
    const op = OPS[k.op];
    if (!op) return `decoder kernel ${name} (op ${k.op}) has no WebAssembly version (it has ${Object.keys(OPS).join(", ")})`;
    if (!op.extra(k.variant || {})) return `decoder kernel ${name}: op ${k.op} with variant ${JSON.stringify(k.variant)} has no WebAssembly version`;
  }
  return null;
}

export class WasmDecoder {
  // engine: a WasmEngine with its weights loaded (the decoder's weights and one image's activations go above
  // them, and the engine's batches above those); manifest and tensors: decoder/ as web/decode.js verified it.
  static create(engine, manifest, tensors) {
    const problem = wasmDecoderProblem(manifest);     // before any allocation
    if (problem) throw new Error(problem);
    const d = new WasmDecoder(engine, manifest);
    d.loadWeights(tensors);
    d.compile();
    engine.weightsTop = engine.top;
    engine.batch = null;
    return d;
  }

  constructor(engine, manifest) {
    this.engine = engine;
    this.manifest = manifest;
    /** @type {Record<string, {ptr: number, count: number}>} */
    this.weights = {};
    this.calls = [];
    this.ptr = {};
  }

  // Weights as f32: f16 unpacked (f16_to_f32), int8 convolutions dequantised (q * scale of their output channel)
  // into the conv2d layout (C_in k^2, C_out4). Raw bytes pass through scratch above the weights.
  loadWeights(tensors) {
    const e = this.engine, m = this.manifest;
    const q8 = {};      // int8 weight buffer -> its scale buffer and C_out4, from the dispatches that read it
    for (const d of m.program) {
      if (m.kernels[d.kernel].op !== "conv2d_q8") continue;
      const p = named(m.kernels[d.kernel], d.params.map((f) => evaluate(f, 1, 1)));
      q8[d.bindings[1]] = { scale: d.bindings[2], C_out: p.C_out, C_out4: p.C_out4 };
    }
    let scratch = 0;
    for (const [name, spec] of Object.entries(m.buffers)) {
      if (spec.kind !== "weight") continue;
      const count = tensors[name].nbytes / (spec.dtype === "f16" ? 2 : spec.dtype === "i8" ? 1 : 4);
      this.weights[name] = { ptr: e.alloc(4 * count + 16), count };
      scratch = Math.max(scratch, tensors[name].nbytes);
    }
    const top = e.top, raw = e.alloc(scratch);
    for (const [name, w] of Object.entries(this.weights)) {
      const spec = m.buffers[name], t = tensors[name];
      const bytes = new Uint8Array(t.buf, t.offset, t.nbytes);
      if (spec.dtype === "f16") {
        new Uint8Array(e.memory.buffer, raw, t.nbytes).set(bytes);
        e.x.f16_to_f32(raw, w.ptr, w.count);
      } else if (spec.dtype === "f32") {
        new Uint8Array(e.memory.buffer, w.ptr, t.nbytes).set(bytes);
      }
    }
    for (const [name, q] of Object.entries(q8)) this.dequantise(tensors[name], tensors[q.scale], this.weights[name], q);
    e.top = top;
  }

  dequantise(t, scaleT, w, { C_out, C_out4 }) {
    const qv = new Int8Array(t.buf, t.offset, t.nbytes);
    const scale = new Float32Array(scaleT.buf.slice(scaleT.offset, scaleT.offset + scaleT.nbytes));
    if (scale.length !== C_out || qv.length % C_out4) throw new Error(`int8 weight of ${C_out} channels: ${qv.length} values, ${scale.length} scales`);
    const out = this.engine.f32(w.ptr, qv.length);
    for (let i = 0; i < qv.length; i++) {
      const c = i % C_out4;
      out[i] = c < C_out ? qv[i] * scale[c] : 0;
    }
  }

  // One image's activations and the program as (function, arguments); every dispatch's reach checked first.
  compile() {
    const e = this.engine, m = this.manifest;
    const elements = {};
    for (const [name, b] of Object.entries(m.buffers)) {
      if (b.kind === "weight") {
        this.ptr[name] = this.weights[name].ptr;
        elements[name] = this.weights[name].count;
      } else {
        elements[name] = evaluate(b.elements, 1, 1);
        this.ptr[name] = e.alloc(4 * elements[name] + 16);
      }
    }
    this.calls = m.program.map((d, i) => {
      const kernel = m.kernels[d.kernel];
      const v = kernel.variant || {};
      const p = named(kernel, d.params.map((f) => evaluate(f, 1, 1)));
      checkExtents(`decoder program[${i}]`, d, kernel, p, elements, 1, 1);
      const params = OP_PARAMS[kernel.op].map((n) => p[n]);
      const at = e.alloc(4 * Math.max(params.length, 1));
      e.u32(at, params.length).set(params);
      const bindings = d.bindings.map((n) => this.ptr[n]);
      if (kernel.op === "conv2d_q8") bindings.splice(2, 1);   // src, wq, scale, bias, res, dst: the scale is folded in
      return { fn: e.x[OPS[kernel.op].fn], args: [at, ...bindings, ...OPS[kernel.op].extra(v)] };
    });
  }

  // latents: Float32Array (N, L, h, w) as sampled -> {image: Float32Array (N, C, H, W), not clamped, ms}
  decode(latents, N) {
    const e = this.engine, m = this.manifest;
    const per = m.latent_shape.reduce((a, b) => a * b, 1), perImage = m.image_shape.reduce((a, b) => a * b, 1);
    if (latents.length !== N * per) throw new RangeError(`decode: ${latents.length} values for ${N} latents of ${per}`);
    const image = new Float32Array(N * perImage);
    const started = performance.now();
    for (let n = 0; n < N; n++) {
      e.f32(this.ptr[m.io.latent], per).set(latents.subarray(n * per, (n + 1) * per));
      for (const c of this.calls) c.fn(...c.args);
      image.set(e.f32(this.ptr[m.io.image], perImage), n * perImage);
    }
    return { image, ms: performance.now() - started };
  }
}

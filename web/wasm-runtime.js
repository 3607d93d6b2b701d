// wasm-runtime.js: run a verified ditweb bundle's programs with the WebAssembly SIMD kernels
// (wasm/kernels.c, built into ditweb-kernels.wasm). No DOM and no worker code here: the Web Worker
// (ditweb-worker.js) and tests drive it.
//
// The same manifest program as the WebGPU path: every dispatch names a kernel, the kernel names an op,
// and the op's function op_<name> in the wasm module takes (params, bindings...) with the dispatch's
// params evaluated at the batch (B, N) and its buffers as pointers into the module's memory.
// Nothing here knows the model. Params reach the kernels in the order of OP_PARAMS (bundle-layout.js, generated
// from ditformat/layout.py, like the PARAMS_<op> macros kernels.c reads them with), picked by name.

import { OP_PARAMS } from "./bundle-layout.js";
import { evaluate } from "./forms.js";
import { CONTROL_BYTES, PART_FUNCTIONS, STACK_BYTES, ThreadPool } from "./wasm-threads.js";

const ACT = { none: 0, gelu: 1, silu: 2 };
const IN_ACT = { none: 0, silu: 1 };
// ops that share a function: the tiled matmul variants compute the same product
const OP_FUNCTION = { matmul_shared: "matmul" };
// ops a thread pool splits (wasm-threads.js): their op_<name>_part takes (..., part, parts)
const SPLIT = Object.fromEntries(PART_FUNCTIONS.map((name, i) => [name.replace(/^op_|_part$/g, ""), i]));
const MAX_MEMORY_PAGES = 16384;   // the mt module's maximum (wasm/build.sh: --max-memory, 1 GiB)

// Elements each binding of a dispatch reaches (largest index + 1), from its params (named as in the
// manifest's kernel) and the batch; the divisors it uses must be positive. WebGPU clamps an access
// outside a buffer; here every buffer shares one memory, so a manifest whose params overrun a buffer
// is refused before it runs instead of reading its neighbours. null: nothing to check.
const cdiv = (a, b) => Math.ceil(a / b);
const EXTENTS = {
  matmul: (p, hd) => {
    const last = p.M - 1;
    return { divisors: [p.out_group], need: [p.M * p.K, p.N * p.K, p.N, (Math.floor(last / p.out_group) * p.out_stride + last % p.out_group + 1) * p.N] };
  },
  layernorm_mod: (p) => {
    const lastB = Math.floor((p.rows - 1) / p.T);
    const xRows = Math.max(lastB * p.T_in + (p.rows - 1) % p.T, lastB > 0 ? (lastB - 1) * p.T_in + p.T - 1 : 0) + 1;
    const ada = p.has_mod === 1 ? lastB * p.mod_stride + Math.max(p.shift_off, p.scale_off) + p.D : 0;
    return { divisors: [p.T], need: [xRows * p.D, ada, p.rows * p.D] };
  },
  attention: (p, hd) => ({
    divisors: [],
    need: [(p.batch * p.T_q - 1) * p.q_stride + p.q_off + p.H * hd, (p.batch * p.T_kv - 1) * p.kv_stride + Math.max(p.k_off, p.v_off) + p.H * hd,
           (p.batch * p.T_q - 1) * p.out_stride + p.H * hd],
  }),
  gated_residual: (p) => ({
    divisors: [p.D, p.T],
    need: [p.count, p.count, p.has_gate === 1 ? (cdiv(p.count, p.D * p.T) - 1) * p.mod_stride + p.gate_off + p.D : 0],
  }),
  patchify: (p) => ({ divisors: [p.p, p.C * p.I * p.I], need: [p.count, p.count] }),
  unpatchify: (p) => ({ divisors: [p.p, p.C * p.I * p.I], need: [p.count, p.count] }),
  pos_embed_add: (p) => ({ divisors: [p.D * p.T], need: [(cdiv(p.count, p.D * p.T) - 1) * p.T_buf * p.D + p.T * p.D, p.T * p.D] }),
  timestep_embed: (p) => ({ divisors: [p.half], need: [cdiv(p.count, 2 * p.half), p.half, p.count] }),
  label_embed: (p) => ({ divisors: [p.D, p.rows, p.levels], need: [cdiv(p.count, p.D) * p.levels, p.rows * p.D, p.count, p.count, p.count] }),
  cond_tokens: (p) => ({ divisors: [p.D], need: [p.count / 2, p.count / 2, (cdiv(p.count, 2 * p.D) - 1) * p.T_dst * p.D + (p.tok0 + 2) * p.D] }),
  rng_normal: (p) => ({ divisors: [], need: [0, p.count] }),
  expand_batch: (p, hd, B, N) => ({ divisors: [p.P], need: [0, N * p.P, p.count, p.B] }),
  guide_combine: (p, hd, B) => ({ divisors: [p.P2, p.C_out], need: [0, B * p.C_out * p.P2, p.count] }),
  sampler_step: (p, hd, B, N) => ({ divisors: [p.P2, p.C], need: [0, N * (p.learn_sigma === 1 ? 2 : 1) * p.C * p.P2, p.count] }),
};
// the decoder's ops (wasm-decode.js); v: the kernel's variant (conv2d's k)
const convItems = (p) => (p.blocks > 0 ? Math.floor((p.blocks - 1) / (cdiv(p.W, 8) * p.H)) + 1 : 0);   // images
EXTENTS.conv2d = (p, hd, B, N, v) => {
  const n = convItems(p), HW = p.H * p.W;
  const layout = p.C_out4 >= p.C_out && p.C_out4 % 4 === 0 ? 1 : 0;    // 4 output channels a vec4, none missing
  return { divisors: [p.H, p.W, layout], need: [n * p.C_in * HW, p.C_in * v.k * v.k * p.C_out4, p.C_out, p.has_res === 1 ? n * p.C_out * HW : 0, n * p.C_out * HW] };
};
// conv2d_q8's bindings: src, wq (one element a weight here), scale, bias, res, dst
EXTENTS.conv2d_q8 = (p, hd, B, N, v) => {
  const { divisors, need } = EXTENTS.conv2d(p, hd, B, N, v);
  return { divisors, need: [need[0], need[1], p.C_out, ...need.slice(2)] };
};
EXTENTS.groupnorm = (p) => ({ divisors: [p.G, Math.floor(p.C / p.G)], need: [cdiv(p.rows, p.G) * p.C * p.HW, p.C, p.C, cdiv(p.rows, p.G) * p.C * p.HW] });
EXTENTS.upsample_nearest = (p) => ({ divisors: [p.H, p.W], need: [cdiv(p.count, 4 * p.H * p.W) * p.H * p.W, p.count] });
EXTENTS.matmul_shared = EXTENTS.matmul;
// matmul_q8's bindings: a, wq (N K signed bytes: one element a byte here), scale, bias, dst
EXTENTS.matmul_q8 = (p, hd) => {
  const { divisors, need } = EXTENTS.matmul(p, hd);
  return { divisors, need: [need[0], need[1], p.N, p.N, need[3]] };
};
// label_embed_q8's bindings: y, table (rows D signed bytes: one element a byte here), scale (one per row), t_emb, y_emb, c
EXTENTS.label_embed_q8 = (p) => {
  const { divisors, need } = EXTENTS.label_embed(p);
  return { divisors, need: [need[0], need[1], p.rows, ...need.slice(2)] };
};

export class WasmEngine {
  // wasmModule: a compiled WebAssembly.Module (or its bytes); manifest and tensors as verified by
  // bundle.js: {weight buffer name: {buf (its shard's ArrayBuffer), offset, nbytes}}.
  // threads > 1: wasmModule is ditweb-kernels-mt.wasm (an imported shared memory) and threads - 1 workers
  // (wasm-threads.js) share the split dispatches; workerUrl: where ditweb-thread.js is (default: beside this file).
  static async create(wasmModule, manifest, tensors, { threads = 1, workerUrl = undefined } = {}) {
    const module = wasmModule instanceof WebAssembly.Module ? wasmModule : await WebAssembly.compile(wasmModule);
    const memory = threads > 1 ? new WebAssembly.Memory({ initial: 32, maximum: MAX_MEMORY_PAGES, shared: true }) : null;
    const instance = await WebAssembly.instantiate(module, memory ? { env: { memory } } : {});
    const engine = new WasmEngine(instance.exports, manifest, memory);
    if (threads > 1) {
      const control = engine.alloc(CONTROL_BYTES);
      const stacks = Array.from({ length: threads - 1 }, () => engine.alloc(STACK_BYTES) + STACK_BYTES);
      try {
        engine.pool = await ThreadPool.create(module, memory, instance.exports, threads, control, stacks, workerUrl);
        engine.threads = threads;
      } catch (e) {   // no nested workers here, say: this module runs on one thread just as well
        engine.threadsError = e.message || String(e);
      }
    }
    const epochMs = () => performance.timeOrigin + performance.now();   // a clock every thread and the page share
    const t0 = epochMs();
    engine.loadWeights(tensors);
    engine.unpack = [t0, epochMs()];   // [start, end] of the weights' unpacking (the page's first-favicon breakdown)
    return engine;
  }

  constructor(exports, manifest, memory = null) {
    this.x = exports;
    this.memory = memory || exports.memory;
    this.manifest = manifest;
    this.threads = 1;
    this.threadsError = "";   // why a pool that was asked for did not start
    /** @type {ThreadPool | null} */
    this.pool = null;
    /** @type {number[] | null} */
    this.unpack = null;       // create: [start, end] of loadWeights, ms since the epoch
    this.top = (exports.__heap_base.value + 15) & ~15;
    this.batch = null;
    // every dispatch's function, checked once: an op without a wasm kernel is a one-line error
    for (const [prog, dispatches] of Object.entries(manifest.programs)) {
      dispatches.forEach((d, i) => {
        const op = manifest.kernels[d.kernel].op;
        if (typeof exports[`op_${OP_FUNCTION[op] || op}`] !== "function") {
          throw new Error(`programs.${prog}[${i}] (${d.label}): op ${op} has no WebAssembly kernel in this version of ditweb`);
        }
      });
    }
  }

  // bump allocator over the module's memory, 16-byte aligned, growing the memory as needed
  alloc(bytes) {
    const ptr = this.top;
    this.top = (this.top + bytes + 15) & ~15;
    const need = this.top - this.memory.buffer.byteLength;
    if (need > 0) this.memory.grow(Math.ceil(need / 65536));
    return ptr;
  }

  f32(ptr, count) { return new Float32Array(this.memory.buffer, ptr, count); }
  u32(ptr, count) { return new Uint32Array(this.memory.buffer, ptr, count); }

  // Weights as f32 (f16 unpacked here, once); matmul weights transposed to (K, N), and kept only in that
  // layout unless another kernel reads them too. Raw bytes and the untransposed copy pass through a
  // scratch area above the weights that the activations reuse afterwards.
  loadWeights(tensors) {
    const m = this.manifest;
    const matmulShape = {};   // weight buffer -> [N, K] of the matmuls that read it as w
    const plain = new Set();  // weight buffers some other binding reads in torch's layout
    for (const dispatches of Object.values(m.programs)) {
      for (const d of dispatches) {
        const op = m.kernels[d.kernel].op;
        const isMatmul = op === "matmul" || op === "matmul_shared";
        if (isMatmul) {
          const p = named(m.kernels[d.kernel], d.params.map((f) => evaluate(f, 1, 1)));
          matmulShape[d.bindings[1]] = [p.N, p.K];
        }
        d.bindings.forEach((name, i) => { if (!(isMatmul && i === 1)) plain.add(name); });
      }
    }
    this.weights = {};
    const jobs = [];
    let scratchBytes = 0;
    for (const [name, spec] of Object.entries(m.buffers)) {
      if (spec.kind !== "weight") continue;
      const t = tensors[name];
      const half = spec.dtype === "f16";
      const count = t.nbytes / (half ? 2 : spec.dtype === "i8" ? 1 : 4);   // i8 (matmul_q8's wq, label_embed_q8's table): kept as bytes
      const shape = matmulShape[name];
      if (shape && shape[0] * shape[1] !== count) throw new Error(`weight ${name}: ${count} values, the matmul reads ${shape[0]} x ${shape[1]}`);
      const w = { count, ptr: 0, wt: 0 };
      if (!shape || plain.has(name)) w.ptr = this.alloc((spec.dtype === "i8" ? 1 : 4) * count + 16);
      if (shape) w.wt = this.alloc(4 * count + 16);
      if (!w.ptr) w.ptr = w.wt;   // the extent check reads .ptr's count only
      this.weights[name] = w;
      jobs.push({ name, t, half, count, shape, w });
      scratchBytes = Math.max(scratchBytes, t.nbytes + 4 * count + 32);
    }
    const weightsEnd = this.top;
    const raw = this.alloc(scratchBytes);
    for (const { t, half, count, shape, w } of jobs) {
      const f32 = shape && w.ptr === w.wt ? (raw + t.nbytes + 15) & ~15 : w.ptr;   // untransposed: scratch unless kept
      new Uint8Array(this.memory.buffer, half ? raw : f32, t.nbytes).set(new Uint8Array(t.buf, t.offset, t.nbytes));
      if (half) this.x.f16_to_f32(raw, f32, count);
      if (shape) this.x.transpose(f32, w.wt, shape[0], shape[1]);
    }
    this.top = weightsEnd;
    this.weightsTop = this.top;   // activations of a batch size live above this line
  }

  // Activation buffers and the compiled dispatch lists for batch (B, N); one batch size resident.
  state(B, N) {
    if (this.batch && this.batch.B === B && this.batch.N === N) return this.batch;
    this.top = this.weightsTop;
    const m = this.manifest;
    const buffers = {};
    const elements = {};   // 4-byte elements of each buffer, for the extent check
    for (const [name, spec] of Object.entries(m.buffers)) {
      if (spec.kind === "weight") {
        buffers[name] = this.weights[name].ptr;
        elements[name] = this.weights[name].count;
      } else if (spec.kind === "step") {
        buffers[name] = this.alloc(Math.max(spec.bytes, 128));
        elements[name] = Infinity;
      } else {
        elements[name] = evaluate(spec.elements, B, N);
        buffers[name] = this.alloc(4 * elements[name] + 16);
      }
    }
    let scratchFloats = 0;
    const programs = {};
    const pending = [];
    for (const [prog, dispatches] of Object.entries(m.programs)) {
      programs[prog] = dispatches.map((d, index) => {
        const kernel = m.kernels[d.kernel];
        const op = OP_FUNCTION[kernel.op] || kernel.op;
        const p = named(kernel, d.params.map((f) => evaluate(f, B, N)));
        checkExtents(`programs.${prog}[${index}]`, d, kernel, p, elements, B, N);
        const params = (OP_PARAMS[op] || kernel.params).map((name) => p[name]);   // the order kernels.c's PARAMS_<op> reads
        const paramsPtr = this.alloc(4 * Math.max(params.length, 1));
        pending.push([paramsPtr, params]);
        const args = [paramsPtr, ...d.bindings.map((n) => buffers[n])];
        if (op === "matmul") {
          args[2] = this.weights[d.bindings[1]].wt;
          const v = kernel.variant || {};
          const inAct = IN_ACT[v.in_act || "none"], act = ACT[v.act || "none"];
          if (inAct === undefined || act === undefined) throw new Error(`kernel ${d.kernel}: activation ${v.in_act}/${v.act} has no WebAssembly kernel`);
          if (inAct) scratchFloats = Math.max(scratchFloats, p.M * p.K);
          args.push(inAct, act, 0);   // scratch pointer filled in below
        } else if (op === "matmul_q8") {
          const v = kernel.variant || {};
          const inAct = IN_ACT[v.in_act || "none"], act = ACT[v.act || "none"];
          if (inAct === undefined || act === undefined) throw new Error(`kernel ${d.kernel}: activation ${v.in_act}/${v.act} has no WebAssembly kernel`);
          // wasm/kernels.c's layout, each part rounded up to 4 floats: the silu'd copy of a (M K floats, when in_act),
          // a's rows as int16 (M Kp / 2 floats, Kp = K rounded up to even), their steps (M), then a panel of widened
          // weights per thread (8 Kp int16 = 4 Kp floats); the rows' area once per thread where the threads split the
          // columns (fewer blocks of 4 rows than threads: kernels.c q8_split_columns)
          const r4 = (n) => (n + 3) & ~3, Kp = (p.K + 1) & ~1;
          const copies = this.threads > 1 && Math.ceil(p.M / 4) < this.threads ? this.threads : 1;
          scratchFloats = Math.max(scratchFloats, copies * ((inAct ? r4(p.M * p.K) : 0) + r4(p.M * Kp / 2) + r4(p.M)) + 4 * Kp * this.threads);
          args.push(inAct, act, 0);
        } else if (op === "attention") {
          args.push(kernel.variant.head_dim);
        }
        return { fn: this.x[`op_${op}`], args, label: d.label, part: this.pool && op in SPLIT ? SPLIT[op] : -1 };
      });
    }
    const scratch = this.alloc(4 * scratchFloats + 16);
    // op_matmul's and op_matmul_q8's last argument (after in_act, act) is their scratch
    for (const dispatches of Object.values(programs)) {
      for (const d of dispatches) if (d.fn === this.x.op_matmul || d.fn === this.x.op_matmul_q8) d.args[d.args.length - 1] = scratch;
    }
    for (const [ptr, params] of pending) this.u32(ptr, params.length).set(params);
    const stepName = Object.keys(m.buffers).find((n) => m.buffers[n].kind === "step");
    this.batch = { B, N, buffers, programs, step: stepName ? buffers[stepName] : 0 };
    return this.batch;
  }

  run(names) {
    const pool = this.pool;
    for (const name of names) {
      for (const d of this.batch.programs[name]) {
        if (d.part >= 0) pool.parallel(d.part, d.args);
        else d.fn(...d.args);
      }
    }
  }

  dispose() {
    if (this.pool) this.pool.dispose();
    this.pool = null;
  }

  writeStep(record) {
    new Uint8Array(this.memory.buffer, this.batch.step, record.byteLength).set(new Uint8Array(record));
  }

  write(name, typed) {
    new Uint8Array(this.memory.buffer, this.batch.buffers[name], typed.byteLength).set(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
  }

  read(name, count) {
    return this.f32(this.batch.buffers[name], count).slice();
  }
}

// A dispatch's evaluated params by name (the kernel's manifest entry names them); an op whose WebAssembly kernel
// reads a param the kernel does not declare is refused.
export function named(kernel, values) {
  const p = Object.fromEntries(kernel.params.map((name, i) => [name, values[i]]));
  const op = OP_FUNCTION[kernel.op] || kernel.op;
  for (const name of OP_PARAMS[op] || []) {
    if (!(name in p)) throw new Error(`kernel of op ${kernel.op}: no param ${name} (it declares ${kernel.params.join(", ")})`);
  }
  return p;
}

export function checkExtents(where, d, kernel, p, elements, B, N) {
  const extent = EXTENTS[kernel.op];
  if (!extent) return;
  const v = kernel.variant || {};
  const { divisors, need } = extent(p, v.head_dim || 0, B, N, v);
  if (divisors.some((v) => !(v > 0))) throw new Error(`${where} (${d.label}): a size parameter is 0 in ${JSON.stringify(p)}`);
  d.bindings.forEach((name, i) => {
    const n = need[i] || 0;
    if (!(n <= elements[name])) throw new Error(`${where} (${d.label}): binding ${name} holds ${elements[name]} elements, the dispatch reaches ${n}`);
  });
}

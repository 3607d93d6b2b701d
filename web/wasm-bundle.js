// wasm-bundle.js: the WebAssembly runtime's bundle, a proxy of the Web Worker (ditweb-worker.js) that runs
// ditweb-kernels.wasm: one message per step, so the page stays responsive and an abort or a time budget takes
// effect between steps. One thread on every page; on a cross-origin isolated page (COOP/COEP headers, as
// `ditweb serve` sends) the worker runs ditweb-kernels-mt.wasm with a pool of threads (wasm-threads.js):
// opts.threads (default navigator.hardwareConcurrency), 1 where the page is not isolated. The sampling loop
// is sampling.js's, served here by three worker calls (state, run, run with a read-back).

import { decodedPictures } from "./favicon.js";
import { SampledBundle } from "./sampling.js";
import { threadsAvailable } from "./wasm-threads.js";

export class WasmBundle extends SampledBundle {
  constructor(base, manifest, tensors, stats, opts) {
    super(base, manifest, tensors, stats);
    this.opts = opts;
    this.runtime = "wasm";
    this.adapterDescription = "WebAssembly SIMD, 1 thread (Web Worker)";
    const wanted = Math.floor(opts.threads ?? (globalThis.navigator && navigator.hardwareConcurrency) ?? 1);
    this.threads = wanted > 1 && threadsAvailable() ? Math.min(wanted, 64) : 1;   // how many run (set by start)
    this.threadsWanted = Math.max(1, wanted || 1);
    this.timings = { compileMs: 0, initMs: 0 };   // start(): the kernels' fetch + compile, the worker's init
    /** @type {Worker | null} */
    this.worker = null;
    this.calls = new Map();
    this.nextId = 1;
    this.count = 0;                    // floats of x_t in the current run
  }

  // Fetch the kernels (next to this file), start the worker and unpack the weights there.
  async start() {
    // literal URLs next to this file, so that bundlers see (and copy) both modules
    const wasmUrl = this.threads > 1 ? this.opts.wasmThreadsUrl || new URL("./ditweb-kernels-mt.wasm", import.meta.url)
      : this.opts.wasmUrl || new URL("./ditweb-kernels.wasm", import.meta.url);
    let module;
    const t0 = performance.now();
    try {
      const response = await fetch(wasmUrl, { signal: this.opts.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      module = await WebAssembly.compile(await response.arrayBuffer());
      this.timings.compileMs = performance.now() - t0;      // fetch + compile of the kernels
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Error(`the WebAssembly kernels (${wasmUrl}) could not be loaded: ${e.message}`);
    }
    this.worker = new Worker(new URL("./ditweb-worker.js", import.meta.url), { type: "module", name: "ditweb" });
    this.worker.onmessage = ({ data }) => {
      const call = this.calls.get(data.id);
      if (!call) return;
      this.calls.delete(data.id);
      if (data.error) {
        const e = new Error(data.error.message);
        e.name = data.error.name;
        call.reject(e);
      } else {
        call.resolve(data.result);
      }
    };
    this.worker.onerror = (ev) => {
      const e = new Error(`the WebAssembly worker failed: ${ev.message || "could not start"}`);
      for (const call of this.calls.values()) call.reject(e);
      this.calls.clear();
    };
    const t1 = performance.now();
    const dec = this.decoderFiles;   // a latent bundle's decoder/ (web/decode.js), run in the worker (wasm-decode.js)
    const reply = await this.call("init", { module, manifest: this.manifest, tensors: this.tensors, threads: this.threads,
                                            decoder: dec ? { manifest: dec.manifest, tensors: dec.tensors } : null });
    this.timings.initMs = performance.now() - t1;            // worker start, threads, weights unpacked
    this.threads = reply.threads;
    this.threadsError = reply.threadsError || "";   // a pool was asked for but could not start (one thread ran)
    this.adapterDescription = `WebAssembly SIMD, ${this.threads} thread${this.threads > 1 ? "s" : ""} (Web Worker${this.threads > 1 ? "s" : ""})`;
  }

  // sampling.js's result, plus how many threads ran it
  async sample(opts = {}) {
    const result = await super.sample(opts);
    return { ...result, threads: this.threads };
  }

  call(cmd, args = {}, transfer = []) {
    if (!this.worker) return Promise.reject(new Error("the WebAssembly runtime was disposed"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.worker.postMessage({ id, cmd, ...args }, transfer);
    });
  }

  // the sampling loop's part (sampling.js): the batch and its labels, then init; a step; its read-back
  async startRun(run) {
    const { C, I, B, N, y } = run;
    this.checkReachAt(B, N);
    this.count = N * C * I * I;
    this.rows = B;
    await this.call("state", { B, N, y });
    await this.call("run", { programs: ["init"], record: run.initRecord });
  }

  async runStep(record, read, check = false) {
    const io = this.manifest.io;
    const reply = await this.call("run", {
      programs: ["step_begin", "forward", "step_end"],
      record,
      read: read ? { name: io.sample, count: this.count } : null,
      check: check ? { name: io.out, count: this.rows * io.out_shape.reduce((a, b) => a * b, 1) } : null,
    });
    return { x: reply.x, out: reply.out, ms: reply.ms };
  }

  // a latent bundle: the decoder's images of the final latents, in the worker
  async output(x, run) {
    if (!this.decoderFiles) return this.images(x, run.C, run.I);
    const { image, ms } = await this.call("decode", { latents: x, N: run.N });
    return { ...decodedPictures(image, this.decoderFiles.manifest.image_shape, run.N), decodeMs: ms };
  }

  forwardRows(x, t, rows) {
    this.checkReachAt(t.length, t.length);
    return this.call("forward", { x, t, y: rows });
  }

  dispose() {
    this.disposed = true;
    if (this.worker) this.worker.terminate();
    this.worker = null;
    for (const call of this.calls.values()) call.reject(new Error("the WebAssembly runtime was disposed"));
    this.calls.clear();
  }
}

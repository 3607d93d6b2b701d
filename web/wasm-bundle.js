// wasm-bundle.js: the WebAssembly runtime's bundle, a proxy of the Web Worker (ditweb-worker.js) that runs
// ditweb-kernels.wasm: one message per step, so the page stays responsive and an abort or a time budget takes
// effect between steps. One thread on every page; on a cross-origin isolated page (COOP/COEP headers, as
// `ditweb serve` sends) the worker runs ditweb-kernels-mt.wasm with a pool of threads (wasm-threads.js):
// opts.threads (default navigator.hardwareConcurrency), 1 where the page is not isolated. Where the browser
// validates relaxed SIMD (checkRelaxedSimd), the same kernels built with -mrelaxed-simd run instead
// (ditweb-kernels-relaxed.wasm, ditweb-kernels-mt-relaxed.wasm: fused multiply-add in the matmul, attention and
// conv inner loops); opts.simd: "auto" (default) | "relaxed" | "plain" forces one; bundle.simd says which ran.
// The sampling loop is sampling.js's, served here by three worker calls (state, run, run with a read-back).

import { measure } from "./bundle.js";
import { decodedPictures } from "./favicon.js";
import { SampledBundle } from "./sampling.js";
import { threadsAvailable } from "./wasm-threads.js";

export const SIMD_MODES = ["auto", "relaxed", "plain"];
// The batch [B, N] a page's first run most likely has (one image, guided: two rows): the worker sets it up right
// after its init, while the page prepares the run.
const FIRST_BATCH = [2, 1];

// The smallest module with a relaxed SIMD instruction:
// (func (param v128 v128 v128) (result v128) local.get 0 local.get 1 local.get 2 f32x4.relaxed_madd).
const RELAXED_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0,
                                           10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11]);

/** Whether this browser validates relaxed SIMD (f32x4.relaxed_madd, the relaxed kernels' instruction). */
export function checkRelaxedSimd() {
  try {
    return typeof WebAssembly === "object" && WebAssembly.validate(RELAXED_SIMD_PROBE);
  } catch {
    return false;   // treated as missing
  }
}

/** "relaxed" | "plain" for opts.simd; "auto" takes relaxed where the browser has it, unless the caller points
 * opts.wasmUrl / opts.wasmThreadsUrl at plain kernels of its own and names no relaxed ones. */
export function chooseSimd(opts = {}) {
  const asked = opts.simd ?? "auto";
  if (!SIMD_MODES.includes(asked)) throw new RangeError(`unknown simd ${JSON.stringify(asked)}; choose one of ${SIMD_MODES.join(", ")}`);
  if (asked === "plain") return "plain";
  const has = checkRelaxedSimd();
  if (asked === "relaxed" && !has) throw new Error("simd: \"relaxed\" was asked for, but this browser has no relaxed WebAssembly SIMD");
  const ownPlain = (opts.wasmUrl || opts.wasmThreadsUrl) && !(opts.wasmRelaxedUrl || opts.wasmThreadsRelaxedUrl);
  return has && (asked === "relaxed" || !ownPlain) ? "relaxed" : "plain";
}

// The kernels for a thread count and SIMD flavour: literal URLs next to this file, so that bundlers see (and
// copy) all four modules; opts.wasmUrl, wasmThreadsUrl, wasmRelaxedUrl, wasmThreadsRelaxedUrl load them from elsewhere.
function kernelsUrl(threads, simd, opts) {
  if (simd === "relaxed") {
    return threads > 1 ? opts.wasmThreadsRelaxedUrl || new URL("./ditweb-kernels-mt-relaxed.wasm", import.meta.url)
      : opts.wasmRelaxedUrl || new URL("./ditweb-kernels-relaxed.wasm", import.meta.url);
  }
  return threads > 1 ? opts.wasmThreadsUrl || new URL("./ditweb-kernels-mt.wasm", import.meta.url)
    : opts.wasmUrl || new URL("./ditweb-kernels.wasm", import.meta.url);
}

function describe(simd, threads) {
  const many = threads > 1 ? "s" : "";
  return `WebAssembly ${simd === "relaxed" ? "relaxed SIMD" : "SIMD"}, ${threads} thread${many} (Web Worker${many})`;
}

export class WasmBundle extends SampledBundle {
  constructor(base, manifest, tensors, stats, opts) {
    super(base, manifest, tensors, stats);
    this.opts = opts;
    this.runtime = "wasm";
    this.simd = chooseSimd(opts);      // "relaxed" | "plain": the kernels that run
    this.adapterDescription = describe(this.simd, 1);
    const wanted = Math.floor(opts.threads ?? (globalThis.navigator && navigator.hardwareConcurrency) ?? 1);
    this.threads = wanted > 1 && threadsAvailable() ? Math.min(wanted, 64) : 1;   // how many run (set by start)
    this.threadsWanted = Math.max(1, wanted || 1);
    // start(): compileMs, the wait for the kernels once the weights are verified (their fetch + compile runs
    // alongside the download: kernelsMs); initMs, the worker's init (threads, the weights unpacked); unpackMs, the
    // weights' unpacking in it; workerUpMs, when the worker's modules had loaded (ms on the page's clock)
    this.timings = { compileMs: 0, kernelsMs: 0, initMs: 0, unpackMs: 0, workerUpMs: NaN };
    /** @type {Worker | null} */
    this.worker = null;
    /** @type {Error | null} */
    this.workerError = null;           // the worker failed to start: every call rejects with it
    /** @type {Promise<WebAssembly.Module> | null} */
    this.kernels = null;
    this.calls = new Map();
    this.nextId = 1;
    this.count = 0;                    // floats of x_t in the current run
    this.pipelined = true;             // the worker answers its messages in order: the next step may be asked ahead
  }

  // Fetch and compile the kernels and start the worker, before the weights are there: loadBundle calls it when
  // the download begins. The worker receives nothing of the bundle until start(), after every file is verified.
  prestart() {
    if (this.kernels) return this;
    this.kernels = this.compileKernels();
    this.kernels.catch(() => {});      // reported by start()
    this.openWorker();
    return this;
  }

  async compileKernels() {
    const wasmUrl = kernelsUrl(this.threads, this.simd, this.opts);
    const t0 = performance.now();
    try {
      const response = await fetch(wasmUrl, { signal: this.opts.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      // compiled as the bytes arrive where the host names the type compileStreaming needs (application/wasm)
      const streaming = typeof WebAssembly.compileStreaming === "function"
        && /^application\/wasm\b/.test(response.headers.get("Content-Type") || "");
      const module = await (streaming ? WebAssembly.compileStreaming(response) : WebAssembly.compile(await response.arrayBuffer()));
      this.timings.kernelsMs = performance.now() - t0;
      measure("kernels", t0);
      return module;
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Error(`the WebAssembly kernels (${wasmUrl}) could not be loaded: ${e.message}`);
    }
  }

  // The worker: opts.earlyWorker's where the page started it already (web/early.js: the same script; taken once, with
  // what it has said so far), else a new one.
  openWorker() {
    const early = this.opts.earlyWorker && !this.opts.earlyWorker.taken ? this.opts.earlyWorker : null;
    const opened = early ? early.opened : performance.now();
    const up = (epochMs) => {
      this.timings.workerUpMs = epochMs - performance.timeOrigin;
      measure("worker", opened, this.timings.workerUpMs);
    };
    if (early) {
      early.taken = true;
      early.release();
    }
    this.worker = early ? early.worker : new Worker(new URL("./ditweb-worker.js", import.meta.url), { type: "module", name: "ditweb" });
    this.worker.onmessage = ({ data }) => {
      if (data.up) {                 // the worker's modules have loaded (its first message, unasked)
        up(data.up);
        return;
      }
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
    const failed = (message) => {
      this.workerError = new Error(`the WebAssembly worker failed: ${message}`);
      for (const call of this.calls.values()) call.reject(this.workerError);
      this.calls.clear();
    };
    this.worker.onerror = (ev) => failed(ev.message || "could not start");
    if (early && early.up) up(early.up);
    if (early && early.error) failed(early.error);
  }

  // The kernels (prestart's, or fetched now), then the worker's init: the verified weights unpacked there.
  async start() {
    this.prestart();
    const t0 = performance.now();
    const module = await this.kernels;
    this.timings.compileMs = performance.now() - t0;
    const t1 = performance.now();
    const dec = this.decoderFiles;   // a latent bundle's decoder/ (web/decode.js), run in the worker (wasm-decode.js)
    const reply = await this.call("init", { module, manifest: this.manifest, tensors: this.tensors, threads: this.threads,
                                            decoder: dec ? { manifest: dec.manifest, tensors: dec.tensors } : null,
                                            batch: FIRST_BATCH });
    this.timings.initMs = performance.now() - t1;            // worker start, threads, weights unpacked
    measure("init", t1, t1 + this.timings.initMs);
    if (reply.unpack) {              // [start, end] of the weights' unpacking, ms since the epoch (the worker's clock)
      const [a, b] = reply.unpack.map((t) => t - performance.timeOrigin);
      this.timings.unpackMs = b - a;
      measure("unpack", a, b);
    }
    this.threads = reply.threads;
    this.threadsError = reply.threadsError || "";   // a pool was asked for but could not start (one thread ran)
    this.adapterDescription = describe(this.simd, this.threads);
  }

  // sampling.js's result, plus how many threads ran it and which kernels ("relaxed" | "plain" SIMD)
  async sample(opts = {}) {
    const result = await super.sample(opts);
    return { ...result, threads: this.threads, simd: this.simd };
  }

  call(cmd, args = {}, transfer = []) {
    if (!this.worker) return Promise.reject(new Error("the WebAssembly runtime was disposed"));
    if (this.workerError) return Promise.reject(this.workerError);
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
    const t0 = performance.now();
    await this.call("state", { B, N, y });
    const t1 = performance.now();
    measure("state", t0, t1);
    await this.call("run", { programs: ["init"], record: run.initRecord });
    measure("init program", t1);
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

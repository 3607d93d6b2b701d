// sampling.js: the one sampling loop of the page, and what both runtimes share around it. A bundle
// (webgpu-bundle.js: WebGPU; wasm-bundle.js: WebAssembly in a Web Worker) extends SampledBundle and serves the
// loop with three methods:
//   startRun(run)              batch buffers for run.B / run.N, the label rows run.y, "init" (run.initRecord)
//   runStep(record, read)      one step record -> step_begin + forward + step_end; read: return x_t
//                              -> {x: Float32Array | null, ms?: kernel milliseconds}
//   output(x, run)             the final x -> {rgba: [...], width, height} (and image for a latent bundle)
// and forwardRows(x, t, rows) for a plain forward pass. Steps, records, label rows, guides and the result's
// shape are decided here once, so a seed gives the same image on either runtime.

import { checkBatchReach, fetchVocabulary, labelLevels, measure } from "./bundle.js";
import { Label } from "./labels.js";
import { previewPictures } from "./decode.js";
import { toRGBA } from "./favicon.js";
import { MAX_BRANCHES, SAMPLERS, labelRows, labelStarts, makeGuide, makePlan, resolveClass, samplerTables, stepUniform } from "./schedule.js";

// One label as the sampler takes it: a class id (one-level bundles: an id or a class name); a named bundle's label
// is an array of per-level ids (id = level size: left out) from a Label, an array, a prompt (with `style`), or a
// class id / name of classNames (every level's names, level after level).
function labelIds(bundle, v, what = "label", style = null) {
  const vocab = bundle.vocab;
  if (!vocab && bundle.named) return levelIds(bundle, v, what);
  if (!vocab) return resolveClass(v, bundle.classNames, what);
  if (v instanceof Label) v = v.ids;
  if (Array.isArray(v)) {
    vocab.checkLabel(v);
    return [...v];
  }
  if (typeof v === "string" && !/^\d+$/.test(v)) return vocab.resolve(v, style).ids;
  const id = Number(v), sizes = vocab.sizes;
  if (!Number.isInteger(id) || id < 0 || id >= bundle.classNames.length) throw new RangeError(`${what}: class id ${v} is out of range [0, ${bundle.classNames.length})`);
  let l = 0, i = id;
  while (i >= sizes[l]) { i -= sizes[l]; l += 1; }
  const free = style && l < vocab.nested && vocab.levels.length > vocab.nested ? { [vocab.levels[vocab.levels.length - 1]]: style } : {};
  return vocab.label(l, i, free).ids;
}

// A named bundle's label before its vocabulary is loaded (loadBundle's {vocabulary: "later"}): per-level ids only (an
// array or a Label), each in [0, the level's size] of the verified manifest's model.label_levels (size: left out).
function levelIds(bundle, v, what) {
  const sizes = labelLevels(bundle.manifest);
  const ids = v instanceof Label ? v.ids : v;
  if (!Array.isArray(ids)) throw new RangeError(`${what}: ${JSON.stringify(v)} needs the bundle's vocabulary: await bundle.loadVocabulary() first, or give per-level ids`);
  if (ids.length !== sizes.length || !ids.every((i, l) => Number.isInteger(i) && i >= 0 && i <= sizes[l])) {
    throw new RangeError(`${what}: label (${ids.join(", ")}) does not fit the model's label levels (${sizes.join(", ")})`);
  }
  return [...ids];
}

// The labels of a run: opts.classIds, else n copies of the one label (prompt, className or classId), each as
// labelIds reads it; an unknown style fails even where no label names one.
function runLabels(bundle, opts, style) {
  const named = bundle.named;
  if (!named && (opts.prompt != null || opts.style != null)) throw new RangeError("prompt and style need a named bundle (one with vocabulary.json)");
  if (named && !bundle.vocab && (style !== null || opts.prompt != null)) throw new RangeError("a prompt or a style needs the bundle's vocabulary: await bundle.loadVocabulary() first");
  if (named && style !== null) {
    const vocab = bundle.vocab, last = vocab.levels[vocab.levels.length - 1];
    vocab.label(vocab.level(last), 0, { [last]: style });
  }
  let classIds = opts.classIds;
  if (!classIds) {
    const one = opts.prompt != null ? opts.prompt : opts.className !== undefined ? opts.className : opts.classId;
    if (one === undefined && named && !(opts.compose && opts.compose.length)) throw new RangeError('a named bundle needs a prompt (e.g. {prompt: "hippo"}) or a class');
    classIds = Array(opts.n ?? 1).fill(one === undefined ? (named ? labelLevels(bundle.manifest) : 0) : one);
  }
  return classIds;
}

// Everything a sampling run needs before any compute, from sample()'s options (the run set-up; not a plan).
// A named bundle takes prompt (+ style), className (any label name) or classId, or classIds: labels as labelIds reads them.
function setUpRun(bundle, opts) {
  const m = bundle.manifest;
  const { in_channels: C, input_size: I } = m.model;
  const style = opts.style ?? null;
  const pick = (v, what) => labelIds(bundle, v, what, style);
  let classIds = runLabels(bundle, opts, style);
  const guide = makeGuide(opts, bundle.classNames, pick);
  classIds = classIds.map((c, n) => pick(c, `class of image ${n}`));
  const steps = opts.steps ?? 25;
  const sampler = opts.sampler || "ddim";
  if (!SAMPLERS.includes(sampler)) throw new RangeError(`unknown sampler ${JSON.stringify(sampler)}; choose one of ${SAMPLERS.join(", ")}`);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
  const tables = samplerTables(m, steps);
  const plan = makePlan(guide, classIds, bundle.named ? labelLevels(m) : m.model.num_classes);
  const N = classIds.length, K = guide.copies, J = plan.labels.length;
  if (J > Math.min(MAX_BRANCHES, (m.guidance && m.guidance.max_branches) || MAX_BRANCHES)) throw new RangeError(`${J} guidance branches, the bundle allows ${m.guidance.max_branches}`);
  const B = K * J * N;
  const y = labelRows(plan, K, N, labelStarts(labelLevels(m)));      // [k][j][n], L table rows each
  // latent bundles (with a decoder) sample without x0 clipping: latents are not bounded like pixels
  const common = { tables, steps, seed, K, J, N, plan, guide, sampler, eta: opts.eta ?? 0.0, clipX0: opts.clipX0 ?? !bundle.decoderFiles,
                   prediction: m.sampler.prediction };
  const signal = opts.signal;
  const aborted = () => { if (signal && signal.aborted) throw new DOMException("sampling was stopped", "AbortError"); };
  const initRecord = stepUniform({ ...common, i: null, nDone: 0 });   // the "init" program's step record
  return { C, I, steps, tables, B, K, J, N, y, common, initRecord, aborted };
}

// NaN or Inf in a run (weights that overflow, a kernel that divides by zero): never a silent black favicon.
export class NonFiniteError extends Error {
  constructor(message) {
    super(message);
    this.name = "NonFiniteError";
  }
}

// The WebGPU device was lost during a run (webgpu-bundle.js: it creates a new device and tries again, twice).
export class DeviceLostError extends Error {
  constructor(message) { super(message); this.name = "DeviceLostError"; }
}

// Steps a pipelined bundle is asked for ahead of the one whose reply the loop waits on (runSampling): two keep its
// worker busy through the page's work on a reply and the reply's and the next request's messages.
const AHEAD = 2;

// Steps after which the model's output (and x_t where read) is checked: the first, every tenth and the last two
// (WGSL's clamp of x0 may turn a NaN output into -1 and leave x_t finite, so the output itself is what is checked).
const checkedStep = (done, steps) => done === 1 || done % 10 === 0 || done >= steps - 1;

function nonFinite(v) {
  let bad = 0;
  for (let k = 0; k < v.length; k++) if (!Number.isFinite(v[k])) bad++;
  return bad;
}

function checkFinite(bundle, reply, done, steps) {
  const outBad = reply.out ? nonFinite(reply.out) : 0;
  const xBad = reply.x ? nonFinite(reply.x) : 0;
  const what = outBad ? "the model's output" : xBad ? "the latents" : null;
  if (what) {
    throw new NonFiniteError(`sampling (${bundle.runtime} runtime): ${what} became non-finite by step ${done} of ${steps} `
      + `(${outBad || xBad} values NaN or Inf): the bundle's weights or its kernels produce NaN`);
  }
}

// The sampling loop: init, then one step record per step (reading x_t back where a preview or the end wants it),
// onStep after each, the pictures at the end.
async function runSampling(bundle, opts) {
  const t0 = performance.now();
  const run = setUpRun(bundle, opts);
  measure("run set-up", t0);
  const { C, I, steps, tables, common, aborted } = run;
  aborted();
  const runStart = performance.now();
  await bundle.startRun(run);
  const started = performance.now();
  const kernelMs = [];
  // the run's timeline on the page's clock (the page's breakdown of its first favicon): when each step's reply came,
  // and the ms spent on the page after it (the NaN check, the preview, onStep) before the next step was asked for
  const timeline = { startMs: runStart, initEndMs: started, stepEndMs: [], hostMs: [] };
  let x = null;
  // waiting on each step's reply costs a little throughput but gives honest per-step times, prompt cancellation
  // and the live preview. A bundle whose steps queue in order (bundle.pipelined: the WebAssembly worker) is kept
  // AHEAD steps ahead: the next step is asked for before the page checks and previews this one, so the page's work
  // and the message round trip overlap the kernels instead of adding to them; once a step is bad or the run
  // stopped, no further step is asked for (those already asked are left unread).
  const ask = (nDone) => bundle.runStep(stepUniform({ ...common, i: steps - 1 - nDone, nDone }), !!opts.preview || nDone + 1 === steps,
                                        checkedStep(nDone + 1, steps));
  /** @type {Promise<{x: Float32Array | null, out?: Float32Array | null, ms?: number}>[]} */
  const asked = [];
  const askAhead = () => {
    while (asked.length < (bundle.pipelined ? AHEAD : 1) && timeline.stepEndMs.length + asked.length < steps) {
      asked.push(ask(timeline.stepEndMs.length + asked.length));
    }
  };
  askAhead();
  try {
    for (let nDone = 0; nDone < steps; nDone++) {
      const i = steps - 1 - nDone;
      const last = nDone + 1 === steps;
      const reply = await asked.shift();
      const got = performance.now();
      timeline.stepEndMs.push(got);
      if (reply.ms !== undefined) kernelMs.push(reply.ms);
      checkFinite(bundle, reply, nDone + 1, steps);
      x = reply.x;
      aborted();
      if (bundle.pipelined) askAhead();
      if (opts.onStep) {
        const msPerStep = (performance.now() - started) / (nDone + 1);
        const preview = last ? null : x;
        opts.onStep({ step: nDone + 1, steps, t: tables.t[i], msPerStep, x: preview, ...(preview ? bundle.previewImages(preview, C, I) : {}) });
      }
      timeline.hostMs.push(performance.now() - got);
      askAhead();
    }
  } finally {
    for (const step of asked) step.catch(() => {});   // asked ahead, not wanted: the run stopped or failed
  }
  const msPerStep = (performance.now() - started) / steps;
  const pictures = await bundle.output(x, run);
  return { x, ...pictures, channels: C, msPerStep, ...(kernelMs.length ? { kernelMs } : {}), B: run.B, K: common.K, J: common.J,
           N: run.N, runtime: bundle.runtime, timeline };
}

// What both runtimes' bundles share: labels, description, the queue of calls, sample() and forward().
export class SampledBundle {
  constructor(base, manifest, tensors, stats) {
    this.url = base.href;
    this.manifest = manifest;
    this.tensors = tensors;            // {weight buffer name: {buf: its shard's ArrayBuffer, offset, nbytes}}
    this.stats = stats;                // {downloaded, cached} bytes of this load
    /** @type {Promise<unknown>} */
    this.busy = Promise.resolve();     // calls run one at a time: they share the batch buffers
    this.runtime = "";
    this.runtimeReason = "";           // why loadBundle chose this runtime
    this.adapterDescription = "";
    this.disposed = false;
    /** @type {import("./labels.js").Vocabulary | null} */
    this.vocab = null;                 // a named bundle's verified vocabulary.json (web/labels.js), else null
    /** @type {Promise<import("./labels.js").Vocabulary | null> | null} */
    this.vocabLoading = null;          // loadVocabulary's fetch while under way
    this.decoderFiles = null;          // a latent bundle's verified decoder/ (web/decode.js), else null
    this.reachChecked = new Set();     // "B,N" of the batches whose dispatches checkBatchReach found inside their buffers
    this.pipelined = false;            // runStep calls may overlap, answered in order (the sampling loop asks ahead)
  }

  // Every dispatch, by its kernel and each candidate, inside its buffers at this batch (the verifier tried
  // REACH.batches only; runtime_py checks the same in BatchState.run_of): a BundleError before anything runs.
  checkReachAt(B, N) {
    const id = `${B},${N}`;
    if (this.reachChecked.has(id)) return;
    const t0 = performance.now();
    checkBatchReach(this.manifest, B, N);
    measure(`reach ${id}`, t0);
    this.reachChecked.add(id);
  }

  // every label's name: a one-level bundle's class names; a named bundle's names of every level, level after level
  // (none before its vocabulary is loaded: loadVocabulary)
  get classNames() { return this.vocab ? this.vocab.flatNames() : this.named ? [] : this.manifest.class_names; }
  // a named bundle: labels of several levels (model.label_levels), named by its vocabulary.json
  get named() { return Object.prototype.hasOwnProperty.call(this.manifest.model, "label_levels"); }

  // A named bundle loaded without its vocabulary (loadBundle's {vocabulary: "later"}): vocabulary.json fetched and
  // verified (the manifest's sha256 and size, the label levels; a BundleError names it otherwise) and set as this.vocab.
  // One fetch for every call while it is under way; resolves to this.vocab (null for a one-level bundle).
  /** @param {{signal?: AbortSignal, useCache?: boolean}} [opts] @returns {Promise<import("./labels.js").Vocabulary | null>} */
  loadVocabulary(opts = {}) {
    if (this.vocab || !this.named) return Promise.resolve(this.vocab);
    if (!this.vocabLoading) {
      this.vocabLoading = fetchVocabulary(this.url, this.manifest, { ...opts, stats: this.stats })
        .then((v) => (this.vocab = v), (e) => { this.vocabLoading = null; throw e; });
    }
    return this.vocabLoading;
  }
  get config() { return this.manifest.model; }

  // A named bundle (vocabulary.json, web/labels.js): a prompt (and a style) -> a Label; the twin of runtime_py
  // Bundle.resolve. Throws VocabularyError (one line, the closest labels) for an unknown or ambiguous prompt.
  resolve(prompt, style = null) {
    if (!this.vocab) throw new RangeError(`a one-level bundle (${this.config.num_classes} classes) takes class ids or names, not prompts`);
    return this.vocab.resolve(prompt, style);
  }

  label(v, what = "label", style = null) { return labelIds(this, v, what, style); }
  tables(steps) { return samplerTables(this.manifest, steps); }

  describe() {
    const c = this.config;
    const size = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);
    return `${c.in_channels}x${c.input_size}x${c.input_size}, hidden ${c.hidden_size}, depth ${c.depth}, ${this.manifest.dtype}, `
      + `${this.named ? labelLevels(this.manifest).reduce((a, b) => a + b, 0) : this.classNames.length} classes, ${size(this.stats.downloaded + this.stats.cached)} (${size(this.stats.cached)} from the cache)`;
  }

  images(x, C, I) {
    const per = C * I * I;
    const rgba = [];
    for (let n = 0; n < x.length / per; n++) rgba.push(toRGBA(x.subarray(n * per, (n + 1) * per), C, I, I));
    return { rgba, width: I, height: I };
  }

  // A step's preview: x_t itself (pixels), or a latent bundle's x_t through its preview map (decoder/, docs/vae.md
  // "Live previews"; the real decoder makes the final image only); none for a latent bundle without a map.
  previewImages(x, C, I) {
    if (!this.decoderFiles) return this.images(x, C, I);
    return this.decoderFiles.preview ? previewPictures(this.decoderFiles.preview, x) : {};
  }

  /** @template T @param {() => Promise<T>} fn @returns {Promise<T>} fn, after every call queued before it */
  queue(fn) {
    const run = this.busy.then(fn);
    this.busy = run.catch(() => {});
    return run;
  }

  // opts: className | classId | prompt (+ style) (or classIds for several images), n, seed, steps, cfg, cfgEnd,
  //   negativeClass, compose [[class, weight], ...], schedule, interval [lo, hi],
  //   batchEstimate {k, tau}, sampler "ddim" | "ddpm", eta, clipX0, signal, onStep, preview.
  // Returns {rgba: [Uint8ClampedArray (H, W, 4) per image], x: Float32Array (N, C, I, I), width, height, channels,
  //   msPerStep, B, K, J, N, runtime} (WebAssembly: kernelMs per step too); a latent bundle (decoder/) also returns
  //   image: Float32Array (N, C, H, W) from its VAE decoder (WebAssembly: decodeMs too), and rgba / width / height
  //   are the decoded pictures; its onStep previews are x_t through the bundle's preview map.
  sample(opts = {}) {
    return this.queue(() => this.sampleOnce(opts));
  }

  sampleOnce(opts) {
    return runSampling(this, opts);
  }

  // A plain forward pass: x (B, C, I, I) f32, t (B,) ints, y (B,) class ids (a named bundle: B labels, arrays of
  // per-level ids) -> out (B, C_out, I, I) Float32Array.
  async forward(x, t, y) {
    const io = this.manifest.io;
    const B = t.length;
    const per = io.x_shape.reduce((a, b) => a * b, 1);
    if (x.length !== B * per || y.length !== B) throw new RangeError(`forward: x must hold ${B} x ${per} floats and y ${B} labels`);
    const rows = labelRows({ labels: [Array.from(y, (v) => (this.named ? this.label(v) : v))] }, 1, B, labelStarts(labelLevels(this.manifest)));
    return this.queue(() => this.forwardRows(Float32Array.from(x), Uint32Array.from(t), rows));
  }

  // the runtime's part (the header of this file)
  /** @returns {Promise<void>} */
  async startRun(run) { throw new Error(`startRun(${run.B} rows) is each runtime's own`); }

  // read: return x_t; check: also return the model's output (out), for the NaN / Inf check
  /** @returns {Promise<{x: Float32Array | null, out?: Float32Array | null, ms?: number}>} */
  async runStep(record, read, check) { throw new Error(`runStep(${record.byteLength} bytes, ${read}, ${check}) is each runtime's own`); }

  /** @returns {Promise<{rgba: Uint8ClampedArray[], width: number, height: number, image?: Float32Array}>} */
  async output(x, run) { return this.images(x, run.C, run.I); }

  /** @returns {Promise<Float32Array>} */
  async forwardRows(x, t, rows) { throw new Error(`forwardRows(${t.length} rows, ${rows.length}) is each runtime's own`); }
}

// ditweb.js: run a ditweb shader bundle (docs/bundle-format.md) with WebGPU, or with the
// WebAssembly SIMD kernels (ditweb-kernels.wasm, in a Web Worker) where WebGPU is missing or runs
// on a software adapter.
//
// The twin of runtime_py, in the same order: load bundle (fetch, verify, cache) -> create
// pipelines (one per kernel, from the bundle's own .wgsl bytes) -> run a step (one command
// buffer: step_begin + forward + step_end) -> sample (init, the steps, one read-back).
// No model-specific code: shapes, bindings and workgroup counts all come from the manifest.
//
//   const b = await loadBundle("bundle/");              // {runtime: "auto" | "webgpu" | "wasm"}
//   const { rgba, width, height, runtime } = await b.sample({ className: "hippo", seed: 7, steps: 25, cfg: 4 });
//   await diffuseFavicon(b, { classId: 0, seed: 7 });   // animates <link rel="icon">
//
// Both runtimes run the same manifest programs with the same step records (schedule.js), so a seed
// gives the same image on either; b.runtime and every sample result say which one ran.

import { BundleError, fetchManifest, fetchVerified, labelLevels, verifyFiles, verifyManifest, vocabularyFiles, weightFiles, workgroupForms } from "./bundle.js";
import { Label, VocabularyError } from "./labels.js";
import { cacheKey, checkPlan, readCachedPlan, slotKey, tunePlan, writeCachedPlan } from "./tune.js";
import { Decoder, fetchDecoder } from "./decode.js";
import { MAX_BRANCHES, SAMPLERS, labelRows, labelStarts, makeGuide, makePlan, resolveClass, samplerTables, stepUniform } from "./schedule.js";
import { drawRGBA, faviconLink, restoreStaticFavicon, setFavicon, toDataURL, toRGBA } from "./favicon.js";

export { BundleError, Label, VocabularyError };
export { FORMAT, FORMAT_VERSION } from "./bundle.js";

// ------------------------------------------------------------------ WebGPU support

// {ok, reason, message, adapter}: reason "no-webgpu" or "no-adapter" when not ok.
export async function checkWebGPU() {
  if (!globalThis.navigator || !navigator.gpu) {
    return { ok: false, reason: "no-webgpu", message: "This browser has no WebGPU (navigator.gpu is missing)." };
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch { /* treated as no adapter */ }
  if (!adapter) {
    return { ok: false, reason: "no-adapter", message: "WebGPU is present but no GPU adapter is available (blocked, or no supported GPU)." };
  }
  return { ok: true, reason: null, message: "", adapter };
}

// A software WebGPU adapter (SwiftShader, lavapipe/llvmpipe, WARP) computes on the CPU through a
// shader emulator, 10x slower than the WebAssembly kernels: "auto" counts it as no GPU.
const SOFTWARE_ADAPTER = /swiftshader|llvmpipe|lavapipe|software|basic render|warp/i;

export function isSoftwareAdapter(adapter) {
  const info = adapter.info || {};
  if (adapter.isFallbackAdapter || info.isFallbackAdapter) return true;
  return SOFTWARE_ADAPTER.test([info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" "));
}

// The smallest module with a SIMD instruction: (func (result v128) i32.const 0 i8x16.splat).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]);

// {ok, message}: WebAssembly with SIMD128 (every current browser; older Safari lacks it).
export function checkWasmSimd() {
  try {
    if (typeof WebAssembly === "object" && WebAssembly.validate(SIMD_PROBE)) return { ok: true, message: "" };
  } catch { /* treated as missing */ }
  return { ok: false, message: "This browser has no WebAssembly SIMD." };
}

export const RUNTIMES = ["auto", "webgpu", "wasm"];

// "webgpu" on a hardware adapter; "wasm" without WebGPU, without an adapter or on a software one.
// Throws (name "UnsupportedError") when neither can run.
export async function chooseRuntime() {
  const gpu = await checkWebGPU();
  if (gpu.ok && !isSoftwareAdapter(gpu.adapter)) return { runtime: "webgpu", reason: "a hardware GPU adapter" };
  const simd = checkWasmSimd();
  if (simd.ok) return { runtime: "wasm", reason: gpu.ok ? "the WebGPU adapter is a software one" : gpu.message };
  if (gpu.ok) return { runtime: "webgpu", reason: "no WebAssembly SIMD; the software adapter is all there is" };
  throw new UnsupportedError(`${gpu.message} ${simd.message}`, gpu.reason);
}

// Neither runtime can run in this browser (reason: checkWebGPU's, e.g. "no-webgpu").
export class UnsupportedError extends Error {
  constructor(message, reason = null) { super(message); this.name = "UnsupportedError"; this.reason = reason; }
}

// ------------------------------------------------------------------ batch-size arithmetic

const lin = (form, B, N) => form[0] * B + form[1] * N + form[2];
const ceilDiv = (a, d) => Math.ceil(a / d);

function bufferBytes(spec, B, N) {
  if (spec.kind === "weight") return Math.ceil(spec.bytes / 4) * 4;
  if (spec.kind === "step") return spec.bytes;
  return Math.ceil((4 * lin(spec.elements, B, N)) / 16) * 16;   // activations: 4-byte elements, 16-byte rounded
}

// ------------------------------------------------------------------ load bundle

// Fetch and verify every file (sha256, sizes, header) before any GPU work; then get a device (WebGPU)
// or start the worker (WebAssembly).
// opts: {runtime: "auto" (default) | "webgpu" | "wasm", signal, useCache = true, onDeviceLost(info),
//        onProgress({file, done, total}), features: [...],
//        plan: "auto" (default: time the bundle's candidate kernels on this adapter at the first batch of
//        each size, cached in localStorage) | "default" (each dispatch's own kernel) | {slot: kernel}}
export async function loadBundle(url, opts = {}) {
  const runtime = opts.runtime || "auto";
  if (!RUNTIMES.includes(runtime)) throw new RangeError(`unknown runtime ${JSON.stringify(runtime)}; choose one of ${RUNTIMES.join(", ")}`);
  const base = new URL(url, globalThis.location ? location.href : undefined);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const manifest = await fetchManifest(base, opts.signal);
  verifyManifest(manifest);
  const stats = { downloaded: 0, cached: 0 };
  const files = {};
  // only what the runtime runs: the weight shards and the kernels (model.onnx and the like stay on the server).
  // Each shard is fetched, sha256-verified and cached on its own (web/bundle.js fetchVerified), one progress
  // step each: an interrupted download of a big model resumes at the first shard not in the Cache API.
  const names = [...weightFiles(manifest.buffers), ...new Set(Object.values(manifest.kernels).map((k) => k.file)), ...vocabularyFiles(manifest)];
  let done = 0;
  // the first bad file stops the other downloads, and no progress is reported after it
  const stop = new AbortController();
  if (opts.signal) opts.signal.addEventListener("abort", () => stop.abort(opts.signal.reason), { once: true });
  await Promise.all(names.map(async (file) => {
    try {
      const fetchOpts = /** @type {any} */ ({ signal: stop.signal, stats, useCache: opts.useCache !== false });
      const buf = await fetchVerified(base, file, manifest.files[file].sha256, fetchOpts);
      files[file] = buf;
      if (opts.onProgress && !stop.signal.aborted) opts.onProgress({ file, done: ++done, total: names.length });
    } catch (e) {
      stop.abort(e);
      throw e;
    }
  }));
  const { tensors, kernels, vocab } = verifyFiles(manifest, files);   // sizes, safetensors header, WGSL vs manifest, vocabulary
  // a latent bundle's VAE decoder (decoder/, export --vae; docs/vae.md): verified the same way, WebGPU only
  const decoderFiles = await fetchDecoder(base, manifest, { signal: opts.signal, stats, useCache: opts.useCache !== false });
  let chosen = { runtime, reason: "asked for" };
  if (decoderFiles) {                // WebGPU whatever was asked: the WebAssembly runtime has no decoder kernels
    const support = await checkWebGPU();
    if (!support.ok) throw new UnsupportedError(`this bundle's VAE decoder needs WebGPU: ${support.message}`);
    chosen = { runtime: "webgpu", reason: "the bundle's VAE decoder runs on WebGPU only" };
  } else if (manifest.dtype === "int8") {   // matmul_q8 is WGSL only: the WebAssembly kernels read f32 / f16 weights
    const support = await checkWebGPU();
    if (!support.ok) throw new UnsupportedError(`this bundle's int8 weights need WebGPU: ${support.message}`);
    chosen = { runtime: "webgpu", reason: "int8 weights run on WebGPU only" };
  } else if (runtime === "auto") chosen = await chooseRuntime();
  if (chosen.runtime === "wasm") {
    const simd = checkWasmSimd();
    if (!simd.ok) throw new UnsupportedError(simd.message);
    const bundle = new WasmBundle(base, manifest, tensors, stats, opts);
    bundle.runtimeReason = chosen.reason;
    bundle.vocab = vocab;
    await bundle.start();
    return bundle;
  }
  const bundle = new Bundle(base, manifest, tensors, kernels, stats, opts);
  bundle.runtimeReason = chosen.reason;
  bundle.vocab = vocab;
  bundle.decoderFiles = decoderFiles;
  await bundle.createDevice();
  return bundle;
}

// ------------------------------------------------------------------ labels (both runtimes)

// A named bundle (vocabulary.json, web/labels.js): a prompt (and a style) -> a Label; the twin of runtime_py
// Bundle.resolve. Throws VocabularyError (one line, the closest labels) for an unknown or ambiguous prompt.
function resolvePrompt(bundle, prompt, style = null) {
  if (!bundle.vocab) throw new RangeError(`a one-level bundle (${bundle.config.num_classes} classes) takes class ids or names, not prompts`);
  return bundle.vocab.resolve(prompt, style);
}

// One label as the sampler takes it: a class id (one-level bundles: an id or a class name); a named bundle's label
// is an array of per-level ids (id = level size: left out) from a Label, an array, a prompt (with `style`), or a
// class id / name of classNames (every level's names, level after level).
function labelIds(bundle, v, what = "label", style = null) {
  const vocab = bundle.vocab;
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

// Everything a sampling run needs before any compute, from sample()'s options (both runtimes).
// A named bundle takes prompt (+ style), className (any label name) or classId, or classIds: labels as labelIds reads them.
function setUpRun(bundle, opts) {
  const m = bundle.manifest;
  const { in_channels: C, input_size: I } = m.model;
  const named = !!bundle.vocab;
  if (!named && (opts.prompt != null || opts.style != null)) throw new RangeError("prompt and style need a named bundle (one with vocabulary.json)");
  const style = opts.style ?? null;
  if (named && style !== null) {              // an unknown style fails even where no label names one
    const vocab = bundle.vocab, last = vocab.levels[vocab.levels.length - 1];
    vocab.label(vocab.level(last), 0, { [last]: style });
  }
  const pick = (v, what) => labelIds(bundle, v, what, style);
  let classIds = opts.classIds;
  if (!classIds) {
    const one = opts.prompt != null ? opts.prompt : opts.className !== undefined ? opts.className : opts.classId;
    if (one === undefined && named && !(opts.compose && opts.compose.length)) throw new RangeError('a named bundle needs a prompt (e.g. {prompt: "hippo"}) or a class');
    classIds = Array(opts.n ?? 1).fill(one === undefined ? (named ? bundle.vocab.null.ids : 0) : one);
  }
  const guide = makeGuide(opts, bundle.classNames, pick);
  classIds = classIds.map((c, n) => pick(c, `class of image ${n}`));
  const steps = opts.steps ?? 25;
  const sampler = opts.sampler || "ddim";
  if (!SAMPLERS.includes(sampler)) throw new RangeError(`unknown sampler ${JSON.stringify(sampler)}; choose one of ${SAMPLERS.join(", ")}`);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
  const tables = samplerTables(m, steps);
  const plan = makePlan(guide, classIds, named ? bundle.vocab.sizes : m.model.num_classes);
  const N = classIds.length, K = guide.copies, J = plan.labels.length;
  if (J > Math.min(MAX_BRANCHES, (m.guidance && m.guidance.max_branches) || MAX_BRANCHES)) throw new RangeError(`${J} guidance branches, the bundle allows ${m.guidance.max_branches}`);
  const B = K * J * N;
  const y = labelRows(plan, K, N, labelStarts(labelLevels(m)));      // [k][j][n], L table rows each
  // latent bundles (with a decoder) sample without x0 clipping: latents are not bounded like pixels
  const common = { tables, steps, seed, K, J, N, plan, guide, sampler, eta: opts.eta ?? 0.0, clipX0: opts.clipX0 ?? !bundle.decoderFiles,
                   prediction: m.sampler.prediction };
  const signal = opts.signal;
  const aborted = () => { if (signal && signal.aborted) throw new DOMException("sampling was stopped", "AbortError"); };
  return { C, I, steps, tables, B, K, J, N, y, common, aborted };
}

export class Bundle {
  constructor(base, manifest, tensors, kernelSources, stats, opts) {
    this.url = base.href;
    this.manifest = manifest;
    this.tensors = tensors;            // {weight buffer name: {buf: its shard's ArrayBuffer, offset, nbytes}}
    this.kernelSources = kernelSources;
    this.stats = stats;                // {downloaded, cached} bytes of this load
    this.onDeviceLost = opts.onDeviceLost || null;
    this.features = opts.features || [];
    this.device = null;
    this.deviceLosses = 0;
    /** @type {Promise<unknown>} */
    this.busy = Promise.resolve();     // sample() calls run one at a time: they share the batch buffers
    this.runtime = "webgpu";
    this.runtimeReason = "";           // why loadBundle chose this runtime
    this.planMode = opts.plan ?? "auto";   // web/tune.js; docs/bundle-format.md "candidates and plans"
    if (typeof this.planMode === "object") checkPlan(this.planMode, manifest);
    else if (!["auto", "default"].includes(this.planMode)) throw new RangeError(`plan must be "auto", "default" or an object, got ${JSON.stringify(this.planMode)}`);
    this.plans = {};                   // "B,N" -> the plan in use
    this.lastTune = null;              // the report of the last timing run
    this.decoderFiles = null;          // a latent bundle's verified decoder/ (web/decode.js), else null
    this.decoder = null;               // its Decoder on the current device
    /** @type {import("./labels.js").Vocabulary | null} */
    this.vocab = null;                 // a named bundle's verified vocabulary.json (web/labels.js), else null
  }

  // every label's name: a one-level bundle's class names; a named bundle's names of every level, level after level
  get classNames() { return this.vocab ? this.vocab.flatNames() : this.manifest.class_names; }
  get config() { return this.manifest.model; }
  resolve(prompt, style = null) { return resolvePrompt(this, prompt, style); }
  label(v, what = "label", style = null) { return labelIds(this, v, what, style); }

  describe() {
    const c = this.config;
    const size = (bytes) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);
    return `${c.in_channels}x${c.input_size}x${c.input_size}, hidden ${c.hidden_size}, depth ${c.depth}, ${this.manifest.dtype}, `
      + `${this.classNames.length} classes, ${size(this.stats.downloaded + this.stats.cached)} (${size(this.stats.cached)} from the cache)`;
  }

  // Adapter and device with the limits the bundle needs (taken from the adapter, not the defaults).
  async createDevice() {
    const support = await checkWebGPU();
    if (!support.ok) throw new Error(support.message);
    const adapter = support.adapter;
    this.checkLimits(adapter);
    const have = adapter.limits;
    /** @type {Record<string, number>} */
    const requiredLimits = {};
    for (const limit of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
      "maxComputeInvocationsPerWorkgroup", "maxStorageBuffersPerShaderStage", "maxComputeWorkgroupSizeX"]) {
      requiredLimits[limit] = have[limit];
    }
    // optional features (e.g. "timestamp-query" for profiling) only where the adapter has them
    const wanted = [...(this.features || []), ...(this.planMode === "auto" ? ["timestamp-query"] : [])];
    const requiredFeatures = [...new Set(wanted)].filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({ label: "ditweb", requiredLimits, requiredFeatures });
    const info = /** @type {any} */ (adapter.info || {});
    this.adapterDescription = [info.vendor, info.architecture, info.description].filter(Boolean).join(" / ") || "WebGPU adapter";
    this.device = device;
    this.batch = null;
    device.lost.then((lost) => {
      if (this.device !== device || this.disposed) return;   // an old device, or our own dispose()
      this.device = null;
      this.deviceLosses += 1;
      if (this.onDeviceLost) this.onDeviceLost(lost);
    });
    device.addEventListener("uncapturederror", (e) => { this.lastGPUError = e.error.message; console.error("ditweb:", e.error.message); });
    await this.createPipelines();
    device.pushErrorScope("out-of-memory");       // the weight shards' buffers: a refusal becomes one clear error
    this.uploadWeights();
    const oom = await device.popErrorScope();
    if (oom) {
      const total = Object.values(this.manifest.buffers).filter((b) => b.kind === "weight").reduce((a, b) => a + b.bytes, 0);
      throw new RangeError(`allocating ${(total / 2 ** 20).toFixed(0)} MiB of weights failed on this GPU (out of memory): ${oom.message}`);
    }
    this.decoder = this.decoderFiles ? await Decoder.create(device, this.decoderFiles) : null;
  }

  // What the bundle needs vs what this adapter allows: a clear message instead of a driver error.
  checkLimits(adapter) {
    const need = this.manifest.limits || {};
    const have = adapter.limits;
    const checks = [
      ["max_storage_buffer_binding_size", "maxStorageBufferBindingSize"],
      ["max_compute_workgroup_storage_size", "maxComputeWorkgroupStorageSize"],
      ["max_compute_invocations_per_workgroup", "maxComputeInvocationsPerWorkgroup"],
      ["max_storage_buffers_per_shader_stage", "maxStorageBuffersPerShaderStage"],
    ];
    for (const [key, limit] of checks) {
      // linear forms are evaluated at B = N = 1: the per-batch check is in state()
      const value = Array.isArray(need[key]) ? lin(need[key], 1, 1) : need[key];
      if (value !== undefined && value > have[limit]) {
        throw new Error(`the bundle needs ${key} = ${value}, this GPU allows ${limit} = ${have[limit]}`);
      }
    }
    // the largest weight buffer must also fit one buffer (weights come in shards, but each tensor is one buffer)
    const largest = Math.max(0, ...Object.values(this.manifest.buffers).filter((b) => b.kind === "weight").map((b) => Math.ceil(b.bytes / 4) * 4));
    if (largest > have.maxBufferSize) throw new Error(`the bundle's largest weight is ${largest} bytes, this GPU allows maxBufferSize = ${have.maxBufferSize}`);
  }

  // ---------------------------------------------------------------- create pipelines
  // The kernels the programs name; candidates are compiled when a plan needs them (pipeline()).
  async createPipelines() {
    this.pipelines = {};
    this.pipelinePromises = {};
    this.plans = {};                   // a new device: plans stay cached, their pipelines are rebuilt
    const used = new Set(Object.values(this.manifest.programs).flatMap((list) => list.map((d) => d.kernel)));
    await Promise.all([...used].map((name) => this.pipeline(name)));
  }

  pipeline(name) {
    if (!this.pipelinePromises[name]) this.pipelinePromises[name] = this.createPipeline(name);
    return this.pipelinePromises[name];
  }

  async createPipeline(name) {
    const device = this.device;
    const k = this.manifest.kernels[name];
    const module = device.createShaderModule({ label: name, code: this.kernelSources[name] });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((msg) => msg.type === "error");
    if (errors.length) {
      throw new BundleError(k.file, `WGSL does not compile: ${errors.map((e) => `line ${e.lineNum}: ${e.message}`).join("; ")}`);
    }
    const layout = device.createBindGroupLayout({
      label: name,
      entries: k.bindings.map((b) => ({ binding: b.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: b.type } })),
    });
    try {
      const pipeline = await device.createComputePipelineAsync({
        label: name,
        layout: device.createPipelineLayout({ label: name, bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: "main" },
      });
      this.pipelines[name] = { pipeline, layout };
      return this.pipelines[name];
    } catch (e) {
      throw new BundleError(k.file, `pipeline ${name} could not be created: ${e.message}`);
    }
  }

  // The plan of batch (B, N) under the plan mode: the forced one, the cached one, or timed now (the first
  // batch of each size on this adapter; this.lastTune holds the report).
  async ensurePlan(B, N) {
    const id = `${B},${N}`;
    if (this.plans[id]) return this.plans[id];
    let plan = {};
    if (typeof this.planMode === "object") plan = this.planMode;
    else if (this.planMode === "auto" && Object.keys(this.manifest.candidates || {}).length) {
      const key = cacheKey(this.adapterDescription, this.manifest, B, N);
      plan = readCachedPlan(key, this.manifest);
      if (!plan) {
        const tuned = await tunePlan(this, B, N);
        this.lastTune = tuned.report;
        plan = tuned.plan;
        writeCachedPlan(key, plan);
      }
    }
    await Promise.all(Object.values(plan).map((k) => this.pipeline(k)));
    this.plans[id] = plan;
    return plan;
  }

  uploadWeights() {
    this.weightBuffers = {};
    for (const [name, spec] of Object.entries(this.manifest.buffers)) {
      if (spec.kind !== "weight") continue;
      const t = this.tensors[name];
      const size = bufferBytes(spec, 1, 1);
      const buffer = this.device.createBuffer({ label: name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
      if (size === t.nbytes) {
        this.device.queue.writeBuffer(buffer, 0, t.buf, t.offset, t.nbytes);
      } else {   // odd f16 count: pad to a whole u32 word with a zero half
        const padded = new Uint8Array(size);
        padded.set(new Uint8Array(t.buf, t.offset, t.nbytes));
        this.device.queue.writeBuffer(buffer, 0, padded);
      }
      this.weightBuffers[name] = buffer;
    }
  }

  // Activation buffers, params uniforms and bind groups for batch (B, N) with a plan ({slot: kernel}; by
  // default the one ensurePlan chose); one batch size stays resident.
  state(B, N, plan = undefined) {
    plan = plan || this.plans[`${B},${N}`] || {};
    if (this.batch && this.batch.B === B && this.batch.N === N && this.batch.plan === plan) return this.batch;
    if (this.batch) for (const b of this.batch.owned) b.destroy();
    const device = this.device;
    const maxBinding = device.limits.maxStorageBufferBindingSize;
    const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    const owned = [];
    const buffers = { ...this.weightBuffers };
    for (const [name, spec] of Object.entries(this.manifest.buffers)) {
      if (spec.kind === "weight") continue;
      const size = bufferBytes(spec, B, N);
      if (size > maxBinding) throw new RangeError(`batch B=${B}, N=${N}: buffer ${name} needs ${size} bytes, above this GPU's maxStorageBufferBindingSize ${maxBinding}; use fewer images or guidance branches`);
      const usage = spec.kind === "step" ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
        : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      buffers[name] = device.createBuffer({ label: name, size: Math.max(size, 16), usage });
      owned.push(buffers[name]);
    }
    const programs = {};
    for (const [prog, dispatches] of Object.entries(this.manifest.programs)) {
      programs[prog] = dispatches.map((d) => {
        const values = d.params.map((form) => lin(form, B, N));
        const kernelName = plan[slotKey(d.kernel, values)] || d.kernel;
        const kernel = this.manifest.kernels[kernelName];
        const words = new Uint32Array(Math.max(4, Math.ceil(d.params.length / 4) * 4));
        d.params.forEach((form, i) => { words[i] = lin(form, B, N); });
        const params = device.createBuffer({ label: `${d.label} params`, size: words.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(params, 0, words);
        owned.push(params);
        const forms = kernelName === d.kernel ? d.workgroups : workgroupForms(kernel, d.params);
        const workgroups = forms.map((f) => ceilDiv(lin(f, B, N), f[3]));
        if (workgroups.some((w) => w > maxGroups)) {
          throw new RangeError(`batch B=${B}, N=${N}: dispatch ${d.label} needs ${workgroups.join("x")} workgroups, above this GPU's ${maxGroups} per dimension`);
        }
        const bound = [params, ...d.bindings.map((n) => buffers[n])];
        const bindGroup = device.createBindGroup({
          label: d.label,
          layout: this.pipelines[kernelName].layout,
          entries: bound.map((buffer, binding) => ({ binding, resource: { buffer } })),
        });
        return { label: d.label, pipeline: this.pipelines[kernelName].pipeline, bindGroup, workgroups, kernel,
                 kernelName: d.kernel, values, bound, dispatch: d };
      });
    }
    const stepBuffer = Object.entries(this.manifest.buffers).find(([, s]) => s.kind === "step");
    this.batch = { B, N, plan, buffers, programs, owned, step: stepBuffer ? buffers[stepBuffer[0]] : null };
    return this.batch;
  }

  // {pipeline, bindGroup, workgroups} of dispatch i of program prog in the resident batch, run by kernel
  // kname (a candidate of its kernel; its pipeline must exist).
  alternative(prog, i, kname) {
    const { dispatch: d, bound } = this.batch.programs[prog][i];
    const k = this.manifest.kernels[kname];
    const { pipeline, layout } = this.pipelines[kname];
    const forms = kname === d.kernel ? d.workgroups : workgroupForms(k, d.params);
    const bindGroup = this.device.createBindGroup({ label: `${d.label} [${kname}]`, layout,
                                                    entries: bound.map((buffer, binding) => ({ binding, resource: { buffer } })) });
    return { pipeline, bindGroup, workgroups: forms.map((f) => ceilDiv(lin(f, this.batch.B, this.batch.N), f[3])) };
  }

  // ---------------------------------------------------------------- run step
  // Encode programs into one compute pass of one command buffer (WebGPU orders the dispatches).
  encode(names) {
    const encoder = this.device.createCommandEncoder({ label: names.join("+") });
    const pass = encoder.beginComputePass({ label: names.join("+") });
    for (const name of names) {
      for (const d of this.batch.programs[name]) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
      }
    }
    pass.end();
    return encoder;
  }

  runStep(record) {
    this.device.queue.writeBuffer(this.batch.step, 0, record);
    this.device.queue.submit([this.encode(["step_begin", "forward", "step_end"]).finish()]);
  }

  async readBuffer(name, bytes) {
    const src = this.batch.buffers[name];
    const staging = this.device.createBuffer({ label: `read ${name}`, size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder({ label: `read ${name}` });
    encoder.copyBufferToBuffer(src, 0, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      throw new DeviceLostError(`reading ${name} failed: ${e.message}`);
    }
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.destroy();
    return out;
  }

  // A plain forward pass: x (B, C, I, I) f32, t (B,) ints, y (B,) class ids (a named bundle: B labels, arrays of
  // per-level ids) -> out (B, C_out, I, I) Float32Array.
  async forward(x, t, y) {
    const io = this.manifest.io;
    const B = t.length;
    const per = io.x_shape.reduce((a, b) => a * b, 1);
    if (x.length !== B * per || y.length !== B) throw new RangeError(`forward: x must hold ${B} x ${per} floats and y ${B} labels`);
    const rows = labelRows({ labels: [Array.from(y, (v) => (this.vocab ? this.label(v) : v))] }, 1, B, labelStarts(labelLevels(this.manifest)));
    await this.ensureDevice();
    await this.ensurePlan(B, B);
    this.state(B, B);
    const q = this.device.queue;
    q.writeBuffer(this.batch.buffers[io.x], 0, Float32Array.from(x));
    q.writeBuffer(this.batch.buffers[io.t], 0, Uint32Array.from(t));
    q.writeBuffer(this.batch.buffers[io.y], 0, rows);
    q.submit([this.encode(["forward"]).finish()]);
    return this.readBuffer(io.out, 4 * B * io.out_shape.reduce((a, b) => a * b, 1));
  }

  async ensureDevice() {
    if (!this.device) await this.createDevice();   // first use after a device loss: new device, pipelines, weights
  }

  tables(steps) {
    return samplerTables(this.manifest, steps);
  }

  // ---------------------------------------------------------------- sample
  // opts: className | classId (or classIds for several images), n, seed, steps, cfg, cfgEnd,
  //   negativeClass, compose [[class, weight], ...], schedule, interval [lo, hi],
  //   batchEstimate {k, tau}, sampler "ddim" | "ddpm", eta, clipX0, signal, onStep, preview.
  // Returns {rgba: [Uint8ClampedArray (H, W, 4) per image], x: Float32Array (N, C, I, I), width,
  //   height, channels, msPerStep}; a latent bundle (decoder/) also returns image: Float32Array (N, 3, H, W)
  //   from its VAE decoder, and rgba / width / height are the decoded pictures. A device lost on the way
  //   is recreated and the run starts again (the result is a pure function of the options, so nothing is
  //   lost but time).
  sample(opts = {}) {
    const run = this.busy.then(() => this.sampleWithRecovery(opts));
    this.busy = run.catch(() => {});
    return run;
  }

  async sampleWithRecovery(opts) {
    for (let attempt = 0; ; attempt++) {
      const device = this.device;
      try {
        return await this.sampleOnce(opts);
      } catch (e) {
        if (!(e instanceof DeviceLostError) || attempt >= 2) throw e;
        // a failed read-back is a loss only if the device says so (its lost handler then clears this.device)
        const lost = !device || await Promise.race([device.lost.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]);
        if (!lost) throw e;
      }
    }
  }

  async sampleOnce(opts) {
    const m = this.manifest;
    const { C, I, steps, tables, B, N, y, common, aborted } = setUpRun(this, opts);
    aborted();

    await this.ensureDevice();
    await this.ensurePlan(B, N);
    const device = this.device;
    this.state(B, N);
    device.queue.writeBuffer(this.batch.buffers[m.io.y], 0, y);
    device.queue.writeBuffer(this.batch.step, 0, stepUniform({ ...common, i: null, nDone: 0 }));
    device.queue.submit([this.encode(["init"]).finish()]);

    const bytes = 4 * N * C * I * I;
    const started = performance.now();
    for (let nDone = 0; nDone < steps; nDone++) {
      const i = steps - 1 - nDone;
      this.runStep(stepUniform({ ...common, i, nDone }));
      // Waiting on each step costs a little throughput but gives honest per-step times,
      // prompt cancellation and the live preview.
      const preview = opts.preview && nDone + 1 < steps ? await this.readBuffer(m.io.sample, bytes) : null;
      if (!preview) await device.queue.onSubmittedWorkDone();
      if (this.device !== device) throw new DeviceLostError("the GPU device was lost during sampling");
      aborted();
      if (opts.onStep) {
        const msPerStep = (performance.now() - started) / (nDone + 1);
        opts.onStep({ step: nDone + 1, steps, t: tables.t[i], msPerStep, x: preview, ...(preview ? this.images(preview, C, I) : {}) });
      }
    }
    const x = await this.readBuffer(m.io.sample, bytes);
    if (this.device !== device) throw new DeviceLostError("the GPU device was lost during sampling");
    const msPerStep = (performance.now() - started) / steps;
    if (this.decoder) {                // a latent bundle: RGB images from its VAE decoder, run once
      const image = await this.decoder.decode(x, N);
      if (this.device !== device) throw new DeviceLostError("the GPU device was lost during decoding");
      const [Ci, H, W] = this.decoder.manifest.image_shape;
      const per = Ci * H * W;
      const rgba = [];
      for (let n = 0; n < N; n++) rgba.push(toRGBA(image.subarray(n * per, (n + 1) * per), Ci, H, W));
      return { x, image, rgba, width: W, height: H, channels: C, msPerStep, B, K: common.K, J: common.J, N, runtime: this.runtime };
    }
    return { x, ...this.images(x, C, I), channels: C, msPerStep, B, K: common.K, J: common.J, N,
             runtime: this.runtime };
  }

  images(x, C, I) {
    const per = C * I * I;
    const rgba = [];
    for (let n = 0; n < x.length / per; n++) rgba.push(toRGBA(x.subarray(n * per, (n + 1) * per), C, I, I));
    return { rgba, width: I, height: I };
  }

  dispose() {
    this.disposed = true;
    if (this.device) this.device.destroy();
    this.device = null;
  }
}

// ------------------------------------------------------------------ the WebAssembly runtime

// The same interface as Bundle (sample, forward, describe, dispose), computed by ditweb-kernels.wasm
// in a Web Worker: one message per step, so the page stays responsive and an abort or a time budget
// takes effect between steps. Single-threaded: it runs on every page, cross-origin isolated or not.
export class WasmBundle {
  constructor(base, manifest, tensors, stats, opts) {
    this.url = base.href;
    this.manifest = manifest;
    this.tensors = tensors;            // {weight buffer name: {buf, offset, nbytes}} (the shards' ArrayBuffers)
    this.stats = stats;
    this.opts = opts;
    this.runtime = "wasm";
    this.adapterDescription = "WebAssembly SIMD, 1 thread (Web Worker)";
    this.worker = null;
    this.calls = new Map();
    this.nextId = 1;
    /** @type {Promise<unknown>} */
    this.busy = Promise.resolve();
    this.runtimeReason = "";
    /** @type {import("./labels.js").Vocabulary | null} */
    this.vocab = null;                 // a named bundle's verified vocabulary.json (web/labels.js), else null
  }

  // every label's name: a one-level bundle's class names; a named bundle's names of every level, level after level
  get classNames() { return this.vocab ? this.vocab.flatNames() : this.manifest.class_names; }
  get config() { return this.manifest.model; }
  resolve(prompt, style = null) { return resolvePrompt(this, prompt, style); }
  label(v, what = "label", style = null) { return labelIds(this, v, what, style); }
  describe() { return Bundle.prototype.describe.call(this); }
  tables(steps) { return samplerTables(this.manifest, steps); }
  images(x, C, I) { return Bundle.prototype.images.call(this, x, C, I); }

  // Fetch the kernels (next to this file), start the worker and unpack the weights there.
  async start() {
    const wasmUrl = this.opts.wasmUrl || new URL("./ditweb-kernels.wasm", import.meta.url);
    let module;
    try {
      const response = await fetch(wasmUrl, { signal: this.opts.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      module = await WebAssembly.compile(await response.arrayBuffer());
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
    await this.call("init", { module, manifest: this.manifest, tensors: this.tensors });
  }

  call(cmd, args = {}, transfer = []) {
    if (!this.worker) return Promise.reject(new Error("the WebAssembly runtime was disposed"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.worker.postMessage({ id, cmd, ...args }, transfer);
    });
  }

  async forward(x, t, y) {
    const io = this.manifest.io;
    const B = t.length;
    const per = io.x_shape.reduce((a, b) => a * b, 1);
    if (x.length !== B * per || y.length !== B) throw new RangeError(`forward: x must hold ${B} x ${per} floats and y ${B} labels`);
    const rows = labelRows({ labels: [Array.from(y, (v) => (this.vocab ? this.label(v) : v))] }, 1, B, labelStarts(labelLevels(this.manifest)));
    // after any running sample(): the worker has one set of batch buffers
    const run = this.busy.then(() => this.call("forward", { x: Float32Array.from(x), t: Uint32Array.from(t), y: rows }));
    this.busy = run.catch(() => {});
    return run;
  }

  sample(opts = {}) {
    const run = this.busy.then(() => this.sampleOnce(opts));
    this.busy = run.catch(() => {});
    return run;
  }

  async sampleOnce(opts) {
    const m = this.manifest;
    const { C, I, steps, tables, B, N, y, common, aborted } = setUpRun(this, opts);
    aborted();
    await this.call("state", { B, N, y });
    await this.call("run", { programs: ["init"], record: stepUniform({ ...common, i: null, nDone: 0 }) });
    const count = N * C * I * I;
    const started = performance.now();
    const kernelMs = [];
    let x = null;
    for (let nDone = 0; nDone < steps; nDone++) {
      const i = steps - 1 - nDone;
      const last = nDone + 1 === steps;
      const reply = await this.call("run", {
        programs: ["step_begin", "forward", "step_end"],
        record: stepUniform({ ...common, i, nDone }),
        read: opts.preview || last ? { name: m.io.sample, count } : null,
      });
      kernelMs.push(reply.ms);
      x = reply.x;
      aborted();
      if (opts.onStep) {
        const msPerStep = (performance.now() - started) / (nDone + 1);
        const preview = last ? null : x;
        opts.onStep({ step: nDone + 1, steps, t: tables.t[i], msPerStep, x: preview, ...(preview ? this.images(preview, C, I) : {}) });
      }
    }
    return { x, ...this.images(x, C, I), channels: C, msPerStep: (performance.now() - started) / steps, kernelMs,
             B, K: common.K, J: common.J, N, runtime: this.runtime };
  }

  dispose() {
    this.disposed = true;
    if (this.worker) this.worker.terminate();
    this.worker = null;
    for (const call of this.calls.values()) call.reject(new Error("the WebAssembly runtime was disposed"));
    this.calls.clear();
  }
}

export class DeviceLostError extends Error {
  constructor(message) { super(message); this.name = "DeviceLostError"; }
}

// ------------------------------------------------------------------ the favicon

// Animate the page's <link rel="icon"> through the denoising steps (x_t after each step) and
// leave the final image as the favicon; the same on both runtimes. opts: everything sample() takes,
// plus canvas (drawn too), timeBudgetMs (stop with a "TimeoutError" once a run takes longer; the
// signal aborts as before) and remember (default true: the drawn favicon is kept in localStorage per
// bundle and shown at once on the next visit, before a new one is drawn).
// On failure the previous favicon (the remembered one, else the static one) is kept and the error thrown.
export async function diffuseFavicon(bundle, opts = {}) {
  faviconLink();   // remember the static favicon before the first frame
  const { canvas, onStep, timeBudgetMs } = opts;
  const remember = opts.remember !== false;
  const key = `ditweb-favicon:${bundle.url}`;
  const stored = remember ? rememberedFavicon(key) : null;
  if (stored) faviconLink().href = stored;
  const controller = new AbortController();
  const stop = (reason) => controller.abort(reason);
  if (opts.signal) {
    if (opts.signal.aborted) stop(opts.signal.reason);
    else opts.signal.addEventListener("abort", () => stop(opts.signal.reason), { once: true });
  }
  const timer = timeBudgetMs > 0 ? setTimeout(() => stop("budget"), timeBudgetMs) : null;
  try {
    const result = await bundle.sample({
      ...opts,
      signal: controller.signal,
      n: 1,
      preview: true,
      onStep: (info) => {
        let dataURL = null;
        if (info.rgba) {
          dataURL = setFavicon(info.rgba[0], info.width, info.height);
          if (canvas) drawRGBA(canvas, info.rgba[0], info.width, info.height);
        }
        if (onStep) onStep({ ...info, dataURL, runtime: bundle.runtime });
      },
    });
    result.dataURL = setFavicon(result.rgba[0], result.width, result.height);
    if (canvas) drawRGBA(canvas, result.rgba[0], result.width, result.height);
    if (onStep) onStep({ step: opts.steps ?? 25, steps: opts.steps ?? 25, msPerStep: result.msPerStep, dataURL: result.dataURL, runtime: result.runtime });
    if (remember) {
      try { localStorage.setItem(key, result.dataURL); } catch { /* storage full or blocked: nothing to remember */ }
    }
    return result;
  } catch (e) {
    if (stored) faviconLink().href = stored; else restoreStaticFavicon();
    if (e.name === "AbortError" && controller.signal.reason === "budget") {
      throw new DOMException(`the favicon took longer than its time budget of ${timeBudgetMs} ms`, "TimeoutError");
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function rememberedFavicon(key) {
  try {
    const v = localStorage.getItem(key);
    return v && v.startsWith("data:image/png;base64,") ? v : null;
  } catch {
    return null;
  }
}

export { toRGBA, toDataURL };

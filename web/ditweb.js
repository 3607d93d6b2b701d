// ditweb.js: run a ditweb shader bundle (docs/bundle-format.md) with WebGPU, or with the
// WebAssembly SIMD kernels (ditweb-kernels.wasm, in a Web Worker) where WebGPU is missing or runs
// on a software adapter. This module chooses the runtime and loads the bundle; the rest is one job a file:
//   webgpu-bundle.js  the WebGPU bundle (pipelines, batch state, a step as one command buffer); imported by
//                     loadBundle on the WebGPU path only: a visitor on WebAssembly does not download it
//   wasm-bundle.js    the WebAssembly bundle: a proxy of ditweb-worker.js (wasm-runtime.js, the kernels)
//   sampling.js       the one sampling loop both serve (run set-up, step records, onStep, the result)
//   favicon.js        pixels -> the page's <link rel="icon">, and diffuseFavicon, its animation
// No model-specific code: shapes, bindings and workgroup counts all come from the manifest.
//
//   const b = await loadBundle("bundle/");              // {runtime: "auto" | "webgpu" | "wasm"}
//   const { rgba, width, height, runtime } = await b.sample({ className: "hippo", seed: 7, steps: 25, cfg: 4 });
//   await diffuseFavicon(b, { classId: 0, seed: 7 });   // animates <link rel="icon">
//
// Both runtimes run the same manifest programs with the same step records (schedule.js), so a seed
// gives the same image on either; b.runtime and every sample result say which one ran.

import { FORMAT, FORMAT_VERSION, VOCABULARY_FILE, bundleFiles, earlyVocabulary, fetchManifest, fetchVerified, isSha256Hex, measure,
  openCache, unsafePath, verifyFiles, verifyManifest } from "./bundle.js";
import { fetchDecoder } from "./decode.js";
import { SIMD_MODES, WasmBundle, chooseSimd } from "./wasm-bundle.js";
import { wasmDecoderProblem } from "./wasm-decode.js";

export { BundleError, FORMAT, FORMAT_VERSION } from "./bundle.js";
export { Label, VocabularyError } from "./labels.js";
export { SIMD_MODES, WasmBundle, checkRelaxedSimd } from "./wasm-bundle.js";
export { diffuseFavicon, toDataURL, toRGBA } from "./favicon.js";
export { DeviceLostError, NonFiniteError } from "./sampling.js";
// The WebGPU bundle's class (webgpu-bundle.js Bundle, what loadBundle returns on that path) is not re-exported here:
// that would make every page download the module, the WebAssembly path included. Packages import it by name:
// `import { Bundle } from "ditweb/webgpu-bundle"` (package.json "exports").

// ------------------------------------------------------------------ runtime choice

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

// ------------------------------------------------------------------ load bundle

// Fetch and verify every file the runtime reads (sha256, sizes, header) before any GPU work; then get a device
// (WebGPU) or start the worker (WebAssembly). When the runtime is WebAssembly already before the download (asked for,
// or "auto" in a browser without navigator.gpu: no adapter is requested before verification), only the files it runs
// are fetched (bundleFiles: the weights and a named model's vocabulary, no WGSL, no model card), and the kernels are
// fetched and compiled and the worker started while they download (startEarly); otherwise every listed file is, as
// WebGPU may be chosen. No byte of the bundle reaches the worker before every file it needs is verified.
// opts: {runtime: "auto" (default) | "webgpu" | "wasm", signal, useCache = true, onDeviceLost(info),
//        onProgress({file, done, total}), features: [...],
//        plan: "auto" (default: time the bundle's candidate kernels on this adapter at the first batch of
//        each size, cached in localStorage) | "default" (each dispatch's own kernel) | {slot: kernel},
//        WebAssembly: threads: N, simd: "auto" (default: relaxed SIMD where the browser validates it) | "relaxed" | "plain",
//        manifestFetch: {url, response} (manifest.json already asked for: its URL and the Promise of its Response, used
//        where url is this bundle's manifest; read and verified as a fetch of its own),
//        earlyWorker: the WebAssembly worker already started (web/early.js: {worker, opened, up, error, release}),
//        vocabulary: "now" (default) | "later" (a named bundle's vocabulary.json is not downloaded: bundle.vocab stays
//        null until bundle.loadVocabulary(), and until then its labels are taken as per-level ids only)}
export async function loadBundle(url, opts = {}) {
  const runtime = opts.runtime || "auto";
  if (!RUNTIMES.includes(runtime)) throw new RangeError(`unknown runtime ${JSON.stringify(runtime)}; choose one of ${RUNTIMES.join(", ")}`);
  if (![undefined, "now", "later"].includes(opts.vocabulary)) throw new RangeError(`unknown vocabulary ${JSON.stringify(opts.vocabulary)}; choose "now" or "later"`);
  // an unknown simd, or relaxed SIMD asked for where there is none: one line before any download
  if (runtime === "wasm" || !SIMD_MODES.includes(opts.simd ?? "auto")) chooseSimd(opts);
  const base = new URL(url, globalThis.location ? location.href : undefined);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const stats = { downloaded: 0, cached: 0 };
  const fetchFor = sureOfWasm(runtime) ? "wasm" : "webgpu";        // the runtime whose files are fetched
  // what needs no byte of the bundle starts before its manifest is asked for: the Cache API opened, and on the
  // WebAssembly path the kernels fetched and compiled and the worker started
  if (opts.useCache !== false) openCache();
  const early = startEarly(fetchFor, base, stats, opts);
  const pending = [];                  // the Cache API writes of the downloads (fetchVerified)
  try {
    const got = await downloadBundle(base, fetchFor, stats, opts, pending, early);
    return await startBundle(base, runtime, fetchFor, got, stats, opts, pending, early);
  } catch (e) {
    if (early.bundle) early.bundle.dispose();
    throw e;
  }
}

// loadBundle's download: the manifest and the files fetchFor's runtime reads, each verified ({manifest, files,
// tensors, kernels, vocab, decoder: the Promise of fetchDecoder's outcome}); the Cache API writes it starts go to pending.
async function downloadBundle(base, fetchFor, stats, opts, pending, early) {
  const t0 = performance.now();
  const manifest = await fetchManifest(base, opts.signal, opts.manifestFetch);
  const t1 = performance.now();
  measure("manifest", t0, t1);
  // The files the runtime reads, where the manifest lists them plainly (downloadList: safe names, each with a
  // sha256): their downloads go out first (fetchVerified issues a request in the call where no cache may hold the
  // file) and the manifest is verified while the bytes arrive; a manifest that fails stops them, with its own
  // error, and nothing downloaded is used before it has passed. A listing that is not plain: verified first.
  const later = opts.vocabulary === "later";
  const names = downloadList(manifest, fetchFor, later);
  if (!names) verifyManifest(manifest);
  const t2 = performance.now();
  const halt = new AbortController();
  if (opts.signal && opts.signal.aborted) halt.abort(opts.signal.reason);
  else if (opts.signal) opts.signal.addEventListener("abort", () => halt.abort(opts.signal.reason), { once: true });
  // a named model's vocabulary is parsed and checked as soon as it is in (verified), while the weights download
  const checked = {};
  const onFile = (file, buf) => {
    if (file !== VOCABULARY_FILE) return;
    const t = performance.now();
    checked.vocab = earlyVocabulary(manifest, buf);
    measure("vocabulary", t);
  };
  const wanted = names || bundleFiles(manifest, fetchFor).filter((f) => !(later && f === VOCABULARY_FILE));
  const downloads = fetchFiles(base, manifest, wanted, stats, { ...opts, signal: halt.signal, pending, onFile });
  downloads.catch(() => {});          // awaited below, once the manifest has passed
  const t3 = performance.now();
  measure("requests", t2, t3);
  try {
    if (names) verifyManifest(manifest);
  } catch (e) {
    halt.abort(e);
    throw e;
  }
  measure("verify manifest", names ? t3 : t1, names ? performance.now() : t2);
  if (early.bundle) early.bundle.manifest = manifest;
  // a latent bundle's decoder/ (export --vae; docs/vae.md) downloads alongside, now that the manifest that vouches for
  // it has passed: web/decode.js fetchDecoder verifies it the same way (on the WebAssembly path without its WGSL,
  // where the WebAssembly kernels run every kernel of it); startBundle awaits it, after the files
  const withoutWgsl = fetchFor === "wasm" ? (m) => !wasmDecoderProblem(m) : undefined;
  const decoder = fetchDecoder(base, manifest, { signal: halt.signal, stats, useCache: opts.useCache !== false, withoutWgsl });
  decoder.catch(() => {});
  let files;
  try {
    files = await downloads;
  } catch (e) {
    halt.abort(e);                    // the decoder's downloads too
    throw e;
  }
  const t4 = performance.now();
  measure("files", t2, t4);
  const verified = verifyFiles(manifest, files, fetchFor, { ...checked, later });   // sizes, safetensors header, WGSL vs manifest, vocabulary
  measure("verify files", t4);
  return { manifest, files, ...verified, decoder };
}

// loadBundle's end: the runtime for the verified files (a latent bundle's decoder, verified the same way, may
// decide it), its bundle object, and its start (the WebAssembly worker's init, or a WebGPU device).
async function startBundle(base, runtime, fetchFor, got, stats, opts, pending, early) {
  const { manifest, files } = got;
  let { tensors, kernels, vocab } = got;
  // a latent bundle's VAE decoder (decoder/, downloaded alongside the files: downloadBundle), run on either path
  let decoderFiles = await got.decoder;
  const chosen = await runtimeFor(runtime, decoderFiles);
  let bundle;
  if (chosen.runtime === "wasm") {
    const simd = checkWasmSimd();
    if (!simd.ok) throw new UnsupportedError(simd.message);
    bundle = early.bundle || new WasmBundle(base, manifest, tensors, stats, opts);
    bundle.tensors = tensors;        // verified: start() hands them to the worker
  } else {
    if (fetchFor === "wasm") {       // WebAssembly asked for, and a decoder only WebGPU runs: its files too
      const later = opts.vocabulary === "later";
      const rest = bundleFiles(manifest).filter((f) => !Object.prototype.hasOwnProperty.call(files, f) && !(later && f === VOCABULARY_FILE));
      Object.assign(files, await fetchFiles(base, manifest, rest, stats, { ...opts, pending }));
      ({ tensors, kernels, vocab } = verifyFiles(manifest, files, "webgpu", { later }));
      if (decoderFiles && !decoderFiles.kernels) decoderFiles = await fetchDecoder(base, manifest, { signal: opts.signal, stats, useCache: opts.useCache !== false });
    }
    const { Bundle } = await import("./webgpu-bundle.js");
    bundle = new Bundle(base, manifest, tensors, kernels, stats, opts, checkWebGPU);
  }
  if (early.bundle && early.bundle !== bundle) early.bundle.dispose();   // a decoder only WebGPU runs
  bundle.decoderFiles = decoderFiles;
  bundle.runtimeReason = chosen.reason;
  bundle.vocab = vocab;
  const t5 = performance.now();
  const ready = Promise.all([bundle instanceof WasmBundle ? bundle.start().then(() => measure("start", t5)) : bundle.createDevice(),
                             Promise.all(pending).then(() => measure("cache writes", t5))]);
  if (vocab && bundle instanceof WasmBundle && typeof vocab.entries === "function") {
    // while the worker unpacks the weights, this thread builds the vocabulary's look-up index, which the first
    // prompt needs (once the init message is out: a task later)
    await new Promise((resolve) => setTimeout(resolve, 0));
    const t6 = performance.now();
    vocab.entries();
    measure("label index", t6);
  }
  await ready;
  return bundle;
}

// The files loadBundle downloads for a runtime (bundleFiles), where the unverified manifest lists each of them plainly:
// files an object, every name a safe relative path (unsafePath: the URL stays under the bundle's) with a sha256 of 64
// hex digits. null otherwise (the manifest is then verified before anything is fetched, and names the fault).
// later: a named bundle's vocabulary.json left out (loadBundle's {vocabulary: "later"}).
function downloadList(m, runtime, later) {
  try {
    if (m.format !== FORMAT || m.format_version !== FORMAT_VERSION) return null;
    const names = bundleFiles(m, runtime).filter((f) => !(later && f === VOCABULARY_FILE));
    const own = (o, k) => o !== null && typeof o === "object" && !Array.isArray(o) && Object.prototype.hasOwnProperty.call(o, k);
    const plain = names.every((f) => !unsafePath(f) && own(m.files, f) && own(m.files[f], "sha256")
                                     && isSha256Hex(m.files[f].sha256));
    return plain && names.length ? names : null;
  } catch {
    return null;                         // buffers or model not as the schema says: verifyManifest names it
  }
}

// Whether the runtime is WebAssembly for sure before anything is downloaded, without asking for an adapter: asked
// for, or "auto" in a browser without navigator.gpu.
function sureOfWasm(runtime) {
  const nav = /** @type {any} */ (globalThis.navigator);
  return runtime === "wasm" || (runtime === "auto" && !(nav && nav.gpu));
}

// {bundle}: the WebAssembly bundle started before the download, before the manifest even (its kernels fetched and
// compiled, its worker up; no manifest and no weights yet: loadBundle sets the manifest once it is verified) where
// the runtime is sure to be WebAssembly (fetchFor "wasm"); bundle null otherwise.
function startEarly(fetchFor, base, stats, opts) {
  if (fetchFor !== "wasm" || !checkWasmSimd().ok) return { bundle: null };
  try {
    return { bundle: new WasmBundle(base, null, null, stats, opts).prestart() };
  } catch {
    return { bundle: null };           // an opts error: loadBundle's own WasmBundle reports it
  }
}

// The files named (bundleFiles: a runtime's; decoder/ is fetchDecoder's), every one verified.
// Each weight shard is fetched, sha256-verified and cached on its own (web/bundle.js fetchVerified), one progress
// step each: an interrupted download of a big model resumes at the first shard not in the Cache API. The first
// bad file stops the other downloads, and no progress is reported after it.
async function fetchFiles(base, manifest, names, stats, opts) {
  const files = {};
  let done = 0;
  const stop = new AbortController();
  if (opts.signal) opts.signal.addEventListener("abort", () => stop.abort(opts.signal.reason), { once: true });
  await Promise.all(names.map(async (file) => {
    try {
      const fetchOpts = /** @type {any} */ ({ signal: stop.signal, stats, useCache: opts.useCache !== false,
                                               pending: opts.pending });
      files[file] = await fetchVerified(base, file, manifest.files[file].sha256, fetchOpts);
      if (stop.signal.aborted) return;
      if (opts.onFile) opts.onFile(file, files[file]);
      if (opts.onProgress) opts.onProgress({ file, done: ++done, total: names.length });
    } catch (e) {
      stop.abort(e);
      throw e;
    }
  }));
  return files;
}

// {runtime, reason} for this bundle: as asked or chosen, except that a latent bundle whose decoder has a kernel the
// WebAssembly kernels lack (a mid-block attention: wasm-decode.js wasmDecoderProblem) takes WebGPU, and without
// WebGPU is a one-line UnsupportedError naming the kernel, before the worker starts or anything is allocated.
async function runtimeFor(runtime, decoderFiles) {
  const chosen = runtime === "auto" ? await chooseRuntime() : { runtime, reason: "asked for" };
  const problem = chosen.runtime === "wasm" && decoderFiles ? wasmDecoderProblem(decoderFiles.manifest) : null;
  if (!problem) return chosen;
  const support = await checkWebGPU();
  if (!support.ok) throw new UnsupportedError(`${problem}, and there is no WebGPU: ${support.message}`);
  return { runtime: "webgpu", reason: `${problem}: WebGPU runs it` };
}

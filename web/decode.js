// The VAE decoder of a latent bundle (decoder/, written by `ditweb export CKPT OUT --vae VAE`): fetch and verify
// decoder/ before any GPU work, run it on WebGPU (Decoder) once after sampling, and its preview map
// (previewPictures: x_t -> a picture every step, on either runtime; the WebAssembly decoder is wasm-decode.js).
// The twin of runtime_py/decode.py; the format is ditformat/decoder-schema.json (docs/vae.md, "Bundles with a
// decoder", "Live previews"). Its weights come in shards of at most 64 MiB, each verified (sha256) and cached by
// fetchVerified, so an interrupted download resumes shard by shard.
import { DECODER_SCHEMA } from "./bundle-schema.js";
import { BundleError, REACH_BATCHES, checkDispatch, checkIoSizes, checkKernelBindings, checkPaths, checkReach, fetchVerified,
  parseJson, schemaError, verifyKernelSource, verifyShards } from "./bundle.js";
import { evaluate } from "./forms.js";
import { decodedPictures } from "./favicon.js";

export const DECODER_FORMAT = DECODER_SCHEMA.format;
export const DECODER_VERSION = DECODER_SCHEMA.format_version;
const DECODER_OPS = DECODER_SCHEMA.ops;   // the kernels a decoder may use (wgsl/ops.py)
const short = (v) => String(JSON.stringify(v)).slice(0, 60);
const own = (o, key) => Object.prototype.hasOwnProperty.call(o, key);

// decoder/manifest.json against its schema (ditformat/decoder-schema.json, generated into bundle-schema.js) and
// the checks between its fields: runtime_py/verify.py verify_decoder_manifest, with the bundle's shared checks.
/** @param {any} m @param {number[] | null} [xShape] the DiT's x_shape, which the decoder must take */
export function verifyDecoderManifest(m, xShape = null) {
  const W = "decoder/manifest.json";
  const fail = (msg) => { throw new BundleError(W, msg); };
  if (m === null || typeof m !== "object" || Array.isArray(m) || m.format !== DECODER_FORMAT || m.format_version !== DECODER_VERSION) {
    const got = m !== null && typeof m === "object" && !Array.isArray(m) ? [m.format, m.format_version] : null;
    fail(`format ${short(got)} is not ${DECODER_FORMAT} version ${DECODER_VERSION}; re-export the bundle with --vae`);
  }
  const err = schemaError(m, DECODER_SCHEMA.manifest, W);
  if (err) fail(err.replace(/^decoder\/manifest\.json(\.|: )/, ""));
  if (xShape && m.latent_shape.join(",") !== xShape.join(",")) fail(`latent_shape [${m.latent_shape.join(", ")}] differs from the model's x_shape [${xShape.join(", ")}]`);
  checkPaths(m.files, fail);
  for (const [name, b] of Object.entries(m.buffers)) {
    if (b.kind === "weight" && !own(m.files, b.file)) fail(`buffers.${name}.file ${short(b.file)} is not listed in files`);
  }
  for (const [name, k] of Object.entries(m.kernels)) {
    if (!own(m.files, k.file)) fail(`kernels.${name}.file ${short(k.file)} is not listed in files`);
    if (!DECODER_OPS.includes(k.op)) fail(`kernels.${name}.op ${short(k.op)} is not a decoder kernel (${DECODER_OPS.join(", ")})`);
    checkKernelBindings(name, k, fail);
  }
  for (const key of ["latent", "image"]) {
    if (!own(m.buffers, m.io[key]) || m.buffers[m.io[key]].kind !== "activation") fail(`io.${key}: ${short(m.io[key])} names no activation buffer`);
  }
  m.program.forEach((d, n) => {
    const where = `program[${n}] (${d.label.slice(0, 40)})`;
    if (!own(m.kernels, d.kernel)) fail(`${where}: unknown kernel ${short(d.kernel)}`);
    checkDispatch(d, m.kernels[d.kernel], m.buffers, where, fail);
  });
  checkPreview(m, fail);
  const batches = REACH_BATCHES.filter(([B, N]) => B === N);      // a decoder runs at B = N (its images)
  checkReach(m.kernels, m.buffers, m.program.map((d, n) => [`program[${n}] (${d.label.slice(0, 40)})`, d]), {}, batches, fail);
  const rows = (shape) => shape.reduce((a, v) => a * v, 1);
  checkIoSizes(m.buffers, [["latent", m.io.latent, 0, 1, rows(m.latent_shape)], ["image", m.io.image, 0, 1, rows(m.image_shape)]], batches, fail);
}

// The shape a decoder's preview map must have (export/preview.py): (k k C + 1, Co f f), f = image side / latent
// side; null when the image is not a whole multiple of the latent (runtime_py/verify.py preview_shape).
export function previewShape(m, k) {
  const [C, h, w] = m.latent_shape, [Co, H, W] = m.image_shape;
  const f = Math.floor(H / h);
  return H % h || W % w || Math.floor(W / w) !== f ? null : [k * k * C + 1, Co * f * f];
}

// The optional preview map: an f32 weight buffer of previewShape (runtime_py/verify.py check_preview).
function checkPreview(m, fail) {
  const p = m.preview;
  if (p === undefined) return;
  const b = own(m.buffers, p.buffer) ? m.buffers[p.buffer] : null;
  if (!b || b.kind !== "weight" || b.dtype !== "f32") fail(`preview.buffer ${short(p.buffer)} names no f32 weight buffer`);
  if (p.k % 2 !== 1) fail(`preview.k is ${p.k}; a preview map reads 1 or 3 cells a side`);
  const want = previewShape(m, p.k);
  if (!want) fail(`image_shape [${m.image_shape.join(", ")}] is not a whole multiple of latent_shape [${m.latent_shape.join(", ")}], so there is no preview map`);
  if (b.shape.join(",") !== want.join(",")) fail(`preview: the map ${short(p.buffer)} is [${b.shape.join(", ")}], a k = ${p.k} map of these latents and images is [${want.join(", ")}]`);
}

// The verified preview map of decoder/ (null without one): {map: Float32Array, k, C, h, w, Co, f}.
export function previewMap(m, tensors) {
  if (!m.preview) return null;
  const t = tensors[m.preview.buffer];
  const [C, h, w] = m.latent_shape, [Co, H] = m.image_shape;
  return { map: new Float32Array(t.buf.slice(t.offset, t.offset + t.nbytes)), k: m.preview.k, C, h, w, Co, f: H / h };
}

// The preview of N latents (N, C, h, w): the map on each cell's k x k neighbourhood (zeros past the edge) and a
// constant, one (k k C + 1) x (Co f f) product per cell, rows (c, ky, kx) then 1, columns (c_out, dy, dx): export/
// preview.py apply_preview_map's arithmetic (in f32 here). -> {rgba, width, height} as the final pictures.
export function previewPictures(pv, latents) {
  const { map, k, C, h, w, Co, f } = pv;
  const per = C * h * w, cols = Co * f * f, rows = k * k * C + 1, pad = (k - 1) / 2, H = h * f, W = w * f;
  const N = latents.length / per;
  const image = new Float32Array(N * Co * H * W);
  const feat = new Float32Array(rows);
  for (let n = 0; n < N; n++) {
    const z = latents.subarray(n * per, (n + 1) * per), out = image.subarray(n * Co * H * W, (n + 1) * Co * H * W);
    for (let cy = 0; cy < h; cy++) {
      for (let cx = 0; cx < w; cx++) {
        let r = 0;
        for (let c = 0; c < C; c++) {
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) {
              const y = cy + ky - pad, x = cx + kx - pad;
              feat[r++] = y < 0 || y >= h || x < 0 || x >= w ? 0 : z[(c * h + y) * w + x];
            }
          }
        }
        feat[r] = 1;
        for (let j = 0; j < cols; j++) {
          let s = 0;
          for (let i = 0; i < rows; i++) s += feat[i] * map[i * cols + j];
          const co = Math.floor(j / (f * f)), dy = Math.floor(j / f) % f, dx = j % f;
          out[(co * H + cy * f + dy) * W + cx * f + dx] = s;
        }
      }
    }
  }
  return decodedPictures(image, [Co, H, W], N);
}

// After the downloads (each file's sha256 checked by fetchVerified): sizes, every kernel's WGSL against its entry,
// the weight shards' headers against the buffer table. files: {file: ArrayBuffer} -> {tensors, kernels}
/** @param {any} m @param {Record<string, ArrayBuffer>} files */
// wgsl false: the kernels' WGSL was not fetched (the WebAssembly path runs its own kernels): kernels null.
export function verifyDecoderFiles(m, files, wgsl = true) {
  for (const [file, buf] of Object.entries(files)) {
    if (buf.byteLength !== m.files[file].size) throw new BundleError(`decoder/${file}`, `${buf.byteLength} bytes, decoder/manifest.json says ${m.files[file].size}`);
  }
  for (const file of decoderFiles(m, wgsl)) {
    if (!Object.prototype.hasOwnProperty.call(files, file)) throw new BundleError(`decoder/${file}`, "was not downloaded");
  }
  /** @type {Record<string, string> | null} */
  const kernels = wgsl ? {} : null;
  for (const [name, k] of wgsl ? Object.entries(m.kernels) : []) {
    let code;
    try { code = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(files[k.file]); } catch { throw new BundleError(`decoder/${k.file}`, "not UTF-8 text"); }
    verifyKernelSource(name, k, code);
    kernels[name] = code;
  }
  const tensors = verifyShards(m.buffers, files, "decoder/", "decoder/manifest.json");
  return { tensors, kernels };
}

// The files of decoder manifest m that a runtime reads: every one, or (wgsl false) all but its kernels' WGSL.
export function decoderFiles(m, wgsl = true) {
  const sources = new Set(Object.values(m.kernels).map((k) => k.file));
  return Object.keys(m.files).filter((f) => wgsl || !sources.has(f));
}

// Decoders up to this size are fetched with all their files in flight at once (fetchDecoder).
const DECODER_AT_ONCE_BYTES = 16 * 2 ** 20;

// decoder/ of the bundle at baseUrl, downloaded and verified; null when the bundle lists none (its manifest's
// files name "decoder/manifest.json" with its sha256, so the bundle's own manifest vouches for the decoder's).
// -> {manifest, tensors: {name: {buf, offset, nbytes}}, kernels: {name: WGSL}, preview: previewMap's or null}
// withoutWgsl(m): true where the caller runs decoder manifest m (verified) without its WGSL (the WebAssembly kernels
// run every kernel of it): the WGSL files are not fetched, and kernels is null.
/**
 * @param {string | URL} baseUrl @param {any} bundleManifest
 * @param {{signal?: AbortSignal, stats?: {downloaded: number, cached: number}, useCache?: boolean,
 *          onProgress?: (p: {file: string, done: number, total: number}) => void, withoutWgsl?: (m: any) => boolean}} [options]
 */
export async function fetchDecoder(baseUrl, bundleManifest, { signal, stats, useCache = true, onProgress, withoutWgsl } = {}) {
  const entry = bundleManifest.files["decoder/manifest.json"];
  if (!entry) return null;
  const xShape = bundleManifest.io.x_shape;
  const raw = await fetchVerified(baseUrl, "decoder/manifest.json", entry.sha256, { signal, stats, useCache });
  const m = parseJson(raw, "decoder/manifest.json");
  verifyDecoderManifest(m, xShape);
  checkDecoderListing(bundleManifest, m);
  const wgsl = !(withoutWgsl && withoutWgsl(m));
  const names = decoderFiles(m, wgsl);
  /** @type {Record<string, ArrayBuffer>} */
  const files = {};
  let done = 0;
  const one = async (file) => {
    files[file] = await fetchVerified(baseUrl, `decoder/${file}`, m.files[file].sha256, { signal, stats, useCache });
    if (onProgress) onProgress({ file: `decoder/${file}`, done: ++done, total: names.length });
  };
  // a small decoder (the favicon autoencoder's: 0.7 MB in 7 files) all at once, one round trip instead of seven;
  // a large one (the SD VAE's: 99 MB) one file at a time, so that it need not be in flight all at once
  const bytes = names.reduce((sum, file) => sum + m.files[file].size, 0);
  if (bytes <= DECODER_AT_ONCE_BYTES) await Promise.all(names.map(one));
  else for (const file of names) await one(file);
  const { tensors, kernels } = verifyDecoderFiles(m, files, wgsl);
  return { manifest: m, tensors, kernels, preview: previewMap(m, tensors) };
}

// The bundle's manifest lists the decoder's files too: exactly the decoder's own, with the same size and sha256
// (runtime_py/decode.py check_decoder_listing), so that both manifests vouch for the same bytes.
export function checkDecoderListing(bundleManifest, m) {
  const listed = Object.keys(bundleManifest.files).filter((f) => f.startsWith("decoder/") && f !== "decoder/manifest.json").map((f) => f.slice(8)).sort();
  const own = Object.keys(m.files).sort();
  if (listed.join("/") !== own.join("/")) throw new BundleError("manifest.json", `files lists decoder/ files [${listed.slice(0, 4).join(", ")}...] that differ from decoder/manifest.json's [${own.slice(0, 4).join(", ")}...]`);
  for (const f of own) {
    const a = bundleManifest.files[`decoder/${f}`], b = m.files[f];
    if (a.size !== b.size || a.sha256 !== b.sha256) throw new BundleError(`decoder/${f}`, "size or sha256 differs between manifest.json and decoder/manifest.json");
  }
}

const bytesOf = (b, N) => (b.kind === "weight" ? Math.ceil(b.bytes / 4) * 4 : Math.max(16, Math.ceil((4 * evaluate(b.elements, N, N)) / 16) * 16));

// Before any allocation: every buffer of the decoder against this device's binding and buffer sizes.
export function checkDecoderLimits(m, device, N) {
  const cap = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  let total = 0;
  let largest = 0;
  let largestName = "";
  for (const [name, b] of Object.entries(m.buffers)) {
    const size = bytesOf(b, N);
    total += size;
    if (size > largest) { largest = size; largestName = name; }
  }
  const mib = (v) => (v / 2 ** 20).toFixed(1);
  if (largest > cap) {
    throw new RangeError(`decoding ${N} image(s) needs a ${mib(largest)} MiB buffer (${largestName}; ${mib(total)} MiB in all), above this GPU's ${mib(cap)} MiB per buffer`);
  }
  return total;
}

export class Decoder {
  constructor() {
    /** @type {any} */
    this.device = null;
    /** @type {any} */
    this.manifest = null;
    /** @type {Record<string, {pipeline: any, layout: any}>} */
    this.pipelines = {};
    /** @type {Record<string, any>} */
    this.weights = {};
  }

  // files: fetchDecoder's result; device: the bundle's GPUDevice (a new one after a device loss: build a new Decoder)
  static async create(device, files) {
    const d = new Decoder();
    d.device = device;
    d.manifest = files.manifest;
    const m = d.manifest;
    checkDecoderLimits(m, device, 1);
    d.pipelines = {};
    for (const [name, k] of Object.entries(m.kernels)) {
      const module = device.createShaderModule({ label: name, code: files.kernels[name] });
      const layout = device.createBindGroupLayout({
        label: name,
        entries: k.bindings.map((b) => ({ binding: b.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: b.type } })),
      });
      try {
        const pipeline = await device.createComputePipelineAsync({ label: name, layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }), compute: { module, entryPoint: "main" } });
        d.pipelines[name] = { pipeline, layout };
      } catch (e) {
        throw new BundleError(`decoder/${k.file}`, `pipeline ${name} could not be created: ${e.message}`);
      }
    }
    device.pushErrorScope("out-of-memory");
    d.weights = {};
    for (const [name, t] of Object.entries(files.tensors)) {
      const size = Math.ceil(t.nbytes / 4) * 4;
      const buffer = device.createBuffer({ label: name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      const bytes = new Uint8Array(size);
      bytes.set(new Uint8Array(t.buf, t.offset, t.nbytes));
      device.queue.writeBuffer(buffer, 0, bytes);
      d.weights[name] = buffer;
    }
    const oom = await device.popErrorScope();
    if (oom) throw new RangeError(`the decoder's weights do not fit this GPU's memory (${oom.message})`);
    return d;
  }

  // latents: Float32Array (N, L, h, w) as sampled -> Float32Array (N, 3, H, W), not clamped. The images are
  // decoded one after the other through the buffers of one image (the activations of a 256 px image are
  // ~270 MB: N at once would multiply that), in one command buffer, read back once.
  async decode(latents, N) {
    const m = this.manifest;
    const device = this.device;
    const per = m.latent_shape.reduce((a, b) => a * b, 1);
    const perImage = m.image_shape.reduce((a, b) => a * b, 1);
    if (latents.length !== N * per) throw new RangeError(`decode: ${latents.length} values for ${N} latents of ${per}`);
    checkDecoderLimits(m, device, 1);
    const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    const owned = [];
    device.pushErrorScope("out-of-memory");
    try {
      const buffers = { ...this.weights };
      for (const [name, b] of Object.entries(m.buffers)) {
        if (b.kind !== "activation") continue;
        buffers[name] = device.createBuffer({ label: name, size: bytesOf(b, 1), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
        owned.push(buffers[name]);
      }
      const staging = device.createBuffer({ label: "read images", size: 4 * N * perImage, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      owned.push(staging);
      const oom = await device.popErrorScope();
      if (oom) throw new RangeError(`decoding: the activations of one image do not fit this GPU's memory (${oom.message})`);
      const steps = m.program.map((d) => {
        const words = new Uint32Array(Math.max(4, Math.ceil(d.params.length / 4) * 4));
        d.params.forEach((form, i) => { words[i] = evaluate(form, 1, 1); });
        const params = device.createBuffer({ label: `${d.label} params`, size: words.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(params, 0, words);
        owned.push(params);
        const groups = d.workgroups.map((f) => evaluate(f, 1, 1));
        if (groups.some((g) => g > maxGroups)) throw new RangeError(`decoding: ${d.label} needs ${groups.join("x")} workgroups, above this GPU's ${maxGroups} per dimension`);
        const { pipeline, layout } = this.pipelines[d.kernel];
        const bindGroup = device.createBindGroup({ label: d.label, layout, entries: [params, ...d.bindings.map((n) => buffers[n])].map((buffer, binding) => ({ binding, resource: { buffer } })) });
        return { pipeline, bindGroup, groups };
      });
      const encoder = device.createCommandEncoder({ label: "decode" });
      const upload = device.createBuffer({ label: "latents", size: 4 * N * per, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      owned.push(upload);
      device.queue.writeBuffer(upload, 0, Float32Array.from(latents));
      for (let n = 0; n < N; n++) {
        encoder.copyBufferToBuffer(upload, 4 * n * per, buffers[m.io.latent], 0, 4 * per);
        const pass = encoder.beginComputePass({ label: `decode ${n}` });
        for (const st of steps) {
          pass.setPipeline(st.pipeline);
          pass.setBindGroup(0, st.bindGroup);
          pass.dispatchWorkgroups(st.groups[0], st.groups[1], st.groups[2]);
        }
        pass.end();
        encoder.copyBufferToBuffer(buffers[m.io.image], 0, staging, 4 * n * perImage, 4 * perImage);
      }
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      return new Float32Array(staging.getMappedRange().slice(0));
    } finally {
      for (const b of owned) b.destroy();
    }
  }

  dispose() {
    for (const b of Object.values(this.weights || {})) b.destroy();
  }
}

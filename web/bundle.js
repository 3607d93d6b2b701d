// Fetching and verifying a bundle before any GPU work: manifest, sha256 of every file
// (SubtleCrypto), the safetensors header, and the Cache API so that a second visit downloads
// only the manifest. A bundle is untrusted input: every failure is a BundleError naming the
// file and the field.

import { STEP_UNIFORM_BYTES } from "./schedule.js";

const CACHE_NAME = "ditweb-bundle-v1";
export const FORMAT = "ditweb-bundle";
export const FORMAT_VERSION = 1;
const MAX_BYTES = 2 ** 31;   // sizes at B = 1 above this are absurd: refuse before any allocation
const lin = (form, B, N) => form[0] * B + form[1] * N + form[2];
const isForm = (f, n) => Array.isArray(f) && f.length === n && f.every(Number.isInteger);

export class BundleError extends Error {
  constructor(file, message) {
    super(`${file}: ${message}`);
    this.name = "BundleError";
    this.file = file;
  }
}

export async function sha256Hex(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// GET url as an ArrayBuffer, or a BundleError naming the file
async function download(url, file, signal) {
  let response;
  try {
    response = await fetch(url, { signal, cache: "no-cache" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new BundleError(file, `could not be fetched (${e.message})`);
  }
  if (!response.ok) throw new BundleError(file, `HTTP ${response.status} ${response.statusText}`.trim());
  return response.arrayBuffer();
}

export async function fetchManifest(baseUrl, signal) {
  const buf = await download(new URL("manifest.json", baseUrl), "manifest.json", signal);
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(buf));
  } catch (e) {
    throw new BundleError("manifest.json", `not valid JSON (${e.message})`);
  }
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) {
    throw new BundleError("manifest.json", "the top level must be a JSON object");
  }
  return manifest;
}

async function openCache() {
  // The Cache API exists only in secure contexts (https, localhost); elsewhere we just download.
  try {
    return globalThis.caches ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null;
  }
}

// One bundle file, checked against its sha256. Cached under a key that holds the hash, so a
// re-exported bundle (new hash) is downloaded again and a stale entry can never be used.
// stats counts {downloaded, cached} bytes for the page and the tests.
export async function fetchVerified(baseUrl, file, sha256, { signal, stats, useCache = true } = {}) {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new BundleError("manifest.json", `files["${file}"]: sha256 is not 64 hex digits`);
  const url = new URL(file, baseUrl);
  const key = new Request(`${url.href}?sha256=${sha256}`);
  const cache = useCache ? await openCache() : null;
  if (cache) {
    const hit = await cache.match(key);
    if (hit) {
      const buf = await hit.arrayBuffer();
      if ((await sha256Hex(buf)) === sha256) {
        if (stats) stats.cached += buf.byteLength;
        return buf;
      }
      await cache.delete(key);   // damaged entry: fall through to a fresh download
    }
  }
  const buf = await download(url, file, signal);
  const got = await sha256Hex(buf);
  if (got !== sha256) {
    throw new BundleError(file, `sha256 ${got.slice(0, 16)}... does not match manifest.json (${sha256.slice(0, 16)}...); the bundle is corrupted or was changed after export`);
  }
  if (stats) stats.downloaded += buf.byteLength;
  if (cache) {
    try {
      await cache.put(key, new Response(buf, { headers: { "Content-Type": "application/octet-stream" } }));
    } catch { /* quota exceeded or private mode: run without the cache */ }
  }
  return buf;
}

const DTYPE_BYTES = { F32: 4, F16: 2, I32: 4, U32: 4 };

// safetensors: u64 little-endian header length n, n bytes of JSON, then raw tensor data.
// Returns {name: {dtype, shape, offset, nbytes}} with offsets from the start of the file.
export function parseSafetensors(buf, file = "weights.safetensors") {
  if (buf.byteLength < 8) throw new BundleError(file, `${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(buf);
  const n = Number(view.getBigUint64(0, true));
  if (n > buf.byteLength - 8) throw new BundleError(file, `header length ${n} runs past the end of the file (${buf.byteLength} bytes)`);
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buf, 8, n)));
  } catch (e) {
    throw new BundleError(file, `header is not valid JSON (${e.message})`);
  }
  const dataStart = 8 + n;
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const bytes = DTYPE_BYTES[t && t.dtype];
    if (!bytes) throw new BundleError(file, `tensor ${name}: unsupported dtype ${JSON.stringify(t && t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new BundleError(file, `tensor ${name}: bad shape ${JSON.stringify(t.shape)}`);
    }
    const [begin, end] = Array.isArray(t.data_offsets) ? t.data_offsets : [];
    const nbytes = t.shape.reduce((a, d) => a * d, 1) * bytes;
    if (!Number.isInteger(begin) || !Number.isInteger(end) || end - begin !== nbytes) {
      throw new BundleError(file, `tensor ${name}: data_offsets ${JSON.stringify(t.data_offsets)} do not hold shape ${JSON.stringify(t.shape)} x ${bytes} bytes`);
    }
    if (dataStart + end > buf.byteLength) throw new BundleError(file, `tensor ${name}: data runs past the end of the file (truncated?)`);
    if ((dataStart + begin) % 4 !== 0) throw new BundleError(file, `tensor ${name}: data offset ${dataStart + begin} is not 4-byte aligned`);
    tensors[name] = { dtype: t.dtype, shape: t.shape, offset: dataStart + begin, nbytes };
  }
  return tensors;
}

// ------------------------------------------------------------------ manifest and weights checks

// Check everything the format promises, naming the field on failure (docs: "Verification").
export function verifyManifest(m) {
  const fail = (msg) => { throw new BundleError("manifest.json", msg); };
  if (m.format !== FORMAT) fail(`format is ${JSON.stringify(m.format)}, expected "${FORMAT}"`);
  if (m.format_version !== FORMAT_VERSION) fail(`format_version ${JSON.stringify(m.format_version)} is not supported (this runtime reads ${FORMAT_VERSION})`);
  if (!["f32", "f16"].includes(m.dtype)) fail(`dtype ${JSON.stringify(m.dtype)} is neither "f32" nor "f16"`);
  for (const key of ["model", "io", "files", "kernels", "buffers", "programs"]) {
    if (!m[key] || typeof m[key] !== "object") fail(`field "${key}" is missing or not an object`);
  }
  if (!Array.isArray(m.class_names) || m.class_names.length !== m.model.num_classes) {
    fail(`class_names must list model.num_classes (${m.model.num_classes}) names`);
  }
  for (const [file, e] of Object.entries(m.files)) {
    if (!e || !Number.isInteger(e.size) || e.size < 0 || typeof e.sha256 !== "string") fail(`files["${file}"] needs an integer size and a sha256`);
    if (file.startsWith("/") || file.split("/").includes("..") || /^[a-z]+:/i.test(file)) fail(`files["${file}"] is not a relative path inside the bundle`);
  }
  if (!m.files["weights.safetensors"]) fail('files has no "weights.safetensors"');
  const TYPES = ["uniform", "read-only-storage", "storage"];
  for (const [name, k] of Object.entries(m.kernels)) {
    if (!k.file || !m.files[k.file]) fail(`kernels.${name}.file ${JSON.stringify(k.file)} is not listed in files`);
    if (!isForm(k.workgroup_size, 3) || k.workgroup_size.some((v) => v < 1)) fail(`kernels.${name}.workgroup_size is not three positive integers`);
    if (!Array.isArray(k.params) || !Array.isArray(k.bindings)) fail(`kernels.${name} needs params and bindings lists`);
    k.bindings.forEach((b, i) => {
      if (b.binding !== i || !TYPES.includes(b.type)) fail(`kernels.${name}.bindings[${i}] must be binding ${i} of type ${TYPES.join("|")}`);
    });
    if (!k.bindings.length || k.bindings[0].type !== "uniform") fail(`kernels.${name}: binding 0 must be the params uniform`);
  }
  for (const [name, b] of Object.entries(m.buffers)) {
    if (b.kind === "weight") {
      if (typeof b.tensor !== "string" || !Number.isInteger(b.bytes) || b.bytes <= 0 || b.bytes >= MAX_BYTES) fail(`buffers["${name}"]: a weight needs a tensor name and 0 < bytes < 2^31`);
    } else if (b.kind === "activation") {
      if (!isForm(b.elements, 3) || b.elements.some((v) => v < 0) || 4 * lin(b.elements, 1, 1) >= MAX_BYTES) fail(`buffers["${name}"].elements must be a non-negative linear form [b, n, c] below 2^31 bytes at B = 1`);
    } else if (b.kind === "step") {
      if (b.bytes !== STEP_UNIFORM_BYTES) fail(`buffers["${name}"]: the step uniform is ${STEP_UNIFORM_BYTES} bytes, not ${b.bytes}`);
    } else {
      fail(`buffers["${name}"].kind ${JSON.stringify(b.kind)} is not weight, activation or step`);
    }
  }
  for (const key of ["x", "t", "y", "out", "sample"]) {
    if (!m.buffers[m.io[key]] || m.buffers[m.io[key]].kind !== "activation") fail(`io.${key} names no activation buffer`);
  }
  for (const prog of ["forward", "init", "step_begin", "step_end"]) {
    const p = m.programs[prog];
    if (!Array.isArray(p)) fail(`programs.${prog} is missing`);
    p.forEach((d, i) => {
      const where = `programs.${prog}[${i}] (${d && d.label})`;
      const k = m.kernels[d && d.kernel];
      if (!k) fail(`${where}: unknown kernel ${JSON.stringify(d && d.kernel)}`);
      if (!Array.isArray(d.bindings) || d.bindings.length !== k.bindings.length - 1) fail(`${where}: ${d.bindings && d.bindings.length} bindings, kernel ${d.kernel} declares ${k.bindings.length - 1}`);
      d.bindings.forEach((bn, j) => {
        const buf = m.buffers[bn];
        if (!buf) fail(`${where}: binding ${j + 1} names unknown buffer ${JSON.stringify(bn)}`);
        if ((buf.kind === "step") !== (k.bindings[j + 1].type === "uniform")) fail(`${where}: binding ${j + 1} (${bn}) does not match the kernel's ${k.bindings[j + 1].type} binding`);
      });
      if (!Array.isArray(d.params) || d.params.length !== k.params.length || !d.params.every((f) => isForm(f, 3))) fail(`${where}: params must be ${k.params.length} linear forms`);
      if (!Array.isArray(d.workgroups) || d.workgroups.length !== 3 || !d.workgroups.every((f) => isForm(f, 4) && f[3] > 0 && lin(f, 1, 1) >= 0)) {
        fail(`${where}: workgroups must be three [b, n, c, d] forms with d > 0`);
      }
    });
  }
}

// Weight buffers vs the safetensors header: the tensor exists with the listed dtype, shape and bytes.
export function verifyWeights(m, tensors) {
  let prev = 0;
  for (const t of Object.values(tensors).sort((a, b) => a.offset - b.offset)) {
    if (prev && t.offset !== prev) throw new BundleError("weights.safetensors", `tensor data is not contiguous at byte ${t.offset} (previous ended at ${prev})`);
    prev = t.offset + t.nbytes;
  }
  const DT = { f32: "F32", f16: "F16", u32: "U32", i32: "I32" };
  for (const [name, b] of Object.entries(m.buffers)) {
    if (b.kind !== "weight") continue;
    const t = tensors[b.tensor];
    if (!t) throw new BundleError("weights.safetensors", `has no tensor ${b.tensor} (manifest buffer ${name})`);
    if (DT[b.dtype] !== t.dtype || JSON.stringify(b.shape) !== JSON.stringify(t.shape) || b.bytes !== t.nbytes) {
      throw new BundleError("weights.safetensors", `tensor ${b.tensor} is ${t.dtype} ${JSON.stringify(t.shape)} (${t.nbytes} bytes), manifest buffer ${name} says ${b.dtype} ${JSON.stringify(b.shape)} (${b.bytes} bytes)`);
    }
  }
}

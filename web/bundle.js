// Fetching and verifying a bundle before any GPU work: manifest, sha256 of every file
// (SubtleCrypto), the safetensors header, and the Cache API so that a second visit downloads
// only the manifest. A bundle is untrusted input: every failure is a BundleError naming the
// file and the field.

const CACHE_NAME = "ditweb-bundle-v1";

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

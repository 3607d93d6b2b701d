// Fetching and verifying a bundle before any GPU work: manifest, sha256 of every file
// (SubtleCrypto), the safetensors header, and the Cache API so that a second visit downloads
// only the manifest. A bundle is untrusted input: every failure is a BundleError naming the
// file and the field.

// Field types and ranges come from the declarative schema ditformat/bundle-schema.json (generated
// into bundle-schema.js), which runtime_py/verify.py reads too; the checks between fields below are
// the twins of verify.py's, shared with the decoder's (web/decode.js), and one corpus of tampered bundles
// and decoders runs against both (tests/test_fuzz_bundles.py).
import { REACH, SCHEMA } from "./bundle-schema.js";
import { evaluate } from "./forms.js";
import { Vocabulary, VocabularyError } from "./labels.js";

const CACHE_NAME = "ditweb-bundle-v1";
export const FORMAT = SCHEMA.format;
export const FORMAT_VERSION = SCHEMA.format_version;
export const EXPORTER_VERSION = SCHEMA.exporter_version;
const MAX_BYTES = SCHEMA.max_bytes;   // sizes at B = 1 above this are absurd: refuse before any allocation
const short = (v) => String(JSON.stringify(v)).slice(0, 40);
const LABEL_OPS = SCHEMA.label_ops;   // the ops that sum a label's table rows (param levels = the model's L)

export class BundleError extends Error {
  constructor(file, message) {
    // one printable line whatever names the bundle puts in the message (verify.py escapes the same way)
    super(`${file}: ${message}`.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
    this.name = "BundleError";
    this.file = file;
  }
}

// A span of a load for the page's breakdown of its first favicon (web/app.js): a User Timing measure named
// "ditweb:<name>" on the page's clock (performance.now()), read back with performance.getEntriesByName; a no-op
// where the User Timing API (Level 3: start and end given) is missing.
export function measure(name, start, end = performance.now()) {
  try { performance.measure(`ditweb:${name}`, { start, end }); } catch { /* no User Timing here: nothing to record */ }
}

// A sha256 as the manifest writes it: 64 lowercase hex digits.
export const isSha256Hex = (v) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v);

export async function sha256Hex(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// GET url as an ArrayBuffer, or a BundleError naming the file. early: the same request made before (a Promise of its
// Response), read here as a fresh one would be.
async function download(url, file, signal, early = null) {
  let response;
  try {
    response = await (early || fetch(url, { signal, cache: "no-cache" }));
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new BundleError(file, `could not be fetched (${e.message})`);
  }
  if (!response.ok) throw new BundleError(file, `HTTP ${response.status} ${response.statusText}`.trim());
  return response.arrayBuffer();
}

// The deepest nesting of [ and { outside strings (ditformat/schema.py json_depth): what the pattern
// /"(?:[^"\\]|\\.)*"|[[\]{}]/g finds, scanned by character code (a page reads some hundreds of kB of JSON with it
// before its first favicon). A string is a quote, then characters or backslash escapes (a backslash and any character
// but a line terminator), then a quote; where none closes it the quote is an ordinary character.
export function jsonDepth(text) {
  let depth = 0, deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) deepest = Math.max(deepest, ++depth);         // [ {
    else if (c === 0x5d || c === 0x7d) depth--;                                  // ] }
    else if (c === 0x22) i = stringEnd(text, i);                                 // "
  }
  return deepest;
}

// The index of the quote closing the string that opens at `start`, or `start` where none does (jsonDepth).
function stringEnd(text, start) {
  for (let j = start + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x22) return j;
    if (c === 0x5c) {                                                            // a backslash escapes one character
      const e = text.charCodeAt(j + 1);                                          // NaN past the end
      if (Number.isNaN(e) || e === 0x0a || e === 0x0d || e === 0x2028 || e === 0x2029) return start;
      j++;
    }
  }
  return start;
}

// The one JSON reading of both runtimes (ditformat/schema.py loads_json): UTF-8 without a byte-order mark, at most
// max_json_depth levels; JSON.parse's numbers are the rule (Python reads 2.0 as the integer 2 too). Throws a
// BundleError naming `file`.
export function parseJson(buf, file) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) throw new BundleError(file, "not valid JSON (starts with a UTF-8 byte-order mark (not allowed))");
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes); } catch { throw new BundleError(file, "not valid JSON (not UTF-8)"); }
  if (jsonDepth(text) > SCHEMA.max_json_depth) throw new BundleError(file, `not valid JSON (nested deeper than ${SCHEMA.max_json_depth} levels)`);
  try { return JSON.parse(text); } catch (e) { throw new BundleError(file, `not valid JSON (${e.message.slice(0, 80)})`); }
}

// early: {url, response} (web/early.js: manifest.json asked for by the page's first script); its response is read
// where url is this manifest's, else manifest.json is fetched now.
export async function fetchManifest(baseUrl, signal, early = null) {
  const url = new URL("manifest.json", baseUrl);
  const buf = await download(url, "manifest.json", signal, early && early.url === url.href ? early.response : null);
  const manifest = parseJson(buf, "manifest.json");
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) {
    throw new BundleError("manifest.json", "the top level must be a JSON object");
  }
  return manifest;
}

// The Cache API exists only in secure contexts (https, localhost); elsewhere we just download. Opened once per page
// (a first visit's profile creates its cache storage here, some tens of ms): loadBundle opens it while the manifest
// downloads, so that the files' look-ups do not wait for it.
/** @type {Promise<Cache | null> | null} */
let cacheOpened = null;
export function openCache() {
  if (!cacheOpened) {
    cacheOpened = (async () => {
      try {
        return globalThis.caches ? await caches.open(CACHE_NAME) : null;
      } catch {
        return null;
      }
    })();
  }
  return cacheOpened;
}

// Which files the Cache API may hold, as a hint in localStorage (one key per sha256, set once a download is cached):
// a first visit then asks the network at once instead of waiting for the cache (opening it in a new profile and a
// look-up that misses took 50 to 100 ms). Only a hint: a file it names is still looked up and checked, and where
// localStorage is missing or blocked every file is looked up in the cache as before.
const HINT_PREFIX = "ditweb-cached:";
function cacheHint(sha256, value) {
  try {
    const store = globalThis.localStorage;
    if (!store) return true;
    if (value === undefined) return store.getItem(HINT_PREFIX + sha256) !== null;
    if (value) store.setItem(HINT_PREFIX + sha256, "1"); else store.removeItem(HINT_PREFIX + sha256);
    return value;
  } catch {
    return true;                       // no hint to be had: look in the cache
  }
}

// One bundle file, checked against its sha256. Cached under a key that holds the hash, so a
// re-exported bundle (new hash) is downloaded again and a stale entry can never be used.
// stats counts {downloaded, cached} bytes for the page and the tests. pending: where the Cache API write of a
// download goes instead of being awaited here (loadBundle awaits it alongside the runtime's start); the write
// stores the verified bytes, its own copy.
/**
 * @param {string | URL} baseUrl @param {string} file @param {string} sha256
 * @param {{signal?: AbortSignal, stats?: {downloaded: number, cached: number}, useCache?: boolean,
 *          pending?: Promise<void>[]}} [options]
 */
export async function fetchVerified(baseUrl, file, sha256, { signal, stats, useCache = true, pending } = {}) {
  if (!isSha256Hex(sha256)) throw new BundleError("manifest.json", `files["${file}"]: sha256 is not 64 hex digits`);
  const url = new URL(file, baseUrl);
  const key = new Request(`${url.href}?sha256=${sha256}`);
  const t0 = performance.now();
  // not cached here (cacheHint): the download starts now, in this call, and the cache is opened for its write only
  const cache = useCache && cacheHint(sha256) ? await openCache() : null;
  if (cache) {
    const hit = await cache.match(key);
    if (hit) {
      const buf = await hit.arrayBuffer();
      const t1 = performance.now();
      measure(`cache ${file}`, t0, t1);
      const ok = (await sha256Hex(buf)) === sha256;
      measure(`sha256 ${file}`, t1);
      if (ok) {
        if (stats) stats.cached += buf.byteLength;
        return buf;
      }
      await cache.delete(key);   // damaged entry: fall through to a fresh download
    }
    cacheHint(sha256, false);
  }
  const t1 = performance.now();
  if (cache) measure(`cache ${file}`, t0, t1);
  const buf = await download(url, file, signal);
  const t2 = performance.now();
  measure(`fetch ${file}`, t1, t2);
  const got = await sha256Hex(buf);
  measure(`sha256 ${file}`, t2);
  if (got !== sha256) {
    throw new BundleError(file, `sha256 ${got.slice(0, 16)}... does not match manifest.json (${sha256.slice(0, 16)}...); the bundle is corrupted or was changed after export`);
  }
  if (stats) stats.downloaded += buf.byteLength;
  const store = useCache ? cache || await openCache() : null;
  if (store) {
    const put = store.put(key, new Response(buf, { headers: { "Content-Type": "application/octet-stream" } }))
      .then(() => { cacheHint(sha256, true); })
      .catch(() => { /* quota exceeded or private mode: run without the cache */ });
    if (pending) pending.push(put);
    else await put;
  }
  return buf;
}

const DTYPE_BYTES = { F32: 4, F16: 2, I8: 1, U8: 1 };   // I8: int8 weights; U8: a packed buffer's tensors (unpackQ4k)

// safetensors: u64 little-endian header length n, n bytes of JSON, then raw tensor data.
// Returns {name: {dtype, shape, offset, nbytes}} with offsets from the start of the file.
// The checks and their order are verify.py's parse_safetensors_header.
export function parseSafetensors(buf, file = "weights.safetensors") {
  if (buf.byteLength < 8) throw new BundleError(file, `${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(buf);
  const n = Number(view.getBigUint64(0, true));
  if (n > buf.byteLength - 8 || n > 100000000) throw new BundleError(file, `header length ${n} runs past the end of the file (${buf.byteLength} bytes)`);
  let header;
  try {
    header = parseJson(new Uint8Array(buf, 8, n), file);
  } catch (e) {
    throw new BundleError(file, `header is ${e.message.slice(file.length + 2)}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) throw new BundleError(file, "header is not a JSON object");
  const dataStart = 8 + n;
  const data = buf.byteLength - dataStart;
  const tensors = {};
  const spans = [];
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t === null || typeof t !== "object" || !Array.isArray(t.shape) || !Array.isArray(t.data_offsets) || t.data_offsets.length !== 2) {
      throw new BundleError(file, `tensor ${name}: lacks dtype/shape/data_offsets`);
    }
    const bytes = Object.prototype.hasOwnProperty.call(DTYPE_BYTES, t.dtype) ? DTYPE_BYTES[t.dtype] : 0;
    if (!bytes) throw new BundleError(file, `tensor ${name}: unsupported dtype ${short(t.dtype)} (F32, F16, I8 or U8)`);
    if (t.shape.length > 8 || !t.shape.every((d) => Number.isInteger(d) && d >= 0 && d < MAX_BYTES)) {
      throw new BundleError(file, `tensor ${name}: bad shape ${short(t.shape)}`);
    }
    const [begin, end] = t.data_offsets;
    if (!Number.isInteger(begin) || !Number.isInteger(end) || !(begin >= 0 && begin <= end && end <= data)) {
      throw new BundleError(file, `tensor ${name}: data_offsets ${short(t.data_offsets)} outside the ${data}-byte data section; data runs past the end of the file (truncated?)`);
    }
    const nbytes = t.shape.reduce((a, d) => a * d, 1) * bytes;
    if (end - begin !== nbytes) {
      throw new BundleError(file, `tensor ${name}: data_offsets ${short(t.data_offsets)} do not hold shape ${short(t.shape)} x ${bytes} bytes`);
    }
    if ((dataStart + begin) % 4 !== 0 && !name.startsWith("_ditweb.pad.")) throw new BundleError(file, `tensor ${name}: data offset ${dataStart + begin} is not 4-byte aligned`);
    tensors[name] = { dtype: t.dtype, shape: t.shape, offset: dataStart + begin, nbytes };
    spans.push([begin, end, name]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let pos = 0;
  for (const [a, b, name] of spans) {
    if (a !== pos) throw new BundleError(file, `tensor ${name}: starts at ${a}, expected ${pos} (holes or overlaps)`);
    pos = b;
  }
  if (pos !== data) throw new BundleError(file, `tensors cover ${pos} bytes of a ${data}-byte data section`);
  return tensors;
}

// ------------------------------------------------------------------ manifest and weights checks

// The schema walk: the first field that does not fit its spec, or null (ditformat/schema.py check; the bundle's
// manifest and web/decode.js's decoder manifest).
export function schemaError(value, spec, where) {
  if (typeof spec === "string") {
    if (SCHEMA.types[spec]) return schemaError(value, SCHEMA.types[spec], where);
    const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    const form = (v, n) => Array.isArray(v) && v.length === n && v.every((x) => Number.isInteger(x) && x >= 0 && x < MAX_BYTES);
    const ok = {
      string: (v) => typeof v === "string", bool: (v) => typeof v === "boolean", object: isObj,
      hex64: isSha256Hex,
      form3: (v) => form(v, 3), form4: (v) => form(v, 4) && v[3] >= 1,
    }[spec];
    return ok(value) ? null : `${where}: expected ${spec}, got ${short(value)}`;
  }
  if (spec.all) {                                    // every spec in turn (a named type and what this use adds)
    for (const sub of spec.all) { const e = schemaError(value, sub, where); if (e) return e; }
    return null;
  }
  if (spec.enum) return typeof value === "string" && spec.enum.includes(value) ? null : `${where}: ${short(value)} is not one of ${spec.enum.join(", ")}`;
  if (spec.int || spec.number) {
    const [lo, hi] = spec.int || spec.number;
    if (spec.int ? !Number.isInteger(value) : typeof value !== "number") return `${where}: expected ${spec.int ? "an integer" : "a number"}, got ${short(value)}`;
    return lo <= value && value <= hi ? null : `${where}: ${value} out of range [${lo}, ${hi}]`;
  }
  const isObj = value !== null && typeof value === "object" && !Array.isArray(value);
  if (spec.list) {
    if (!Array.isArray(value)) return `${where}: expected a list, got ${short(value)}`;
    if (spec.len !== undefined && value.length !== spec.len) return `${where}: expected ${spec.len} entries, got ${value.length}`;
    if (spec.max !== undefined && value.length > spec.max) return `${where}: more than ${spec.max} entries`;
    for (let i = 0; i < value.length; i++) { const e = schemaError(value[i], spec.list, `${where}[${i}]`); if (e) return e; }
    return null;
  }
  if (!isObj) return `${where}: expected an object, got ${short(value)}`;
  if (spec.map) {
    for (const [k, v] of Object.entries(value)) { const e = schemaError(v, spec.map, `${where}.${k}`); if (e) return e; }
    return null;
  }
  if (spec.fields) {
    for (const [k, sub] of Object.entries(spec.fields)) {
      if (!Object.prototype.hasOwnProperty.call(value, k)) {
        if ((spec.optional || []).includes(k)) continue;
        return `${where}: missing field '${k}'`;
      }
      const e = schemaError(value[k], sub, `${where}.${k}`);
      if (e) return e;
    }
    return null;
  }
  const tag = value[spec.tagged];
  if (typeof tag !== "string" || !Object.prototype.hasOwnProperty.call(spec.cases, tag)) return `${where}: ${spec.tagged} ${short(tag)} is not one of ${Object.keys(spec.cases).join(", ")}`;
  return schemaError(value, spec.cases[tag], where);
}

// One entry of a kernel's workgroup-count rule (ditformat/forms.py parse_group): {param index, divisor}
// for "NAME/d" (ceil(param / d)), {param: -1, count} for a literal count, null if malformed.
export function parseGroup(rule, params) {
  if (typeof rule !== "string") return null;
  if (/^\d{1,9}$/.test(rule)) return { param: -1, count: Number(rule) };
  const match = /^(.+)\/(\d{1,9})$/.exec(rule);
  if (!match || !params.includes(match[1]) || Number(match[2]) < 1) return null;
  return { param: params.indexOf(match[1]), div: Number(match[2]) };
}

// The [b, n, c, d] workgroup counts of a dispatch with param forms `forms` run by kernel k.
export function workgroupForms(k, forms) {
  return k.groups.map((rule) => {
    const g = parseGroup(rule, k.params);
    return g.param < 0 ? [0, 0, g.count, 1] : [...forms[g.param].slice(0, 3), g.div];
  });
}

// ------------------------------------------------------------------ checks shared by the bundle and its decoder/
// (web/decode.js), twins of runtime_py/verify.py's: each throws a BundleError through fail(msg)

// A file name a manifest may not list (ditformat/schema.py unsafe_path): anything but [A-Za-z0-9._-] segments (not
// starting with '.') joined by '/', at most file_name.max_length characters; a URL and a file path name the same file.
const SEGMENT = new RegExp(`^(?:${SCHEMA.file_name.segment})$`);
export const unsafePath = (rel) => typeof rel !== "string" || !rel || rel.length > SCHEMA.file_name.max_length || !rel.split("/").every((s) => SEGMENT.test(s));

export function checkPaths(files, fail) {
  for (const file of Object.keys(files)) if (unsafePath(file)) fail(`files: unsafe path ${short(file)} (names are [A-Za-z0-9._-] segments joined by '/', at most ${SCHEMA.file_name.max_length} characters)`);
}

export function checkKernelBindings(name, k, fail) {
  if (!k.bindings.length || k.bindings.some((b, i) => b.binding !== i) || k.bindings[0].type !== "uniform") {
    fail(`kernels.${name}.bindings: must be 0, 1, ... in order, binding 0 the params uniform`);
  }
}

// A dispatch against its kernel: bindings and params counts, known buffers, a step buffer exactly where the kernel
// has a uniform, no weight buffer where the kernel may write, a buffer it writes bound once.
export function checkDispatch(d, k, buffers, where, fail) {
  if (d.bindings.length !== k.bindings.length - 1) fail(`${where}: ${d.bindings.length} bindings, kernel ${d.kernel} declares ${k.bindings.length - 1}`);
  d.bindings.forEach((bn, j) => {
    const buf = Object.prototype.hasOwnProperty.call(buffers, bn) ? buffers[bn] : null;
    if (!buf) fail(`${where}: binding ${j + 1} names unknown buffer ${short(bn)}`);
    const type = k.bindings[j + 1].type;
    if ((buf.kind === "step") !== (type === "uniform")) fail(`${where}: binding ${j + 1} type ${type} cannot take buffer ${short(bn)}`);
    if (buf.kind === "weight" && type === "storage") fail(`${where}: binding ${j + 1} would write weight buffer ${short(bn)}`);
  });
  d.bindings.forEach((bn, j) => {
    if (k.bindings[j + 1].type === "storage" && d.bindings.filter((x) => x === bn).length > 1) fail(`${where}: binding ${j + 1} writes buffer ${short(bn)}, which another binding of the dispatch also binds (WebGPU refuses a writable buffer bound twice)`);
  });
  if (d.params.length !== k.params.length) fail(`${where}: ${d.params.length} params, kernel ${d.kernel} declares ${k.params.length}`);
}

// A named model's label vocabulary (web/labels.js), its own verified file; one-level bundles have none.
export const VOCABULARY_FILE = "vocabulary.json";

// The label table's levels: model.label_levels of a named model, else [num_classes] (one level).
export const labelLevels = (m) => (Object.prototype.hasOwnProperty.call(m.model, "label_levels") ? m.model.label_levels : [m.model.num_classes]);

// One-level model: a class name per class. Named model: levels summing to num_classes, label_nested within them,
// no class names, its vocabulary.json listed (runtime_py/verify.py check_label_levels).
function checkLabelLevels(m, fail) {
  const c = m.model, own = (o, key) => Object.prototype.hasOwnProperty.call(o, key);
  if (!own(c, "label_levels")) {
    if (own(c, "label_nested")) fail("model: label_nested without label_levels");
    if (m.class_names.length !== c.num_classes) fail(`class_names: ${m.class_names.length} names for ${c.num_classes} classes`);
    if (own(m.files, VOCABULARY_FILE)) fail(`files: ${VOCABULARY_FILE} listed for a one-level model (no model.label_levels)`);
    return;
  }
  const levels = c.label_levels;
  if (!levels.length || levels.reduce((a, b) => a + b, 0) !== c.num_classes) fail(`model.label_levels ${short(levels)} must be 1 to 8 sizes summing to num_classes ${c.num_classes}`);
  const nested = own(c, "label_nested") ? c.label_nested : 0;
  if (!(nested >= 1 && nested <= levels.length)) fail(`model.label_nested must be an integer in [1, ${levels.length}] for ${levels.length} label levels`);
  if (m.class_names.length) fail(`class_names: a named model lists its names in ${VOCABULARY_FILE}, not here`);
  if (!own(m.files, VOCABULARY_FILE)) fail(`files: a named model (model.label_levels) needs ${VOCABULARY_FILE} listed`);
}

// vocabulary.json (size and sha256 already checked) against the model's label levels -> a Vocabulary, or null
// for a one-level bundle (runtime_py/verify.py check_vocabulary).
export function verifyVocabulary(m, buf) {
  if (!Object.prototype.hasOwnProperty.call(m.model, "label_levels")) return null;
  let text;
  try { text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(buf); } catch { throw new BundleError(VOCABULARY_FILE, "not UTF-8 text"); }
  if (jsonDepth(text) > SCHEMA.max_json_depth) throw new BundleError(VOCABULARY_FILE, `not valid JSON (nested deeper than ${SCHEMA.max_json_depth} levels)`);
  let vocab;
  try { vocab = Vocabulary.loads(text, VOCABULARY_FILE); } catch (e) {
    if (e instanceof VocabularyError) throw new BundleError(VOCABULARY_FILE, e.message.replace(/^vocabulary\.json: /, ""));
    throw e;
  }
  const c = m.model;
  if (JSON.stringify(vocab.sizes) !== JSON.stringify(c.label_levels) || vocab.nested !== c.label_nested) {
    throw new BundleError(VOCABULARY_FILE, `levels ${JSON.stringify(vocab.sizes)} (${vocab.nested} nested) disagree with the weights' model.label_levels ${JSON.stringify(c.label_levels)} (${c.label_nested} nested)`);
  }
  return vocab;
}

// Check everything the format promises, naming the field on failure (docs: "Verification").
export function verifyManifest(m) {
  const fail = (msg) => { throw new BundleError("manifest.json", msg); };
  if (m === null || typeof m !== "object" || Array.isArray(m)) fail("the top level must be a JSON object");
  if (m.format !== FORMAT) fail(`format is ${short(m.format)}, expected "${FORMAT}"`);
  if (m.format_version !== FORMAT_VERSION) {
    const by = typeof m.exporter === "string" ? ` (written by ${m.exporter.slice(0, 40)})` : "";
    fail(`format_version ${short(m.format_version)}${by} is not supported: this runtime reads version ${FORMAT_VERSION}; re-export it with ditweb ${EXPORTER_VERSION} (ditweb export CKPT OUT)`);
  }
  const err = schemaError(m, SCHEMA.manifest, "manifest.json");
  if (err) fail(err.replace(/^manifest\.json(\.|: )/, ""));
  const c = m.model;
  if (c.input_size % c.patch_size) fail(`model: input_size ${c.input_size} is not divisible by patch_size ${c.patch_size}`);
  if (c.hidden_size % c.num_heads || c.hidden_size / c.num_heads > 256) fail(`model: hidden_size ${c.hidden_size} over ${c.num_heads} heads is no head size in [1, 256]`);
  checkLabelLevels(m, fail);
  if (m.sampler.prediction !== c.prediction) fail(`sampler.prediction ${short(m.sampler.prediction)} differs from model.prediction ${short(c.prediction)}`);
  if (m.sampler.beta_start > m.sampler.beta_end) fail(`sampler: beta_start ${m.sampler.beta_start} exceeds beta_end ${m.sampler.beta_end}`);
  const I = c.input_size, C = c.in_channels;
  if (JSON.stringify(m.io.x_shape) !== JSON.stringify([C, I, I]) || JSON.stringify(m.io.out_shape) !== JSON.stringify([c.learn_sigma ? 2 * C : C, I, I])) {
    fail(`io: x_shape ${short(m.io.x_shape)} / out_shape ${short(m.io.out_shape)} do not fit the model`);
  }
  checkPaths(m.files, fail);
  for (const [name, b] of Object.entries(m.buffers)) {
    if (b.kind === "weight" && !Object.prototype.hasOwnProperty.call(m.files, weightFile(b))) fail(`buffers.${name.slice(0, 60)}: its weights file ${short(weightFile(b))} is not listed in files`);
  }
  for (const [name, k] of Object.entries(m.kernels)) {
    if (!Object.prototype.hasOwnProperty.call(m.files, k.file)) fail(`kernels.${name}.file ${short(k.file)} is not listed in files`);
    checkKernelBindings(name, k, fail);
    for (const rule of k.groups) {
      if (!parseGroup(rule, k.params)) fail(`kernels.${name}.groups: ${short(rule)} is neither a count nor PARAM/divisor of the kernel's params`);
    }
  }
  const own = (o, key) => Object.prototype.hasOwnProperty.call(o, key);
  for (const [name, list] of Object.entries(m.candidates || {})) {
    if (!own(m.kernels, name) || !list.includes(name)) fail(`candidates.${name.slice(0, 60)}: must name a kernel and list it among its candidates`);
    const k = m.kernels[name];
    const types = (kk) => kk.bindings.map((b) => b.type).join(",");
    for (const c of list) {
      if (!own(m.kernels, c)) fail(`candidates.${name}: unknown kernel ${short(c)}`);
      const ck = m.kernels[c];
      if (ck.params.join(",") !== k.params.join(",") || types(ck) !== types(k)) fail(`candidates.${name}: kernel ${short(c)} differs in params or binding types`);
    }
  }
  for (const [name, b] of Object.entries(m.buffers)) {
    if (b.kind === "activation" && 4 * (b.elements[0] + b.elements[1] + b.elements[2]) >= MAX_BYTES) fail(`buffers.${name}: ${4 * (b.elements[0] + b.elements[1] + b.elements[2])} bytes at B = N = 1`);
  }
  for (const key of ["x", "t", "y", "out", "sample"]) {
    const b = Object.prototype.hasOwnProperty.call(m.buffers, m.io[key]) ? m.buffers[m.io[key]] : null;
    if (!b || b.kind !== "activation") fail(`io.${key}: ${short(m.io[key])} names no activation buffer`);
  }
  for (const [name, b] of Object.entries(m.buffers)) {
    if ((b.kind === "step") !== (name === "step")) fail(`buffers.${name.slice(0, 60)}: the step record is the one buffer named 'step', of kind step`);
  }
  const nLevels = labelLevels(m).length;
  if (JSON.stringify(m.buffers[m.io.y].elements) !== JSON.stringify([nLevels, 0, 0])) {
    fail(`buffers.${m.io.y.slice(0, 60)}: elements ${short(m.buffers[m.io.y].elements)} do not hold ${nLevels} label row(s) per batch row ([${nLevels}, 0, 0])`);
  }
  for (const prog of SCHEMA.programs) {
    m.programs[prog].forEach((d, i) => {
      const where = `programs.${prog}[${i}] (${d.label.slice(0, 40)})`;
      const k = Object.prototype.hasOwnProperty.call(m.kernels, d.kernel) ? m.kernels[d.kernel] : null;
      if (!k) fail(`${where}: unknown kernel ${short(d.kernel)}`);
      checkDispatch(d, k, m.buffers, where, fail);
      if (JSON.stringify(d.workgroups) !== JSON.stringify(workgroupForms(k, d.params))) fail(`${where}: workgroups ${short(d.workgroups)} do not follow kernel ${d.kernel}'s groups ${JSON.stringify(k.groups)}`);
      const li = LABEL_OPS.includes(k.op) ? k.params.indexOf("levels") : -1;
      if (li >= 0 && JSON.stringify(d.params[li]) !== JSON.stringify([0, 0, nLevels])) fail(`${where}: levels ${short(d.params[li])} differ from the model's ${nLevels} label levels`);
    });
  }
  const dispatches = SCHEMA.programs.flatMap((prog) => m.programs[prog].map((d, i) => [`programs.${prog}[${i}] (${d.label.slice(0, 40)})`, d]));
  checkReach(m.kernels, m.buffers, dispatches, m.candidates || {}, REACH.batches, fail);
  const rows = (shape) => shape.reduce((a, v) => a * v, 1);
  const x = rows(m.io.x_shape), o = rows(m.io.out_shape);
  checkIoSizes(m.buffers, [["x", m.io.x, 1, 0, x], ["t", m.io.t, 1, 0, 1], ["out", m.io.out, 1, 0, o], ["sample", m.io.sample, 0, 1, x]], REACH.batches, fail);
}

// A kernel's WGSL, parsed (wgslInterface), declares what its manifest entry says: bindings and types, a params struct
// that fits the params uniform, a step struct that fits the step record, `main` and its workgroup size
// (verify.py: check_kernel_source).
export function verifyKernelSource(name, k, code) {
  const fail = (msg) => { throw new BundleError(k.file, msg); };
  let face;
  try { face = wgslInterface(code); } catch (e) { if (e instanceof WgslError) fail(e.message); throw e; }
  const binds = face.bindings, wg = face.workgroup_size;
  const want = k.bindings.map((b) => `${b.binding}:${b.type}`).join(", ");
  const got = binds.map((b) => `${b.binding}:${b.type}`).join(", ");
  if (got !== want) fail(`the shader declares bindings [${got}], manifest.json kernels.${name} says [${want}]`);
  if (wg.join(",") !== k.workgroup_size.join(",")) fail(`@workgroup_size(${wg.join(", ")}) but manifest.json kernels.${name}.workgroup_size is [${k.workgroup_size.join(", ")}]`);
  const paramsBytes = 16 * Math.max(1, Math.ceil(k.params.length / 4));
  for (const b of binds) {
    const room = b.binding === 0 ? paramsBytes : SCHEMA.step_bytes;
    if (b.type === "uniform" && b.size > room) fail(`binding ${b.binding} declares ${b.size} bytes, ${b.binding === 0 ? `the params uniform (${k.params.length} params)` : "the step record"} holds ${room}`);
  }
}

// The shard file of a weight buffer (ditformat/shards.py): `file`, or weights.safetensors for a bundle in one file.
export const weightFile = (b) => (typeof b.file === "string" ? b.file : "weights.safetensors");

// The weight files of a manifest's buffers, in name order (the downloads, one progress step each).
export const weightFiles = (buffers) => [...new Set(Object.values(buffers).filter((b) => b.kind === "weight").map(weightFile))].sort();

// After the downloads: every file's size (the hashes were checked by fetchVerified), the safetensors
// headers against the buffer table, and, for WebGPU, every kernel's WGSL against its entry (the WebAssembly path runs
// its own kernels and fetches no WGSL: kernels null). -> {tensors, kernels, vocab}
// early.vocab: verifyVocabulary's outcome for files' vocabulary.json, found while the other files downloaded
// (earlyVocabulary): its value is used, or its error thrown, where the check of the vocabulary comes.
// early.later: a named bundle's vocabulary.json left out of the download (loadBundle's {vocabulary: "later"}: the
// bundle's loadVocabulary fetches and verifies it when the page needs it): vocab null.
export function verifyFiles(m, files, runtime = "webgpu", early = {}) {
  const vocabFile = early.later ? undefined : vocabularyFiles(m)[0];
  for (const file of bundleFiles(m, runtime)) {
    if (!ownKey(files, file) && !(early.later && file === VOCABULARY_FILE)) throw new BundleError(file, `was not downloaded (every file the ${runtime} runtime reads is verified)`);
  }
  for (const [file, buf] of Object.entries(files)) {
    if (buf.byteLength !== m.files[file].size) throw new BundleError(file, `${buf.byteLength} bytes, manifest.json says ${m.files[file].size}`);
  }
  if (vocabFile && !Object.prototype.hasOwnProperty.call(files, vocabFile)) throw new BundleError(vocabFile, "was not downloaded");
  const tensors = verifyShards(m.buffers, files);
  const kernels = runtime === "wasm" ? null : {};
  for (const [name, k] of runtime === "wasm" ? [] : Object.entries(m.kernels)) {
    let code;
    try { code = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(files[k.file]); } catch { throw new BundleError(k.file, "not UTF-8 text"); }
    verifyKernelSource(name, k, code);
    kernels[name] = code;
  }
  const known = early.vocab && early.vocab.buf === files[vocabFile] ? early.vocab : null;
  if (known && known.error) throw known.error;
  const vocab = !vocabFile ? null : known ? known.value : verifyVocabulary(m, files[vocabFile]);
  return { tensors, kernels, vocab };
}

// verifyVocabulary of a vocabulary.json whose sha256 has passed, ahead of verifyFiles (it parses some hundreds of kB
// of JSON: done while the weights still download): {buf, value} or {buf, error}, for verifyFiles' early.vocab.
export function earlyVocabulary(m, buf) {
  try {
    if (buf.byteLength !== m.files[VOCABULARY_FILE].size) return null;   // verifyFiles names the size first
    return { buf, value: verifyVocabulary(m, buf) };
  } catch (e) {
    return { buf, error: e };
  }
}

// A named bundle's vocabulary.json fetched on its own (after a load with {vocabulary: "later"}), verified as loadBundle
// verifies it: the manifest's sha256 (fetchVerified) and size, then verifyVocabulary -> a Vocabulary (a BundleError
// naming vocabulary.json otherwise). m: the bundle's verified manifest.
/**
 * @param {string | URL} baseUrl @param {any} m
 * @param {{signal?: AbortSignal, stats?: {downloaded: number, cached: number}, useCache?: boolean}} [options]
 */
export async function fetchVocabulary(baseUrl, m, options = {}) {
  const entry = m.files[VOCABULARY_FILE];
  const buf = await fetchVerified(baseUrl, VOCABULARY_FILE, entry.sha256, options);
  if (buf.byteLength !== entry.size) throw new BundleError(VOCABULARY_FILE, `${buf.byteLength} bytes, manifest.json says ${entry.size}`);
  const t = performance.now();
  const vocab = verifyVocabulary(m, buf);
  measure("vocabulary", t);
  return vocab;
}

// The files loadBundle downloads and verifies for a runtime, its decoder/ aside (fetchDecoder verifies those against
// both manifests). WebGPU: every file the manifest lists, used or not (a model card too), as runtime_py/verify.py
// check_files does. WebAssembly: what it runs, the weight shards and a named model's vocabulary.json; not the WGSL
// kernels (it runs ditweb-kernels*.wasm) nor the model card. webserve/site.py runtime_files is the twin (the
// first-visit report).
export const bundleFiles = (m, runtime = "webgpu") => (runtime === "wasm"
  ? [...weightFiles(m.buffers), ...vocabularyFiles(m)]
  : Object.keys(m.files).filter((f) => !f.startsWith("decoder/"))).sort();

// [VOCABULARY_FILE] for a named bundle (fetched and verified with the weights and kernels), else [].
export const vocabularyFiles = (m) => (Object.prototype.hasOwnProperty.call(m.model, "label_levels") ? [VOCABULARY_FILE] : []);

// Weight buffers vs the headers of their shards (each parsed once): the tensor exists in the buffer's file with
// the listed dtype, shape and bytes. Shared by the bundle and its decoder/ (web/decode.js; prefix "decoder/").
// files: {file: ArrayBuffer}. -> {buffer name: {buf, offset, nbytes}} (offset: the tensor's first byte in buf)
export function verifyShards(buffers, files, prefix = "", manifestName = "manifest") {
  const DT = { f32: "F32", f16: "F16", i8: "I8" };
  const headers = {};
  const out = {};
  for (const [name, b] of Object.entries(buffers)) {
    if (b.kind !== "weight") continue;
    const file = weightFile(b);
    if (!Object.prototype.hasOwnProperty.call(files, file)) throw new BundleError(prefix + file, `was not downloaded (${manifestName} buffer ${name})`);
    if (!Object.prototype.hasOwnProperty.call(headers, file)) headers[file] = parseSafetensors(files[file], prefix + file);
    const t = Object.prototype.hasOwnProperty.call(headers[file], b.tensor) ? headers[file][b.tensor] : null;
    if (!t) throw new BundleError(prefix + file, `has no tensor ${b.tensor} (${manifestName} buffer ${name})`);
    if (ownKey(b, "encoding")) {
      out[name] = checkPacked(name, b, headers[file], files[file], prefix + file, manifestName);
      continue;
    }
    if (DT[b.dtype] !== t.dtype || JSON.stringify(b.shape) !== JSON.stringify(t.shape) || b.bytes !== t.nbytes) {
      throw new BundleError(prefix + file, `tensor ${b.tensor} is ${t.dtype} ${JSON.stringify(t.shape)} (${t.nbytes} bytes), ${manifestName} buffer ${name} says ${b.dtype} ${JSON.stringify(b.shape)} (${b.bytes} bytes)`);
    }
    out[name] = { buf: files[file], offset: t.offset, nbytes: t.nbytes };
  }
  return out;
}

// A packed weight buffer (encoding q4k: bundle-schema.json weight_encodings, ditformat/packed.py) against its shard,
// then unpacked: an i8 [N, K] buffer of N K bytes with K a multiple of the group, its nibble tensor U8 [N, K/2] and
// steps tensor (name + steps_suffix) U8 [N, K/group] in the same shard. runtime_py/verify.py check_packed is the
// twin (the same checks in the same order). -> {buf, offset: 0, nbytes}: the i8 values the int8 kernels read.
function checkPacked(name, b, header, buf, file, manifestName) {
  const enc = SCHEMA.weight_encodings.q4k;
  const [N, K] = b.shape;
  if (b.dtype !== enc.dtype || b.shape.length !== 2 || K % enc.group || K === 0 || b.bytes !== N * K) {
    throw new BundleError(file, `${manifestName} buffer ${name} says ${b.dtype} ${short(b.shape)} (${b.bytes} bytes); q4k encodes an i8 [N, K] buffer of N K bytes, K a multiple of ${enc.group}`);
  }
  const parts = [];
  for (const [tensor, shape] of [[b.tensor, [N, K / 2]], [b.tensor + enc.steps_suffix, [N, K / enc.group]]]) {
    const t = ownKey(header, tensor) ? header[tensor] : null;
    if (!t) throw new BundleError(file, `has no tensor ${tensor} (${manifestName} buffer ${name})`);
    if (t.dtype !== "U8" || JSON.stringify(t.shape) !== JSON.stringify(shape)) {
      throw new BundleError(file, `tensor ${tensor} is ${t.dtype} ${JSON.stringify(t.shape)}, ${manifestName} buffer ${name} (q4k) needs U8 ${JSON.stringify(shape)}`);
    }
    parts.push(new Uint8Array(buf, t.offset, t.nbytes));
  }
  try {
    return { buf: unpackQ4k(parts[0], parts[1], N, K, b.tensor).buffer, offset: 0, nbytes: N * K };
  } catch (e) {
    if (e instanceof RangeError) throw new BundleError(file, e.message);
    throw e;
  }
}

// pairs[k * 256 + byte]: the two i8 values (q k) of a byte of nibbles for step k, as the little-endian u16 they make
// in the output (even column in the low byte), or -1 for a byte holding a -8; built on first use.
let q4kPairs = null;
function q4kTable(kMax) {
  if (q4kPairs) return q4kPairs;
  q4kPairs = new Int32Array((kMax + 1) * 256);
  for (let k = 0; k <= kMax; k++) {
    for (let b = 0; b < 256; b++) {
      const lo = b & 15, hi = b >> 4;
      q4kPairs[k * 256 + b] = lo === 8 || hi === 8 ? -1 : (((lo < 8 ? lo : lo - 16) * k) & 255) | ((((hi < 8 ? hi : hi - 16) * k) & 255) << 8);
    }
  }
  return q4kPairs;
}

// The error for the first byte holding a -8 from byte `from` on (row order: the low nibble is the even column).
function q4kBadNibble(nibbles, from, K, name, qMax) {
  let at = from;
  while ((nibbles[at] & 15) !== 8 && nibbles[at] >> 4 !== 8) at++;
  const c = 2 * (at % (K / 2)) + ((nibbles[at] & 15) === 8 ? 0 : 1);
  return new RangeError(`tensor ${name}: value -8 at row ${Math.floor(at / (K / 2))}, column ${c} (q4k values are -${qMax}..${qMax})`);
}

/**
 * A q4k buffer's i8 values (N x K) from its nibbles (N x K/2 bytes: value c of a row is nibble c, byte c/2, the low
 * nibble for even c, two's complement) and its steps (N x K/group bytes): value = q k. Refuses (RangeError naming the
 * tensor) a step outside k_min..k_max, all steps first, then a nibble of -8, the first in row order, as
 * ditformat/packed.py unpack_q4k does. One table look-up per byte (two values), two bytes written as one u32.
 * @param {Uint8Array} nibbles @param {Uint8Array} steps @param {number} N @param {number} K @param {string} name
 * @returns {Int8Array}
 */
export function unpackQ4k(nibbles, steps, N, K, name) {
  const { group, q_max: qMax, k_min: kMin, k_max: kMax, steps_suffix: suffix } = SCHEMA.weight_encodings.q4k;
  const G = K / group, half = group / 2;
  for (let i = 0; i < steps.length; i++) {
    if (steps[i] < kMin || steps[i] > kMax) throw new RangeError(`tensor ${name}${suffix}: step ${steps[i]} at row ${Math.floor(i / G)}, group ${i % G} is outside ${kMin}..${kMax}`);
  }
  const table = q4kTable(kMax);
  const out = new Int8Array(N * K);
  const words = new Uint32Array(out.buffer);         // 4 values (2 bytes of nibbles) a word; group: a multiple of 4
  const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  for (let g = 0; g < steps.length; g++) {
    const t = steps[g] * 256;
    let bad = 0;
    for (let i = g * half, end = i + half; i < end; i += 2) {
      const a = table[t + nibbles[i]], b = table[t + nibbles[i + 1]];
      bad |= a | b;
      words[i >> 1] = little ? a | (b << 16) : ((a & 255) << 24) | ((a >> 8) << 16) | ((b & 255) << 8) | (b >> 8);
    }
    if (bad < 0) throw q4kBadNibble(nibbles, g * half, K, name, qMax);
  }
  return out;
}

// ------------------------------------------------------------------ WGSL: the kernel's interface, parsed
// The twin of ditformat/wgsl.py (rules in its docstring): printable ASCII, comments and whitespace ignored,
// attributes in any order, decimal integer literals only; -> {bindings: [{binding, type, size?}], workgroup_size}.
class WgslError extends Error {}
const WGSL_TOKEN = /[A-Za-z_][A-Za-z0-9_]*|[0-9][A-Za-z0-9_.]*|\S/g;
const WGSL_INT = /^(0|[1-9][0-9]{0,9})[iu]?$/;
const WGSL_VEC = /^vec([234])(?:<(u32|i32|f32)>|([uif]))$/;
const WGSL_SCALARS = new Set(["u32", "i32", "f32"]);
const STORAGE_ELEMENTS = ["f32", "u32", "i32", "vec2<f32>", "vec2<u32>", "vec4<f32>", "vec4<u32>", "vec4<i32>"];
const WGSL_ACCESS = { "uniform|": "uniform", "storage|": "read-only-storage", "storage|read": "read-only-storage", "storage|read_write": "storage" };
const ownKey = (o, key) => Object.prototype.hasOwnProperty.call(o, key);

function stripComments(code) {
  const bad = /[^\t\n\r\x20-\x7e]/.exec(code);
  if (bad) throw new WgslError(`character '${bad[0]}' (U+${bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}): kernel sources are printable ASCII`);
  const comment = /\/\/|\/\*/g, mark = /\/\*|\*\//g, lineEnd = /[\n\r]/g;
  let out = "", i = 0;
  for (;;) {
    comment.lastIndex = i;
    const m = comment.exec(code);
    if (!m) return out + code.slice(i);
    out += code.slice(i, m.index) + " ";
    if (m[0] === "//") {
      lineEnd.lastIndex = m.index + 2;
      const end = lineEnd.exec(code);
      i = end ? end.index : code.length;
      continue;
    }
    let depth = 1;
    i = m.index + 2;
    while (depth) {
      mark.lastIndex = i;
      const k = mark.exec(code);
      if (!k) throw new WgslError("unterminated /* comment");
      depth += k[0] === "/*" ? 1 : -1;
      i = k.index + 2;
    }
  }
}

function literalInt(toks, what) {
  if (toks.length !== 1 || !WGSL_INT.test(toks[0]) || Number(toks[0].replace(/[iu]$/, "")) >= 2 ** 31) throw new WgslError(`${what}(${toks.join(" ").slice(0, 30)}) is not a decimal integer literal`);
  return Number(toks[0].replace(/[iu]$/, ""));
}

function closeAt(toks, i, open, close) {
  let depth = 0;
  for (let j = i; j < toks.length; j++) {
    depth += Number(toks[j] === open) - Number(toks[j] === close);
    if (depth === 0) return j + 1;
  }
  throw new WgslError(`unbalanced '${open}'`);
}

function splitCommas(toks) {
  const parts = [];
  let cur = [], depth = 0;
  for (const t of toks) {
    depth += ("(<[".includes(t) ? 1 : 0) - (")>]".includes(t) ? 1 : 0);
    if (t === "," && depth === 0) { parts.push(cur); cur = []; } else cur.push(t);
  }
  if (cur.length) parts.push(cur);
  return parts;
}

function declarationEnd(toks, i) {
  let depth = 0;
  for (let j = i; j < toks.length; j++) {
    const t = toks[j];
    depth += ("({[".includes(t) ? 1 : 0) - (")}]".includes(t) ? 1 : 0);
    if (depth === 0 && (t === ";" || t === "}")) return j + 1;
  }
  throw new WgslError("a declaration runs to the end of the source");
}

function typeLayout(toks, structs, where) {
  const text = toks.join("");
  if (WGSL_SCALARS.has(text)) return [4, 4];
  const vec = WGSL_VEC.exec(text);
  if (vec) { const n = Number(vec[1]); return [4 * n, n === 2 ? 8 : 16]; }
  if (structs.has(text)) return structs.get(text);
  if (toks.length > 4 && toks[0] === "array" && toks[1] === "<" && toks[toks.length - 1] === ">") {
    const parts = splitCommas(toks.slice(2, -1));
    if (parts.length === 2) {
      const [size, align] = typeLayout(parts[0], structs, where);
      const count = literalInt(parts[1], "array length");
      const stride = Math.ceil(size / align) * align;
      if (stride % 16) throw new WgslError(`${where}: uniform array of ${parts[0].join("")} has a stride of ${stride} bytes, not a multiple of 16`);
      return [count * stride, Math.max(align, 16)];
    }
  }
  throw new WgslError(`${where}: type ${text.slice(0, 40)} is not u32/i32/f32, a vector, an array or a struct of them`);
}

function parseStruct(toks, i, structs) {
  const name = i + 1 < toks.length ? toks[i + 1] : "";
  if (i + 2 >= toks.length || toks[i + 2] !== "{") throw new WgslError(`struct ${name.slice(0, 30)}: expected '{'`);
  const end = closeAt(toks, i + 2, "{", "}");
  let offset = 0, align = 4;
  for (const member of splitCommas(toks.slice(i + 3, end - 1))) {
    if (member.length < 3 || member[1] !== ":" || member.includes("@")) throw new WgslError(`struct ${name.slice(0, 30)}: member ${member.join(" ").slice(0, 40)} is not 'name: type'`);
    const [size, a] = typeLayout(member.slice(2), structs, `struct ${name.slice(0, 30)}`);
    offset = Math.ceil(offset / a) * a + size;
    align = Math.max(align, a);
  }
  align = Math.max(align, 16);
  structs.set(name, [Math.ceil(offset / align) * align, align]);
  return end;
}

function parseVar(toks, i, attrs, structs) {
  let space = null, access = null, j = i + 1;
  if (j < toks.length && toks[j] === "<") {
    const end = closeAt(toks, j, "<", ">");
    const inner = splitCommas(toks.slice(j + 1, end - 1));
    if (inner.length < 1 || inner.length > 2 || inner.some((p) => p.length !== 1)) throw new WgslError(`var<${toks.slice(j + 1, end - 1).join(" ").slice(0, 40)}> is not an address space and access`);
    space = inner[0][0]; access = inner.length === 2 ? inner[1][0] : null; j = end;
  }
  if (space === null || space === "workgroup" || space === "private") {
    if (attrs.has("group") || attrs.has("binding")) throw new WgslError(`@binding on a var<${space || "private"}>`);
    return null;
  }
  const key = `${space}|${access || ""}`;
  const kind = ownKey(WGSL_ACCESS, key) ? WGSL_ACCESS[key] : null;
  if (!kind) throw new WgslError(`var<${space}${access ? ", " + access : ""}> is not uniform, storage or storage, read_write`);
  if (attrs.size !== 2 || !attrs.has("group") || !attrs.has("binding")) throw new WgslError(`var<${space}> needs exactly @group and @binding, has ${[...attrs.keys()].sort().join(", ") || "none"}`);
  const group = literalInt(attrs.get("group"), "@group"), num = literalInt(attrs.get("binding"), "@binding");
  if (group !== 0) throw new WgslError(`@binding(${num}) is in @group(${group}); kernels use group 0 only`);
  if (j + 2 >= toks.length || toks[j + 1] !== ":") throw new WgslError(`binding ${num}: expected 'name: type'`);
  const ty = toks.slice(j + 2, declarationEnd(toks, j) - 1);
  const out = { binding: num, type: kind };
  if (space === "uniform") out.size = typeLayout(ty, structs, `binding ${num}`)[0];
  else if (!(ty.length >= 4 && ty[0] === "array" && ty[1] === "<" && ty[ty.length - 1] === ">" && STORAGE_ELEMENTS.includes(ty.slice(2, -1).join("")))) {
    throw new WgslError(`binding ${num}: storage type ${ty.join("").slice(0, 40)} is not a runtime-sized array of ${[...STORAGE_ELEMENTS].sort().join(", ")}`);
  }
  return out;
}

export function wgslInterface(code) {
  const toks = stripComments(code).match(WGSL_TOKEN) || [];
  const structs = new Map(), binds = [], entries = [];
  let attrs = new Map(), i = 0;
  while (i < toks.length) {
    const t = toks[i];
    if (t === "@") {
      if (i + 1 >= toks.length || !/^[A-Za-z_]\w*$/.test(toks[i + 1])) throw new WgslError("'@' without an attribute name");
      const name = toks[i + 1];
      let args = null;
      if (i + 2 < toks.length && toks[i + 2] === "(") { const end = closeAt(toks, i + 2, "(", ")"); args = toks.slice(i + 3, end - 1); i = end; } else i += 2;
      if (attrs.has(name)) throw new WgslError(`@${name} twice on one declaration`);
      attrs.set(name, args);
      continue;
    }
    if (t === "struct") i = parseStruct(toks, i, structs);
    else if (t === "var") {
      const b = parseVar(toks, i, attrs, structs);
      if (b) binds.push(b);
      i = declarationEnd(toks, i);
    } else if (t === "fn") {
      if (["compute", "vertex", "fragment"].some((s) => attrs.has(s))) entries.push([i + 1 < toks.length ? toks[i + 1] : "", attrs]);
      if (i + 2 >= toks.length || toks[i + 2] !== "(") throw new WgslError(`fn ${i + 1 < toks.length ? toks[i + 1].slice(0, 30) : ""}: expected '('`);
      i = declarationEnd(toks, closeAt(toks, i + 2, "(", ")"));
    } else {
      if (attrs.size && !["const", "override", "alias"].includes(t)) throw new WgslError(`attribute(s) ${[...attrs.keys()].map((a) => "@" + a).join(", ")} before '${t.slice(0, 20)}'`);
      i = declarationEnd(toks, i);
    }
    attrs = new Map();
  }
  const nums = binds.map((b) => b.binding);
  const dup = nums.find((n, k) => nums.indexOf(n) !== k);
  if (dup !== undefined) throw new WgslError(`binding ${dup} declared twice`);
  binds.sort((a, b) => a.binding - b.binding);
  return { bindings: binds, workgroup_size: entryPoint(entries) };
}

function entryPoint(entries) {
  if (entries.length !== 1) throw new WgslError(`expected one entry point (@compute fn main), found ${entries.length}`);
  const [name, attrs] = entries[0];
  const keys = [...attrs.keys()].sort();
  if (name !== "main" || keys.join(",") !== "compute,workgroup_size" || attrs.get("compute") !== null) {
    throw new WgslError(`the entry point must be '@compute @workgroup_size(...) fn main', found ${keys.map((a) => "@" + a).join(" ")} fn ${name.slice(0, 30)}`);
  }
  const dims = splitCommas(attrs.get("workgroup_size"));
  if (dims.length < 1 || dims.length > 3) throw new WgslError(`@workgroup_size(${attrs.get("workgroup_size").join(" ").slice(0, 40)}) is not 1 to 3 integers`);
  return [...dims.map((d) => literalInt(d, "@workgroup_size")), 1, 1].slice(0, 3);
}

// ------------------------------------------------------------------ buffer reach (ditformat/reach.py is the twin)
// How many elements each binding of a dispatch reaches, from its params, by the rules of ditformat/reach.json
// (REACH), evaluated exactly with BigInt and floor division as Python does.
class ReachError extends Error {}
const REACH_FUNCTIONS = { cdiv: 2, max: 2, min: 2, eq: 2 };
const parsedReach = new Map();

function parseReach(text) {
  if (parsedReach.has(text)) return parsedReach.get(text);
  const toks = [...text.matchAll(/\s*(?:([0-9]+)|(\$?[A-Za-z_][A-Za-z0-9_]*)|(\S))/g)].map((m) => m[1] || m[2] || m[3]).filter((t) => t);
  let pos = 0;
  const peek = () => (pos < toks.length ? toks[pos] : null);
  const take = (want) => {
    const t = peek();
    if (t === null || (want !== undefined && t !== want)) throw new Error(`reach.json: bad expression ${text}`);
    pos++;
    return t;
  };
  const factor = () => {
    const t = take();
    if (t === "(") { const node = expr(); take(")"); return node; }
    if (t === "-") return ["neg", factor()];
    if (/^[0-9]+$/.test(t)) return ["int", BigInt(t)];
    if (ownKey(REACH_FUNCTIONS, t)) {
      take("(");
      const args = [expr()];
      while (peek() === ",") { take(); args.push(expr()); }
      take(")");
      return ["call", t, args];
    }
    return ["name", t];
  };
  const term = () => { let node = factor(); while (["*", "/", "%"].includes(peek())) node = [take(), node, factor()]; return node; };
  const expr = () => { let node = term(); while (["+", "-"].includes(peek())) node = [take(), node, term()]; return node; };
  const node = expr();
  if (peek() !== null) throw new Error(`reach.json: bad expression ${text}`);
  parsedReach.set(text, node);
  return node;
}

/** @param {bigint} a @param {bigint} b @param {string} text @returns {bigint} */
function floorDiv(a, b, text) {
  if (b === 0n) throw new ReachError(`division by zero in ${text}`);
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/** @param {any[]} node @param {Map<string, bigint>} env @param {string} text @returns {bigint} */
function evalReach(node, env, text) {
  const [kind] = node;
  if (kind === "int") return node[1];
  if (kind === "name") {
    if (!env.has(node[1])) throw new ReachError(`${node[1].startsWith("$") ? "variant value " + node[1].slice(1) : "param " + node[1]} is missing (needed by ${text})`);
    return env.get(node[1]);
  }
  if (kind === "neg") return -evalReach(node[1], env, text);
  if (kind === "call") {
    const [a, b] = /** @type {bigint[]} */ (node[2].map((x) => evalReach(x, env, text)));
    if (node[1] === "cdiv") return -floorDiv(-a, b, text);
    if (node[1] === "max") return a > b ? a : b;
    if (node[1] === "min") return a < b ? a : b;
    return a === b ? 1n : 0n;
  }
  const a = evalReach(node[1], env, text), b = evalReach(node[2], env, text);
  if (kind === "+") return a + b;
  if (kind === "-") return a - b;
  if (kind === "*") return a * b;
  if (kind === "/") return floorDiv(a, b, text);
  return a - b * floorDiv(a, b, text);
}

// Elements each binding (1, 2, ...) of a dispatch of kernel k reaches (BigInt), params evaluated at (B, N).
export function reachOf(k, values, B, N, groups) {
  const op = ownKey(REACH.aliases, k.op) ? REACH.aliases[k.op] : k.op;
  if (typeof k.op !== "string" || !ownKey(REACH.ops, op)) throw new ReachError(`op ${short(k.op)} is not an op of this format (no reach rule)`);
  const rule = REACH.ops[op];
  const env = new Map();
  k.params.forEach((name, i) => env.set(name, BigInt(values[i])));
  [["$B", B], ["$N", N], ["$g0", groups[0]], ["$g1", groups[1]], ["$g2", groups[2]]].forEach(([n, v]) => env.set(n, BigInt(v)));
  for (const [key, v] of Object.entries(k.variant || {})) if (Number.isInteger(v)) env.set("$" + key, BigInt(v));
  for (const text of rule.divisors) {
    const v = evalReach(parseReach(text), env, text);
    if (v <= 0n) throw new ReachError(`${text} = ${v}: a size parameter is 0`);
  }
  const lets = typeof rule.let === "string" ? REACH.lets[rule.let] : rule.let || {};   // a name: a let-set ops share
  for (const [name, text] of Object.entries(lets)) env.set(name, evalReach(parseReach(text), env, text));
  const need = rule.need.map((text) => evalReach(parseReach(text), env, text));
  if (need.length !== k.bindings.length - 1) throw new ReachError(`op ${k.op} binds ${need.length} buffers, the kernel declares ${k.bindings.length - 1}`);
  return need;
}


// Elements a buffer holds at (B, N) as a BigInt; null for the step record.
export function bufferElements(b, B, N) {
  if (b.kind === "activation") return BigInt(evaluate(b.elements, B, N));
  if (b.kind === "weight") return b.shape.reduce((a, d) => a * BigInt(d), 1n);
  return null;
}

// memo: reachOf's results within one check of one manifest, per kernel (its entry) by batch, params and workgroups (a
// model's blocks repeat the same dispatches on other buffers: a fifth of the evaluations); reachOf reads nothing else
function checkDispatchReach(where, d, k, forms, buffers, B, N, fail, memo) {
  const values = d.params.map((f) => evaluate(f, B, N));
  const groups = forms.map((f) => evaluate(f, B, N));
  if ([...values, ...groups].some((v) => v >= 2 ** 32)) {
    if (B === 1 && N === 1) fail(`${where}: a param or workgroup count overflows u32 at B = N = 1`);
    return;
  }
  if (groups.some((g) => g === 0)) fail(`${where}: workgroups [${groups.join(", ")}] at B = ${B}, N = ${N}: a dispatch of 0 workgroups does nothing`);
  if (!memo.has(k)) memo.set(k, new Map());
  const known = memo.get(k), key = `${B},${N}|${values.join(",")}|${groups.join(",")}`;
  let need = known.get(key);
  if (!need) {
    try { need = reachOf(k, values, B, N, groups); } catch (e) { if (e instanceof ReachError) fail(`${where}: ${e.message}`); throw e; }
    known.set(key, need);
  }
  d.bindings.forEach((bn, i) => {
    const have = bufferElements(buffers[bn], B, N);
    if (have !== null && need[i] > have) fail(`${where}: binding ${i + 1} (${bn.slice(0, 60)}) holds ${have} elements at B = ${B}, N = ${N}; the dispatch reaches ${need[i]}`);
  });
}

// Every dispatch ([where, d] pairs), run by its kernel and each of its candidates, at every batch (verify.py check_reach).
export function checkReach(kernels, buffers, dispatches, candidates, batches, fail) {
  const memo = new Map();
  for (const [where, d] of dispatches) {
    const names = ownKey(candidates, d.kernel) ? candidates[d.kernel] : [d.kernel];
    for (const kname of names) {
      const k = kernels[kname];
      const own = kname === d.kernel;
      const forms = own ? d.workgroups : workgroupForms(k, d.params);
      for (const [B, N] of batches) checkDispatchReach(own ? where : `${where} [candidate ${kname}]`, d, k, forms, buffers, B, N, fail, memo);
    }
  }
}

// needs: [field, buffer name, rows per B, rows per N, elements per row]: what the host writes or reads back.
export function checkIoSizes(buffers, needs, batches, fail) {
  for (const [field, name, perB, perN, row] of needs) {
    for (const [B, N] of batches) {
      const have = bufferElements(buffers[name], B, N), want = BigInt((perB * B + perN * N)) * BigInt(row);
      if (have < want) fail(`io.${field}: buffer ${short(name)} holds ${have} elements at B = ${B}, N = ${N}; the runtime writes or reads ${want}`);
    }
  }
}
export const REACH_BATCHES = REACH.batches;

// Every dispatch of a verified bundle manifest at the batch (B, N) a runtime is about to run (runtime_py checks
// the same in BatchState): the verifier tried REACH.batches only. Throws a BundleError naming the dispatch.
export function checkBatchReach(m, B, N) {
  const fail = (msg) => { throw new BundleError("manifest.json", msg); };
  const dispatches = SCHEMA.programs.flatMap((prog) => m.programs[prog].map((d, i) => [`programs.${prog}[${i}] (${d.label.slice(0, 40)})`, d]));
  checkReach(m.kernels, m.buffers, dispatches, m.candidates || {}, [[B, N]], fail);
}

// Kernels of web/ditweb-kernels.wasm called directly (no manifest, no engine) for tests/test_wasm_q8.py and
// tests/test_wasm_decoder.py: reads a
// JSON list of calls on stdin, each {fn, params: [u32...], args: [{f32: [...]} | {i8: [...]} | {u32s: [...]} | {zeros: n} | {u32: v}],
// read: [argIndex, count], parts?, simd?}, runs each in a fresh instance (parts: fn(..., part, parts) for every part in turn) and prints [{out: [...]}, ...] (the f32 block `read` names).
// simd "relaxed": web/ditweb-kernels-relaxed.wasm instead (node 20 needs --experimental-wasm-relaxed-simd).
// f32 / i8 / u32s / zeros arguments get their own 16-byte-aligned block of memory and pass as pointers; u32 ones as is.
import { readFileSync } from "node:fs";

const modules = {};
const moduleFor = async (simd) => modules[simd] ??= await WebAssembly.compile(
  readFileSync(new URL(simd === "relaxed" ? "../web/ditweb-kernels-relaxed.wasm" : "../web/ditweb-kernels.wasm", import.meta.url)));
const replies = [];
for (const req of JSON.parse(readFileSync(0, "utf-8"))) {
  const x = (await WebAssembly.instantiate(await moduleFor(req.simd || "plain"), {})).exports;
  let top = (x.__heap_base.value + 15) & ~15;
  const alloc = (n) => {
    const ptr = top;
    top = (top + n + 15) & ~15;
    const need = top - x.memory.buffer.byteLength;
    if (need > 0) x.memory.grow(Math.ceil(need / 65536));
    return ptr;
  };
  const paramsPtr = alloc(4 * req.params.length);
  new Uint32Array(x.memory.buffer, paramsPtr, req.params.length).set(req.params);
  const ptrs = [], values = [];
  for (const a of req.args) {
    if ("u32" in a) { values.push(a.u32); ptrs.push(null); continue; }
    const p = "i8" in a ? alloc(a.i8.length + 16) : alloc(4 * ("f32" in a ? a.f32.length : "u32s" in a ? a.u32s.length : a.zeros) + 16);
    if ("f32" in a) new Float32Array(x.memory.buffer, p, a.f32.length).set(a.f32.map(Number));   // "Infinity", "NaN" as strings
    if ("u32s" in a) new Uint32Array(x.memory.buffer, p, a.u32s.length).set(a.u32s);
    if ("i8" in a) new Int8Array(x.memory.buffer, p, a.i8.length).set(a.i8);
    ptrs.push(p); values.push(p);
  }
  if (req.parts) for (let part = 0; part < req.parts; part++) x[req.fn](paramsPtr, ...values, part, req.parts);   // every share
  else x[req.fn](paramsPtr, ...values);
  const [i, count] = req.read;
  replies.push({ out: Array.from(new Float32Array(x.memory.buffer, ptrs[i], count)) });
}
process.stdout.write(JSON.stringify(replies));

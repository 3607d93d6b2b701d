// One kernel of web/ditweb-kernels.wasm called directly (no manifest, no engine), for tests/test_wasm_decoder.py:
// reads {fn, params: [u32...], args: [{f32: [...]} | {zeros: n} | {u32: v}], read: [argIndex, count]} on stdin;
// each f32 / zeros argument gets its own 16-byte-aligned block of the module's memory and is passed as a pointer,
// a u32 argument is passed as is (a kernel variant); prints {out: [...]} (the f32 block `read` names).
import { readFileSync } from "node:fs";

const req = JSON.parse(readFileSync(0, "utf-8"));
const { instance } = await WebAssembly.instantiate(readFileSync(new URL("../web/ditweb-kernels.wasm", import.meta.url)), {});
const x = instance.exports;
let top = (x.__heap_base.value + 15) & ~15;
function alloc(bytes) {
  const ptr = top;
  top = (top + bytes + 15) & ~15;
  const need = top - x.memory.buffer.byteLength;
  if (need > 0) x.memory.grow(Math.ceil(need / 65536));
  return ptr;
}
const paramsPtr = alloc(4 * req.params.length);
new Uint32Array(x.memory.buffer, paramsPtr, req.params.length).set(req.params);
const ptrs = [], values = [];
for (const a of req.args) {
  if ("u32" in a) { values.push(a.u32); ptrs.push(null); continue; }
  const n = "f32" in a ? a.f32.length : a.zeros;
  const p = alloc(4 * n + 16);
  if ("f32" in a) new Float32Array(x.memory.buffer, p, n).set(a.f32);
  ptrs.push(p); values.push(p);
}
x[req.fn](paramsPtr, ...values);
const [i, count] = req.read;
process.stdout.write(JSON.stringify({ out: Array.from(new Float32Array(x.memory.buffer, ptrs[i], count)) }));

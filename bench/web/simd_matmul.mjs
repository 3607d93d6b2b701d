// op_matmul of the plain and the relaxed SIMD kernels (web/ditweb-kernels.wasm, web/ditweb-kernels-relaxed.wasm)
// on one thread in node, timed in turns (background load hits both alike): median and best GFLOP/s per shape, and
// the largest difference of the outputs relative to their range. Not a test: the machine is shared.
//   node --experimental-wasm-relaxed-simd bench/web/simd_matmul.mjs [reps] [MxKxN ...]
// (node 20 has relaxed SIMD behind that flag; Chromium ships it). Default shapes: the shipped model's matmuls at
// one CFG step (2 rows x 64 tokens, hidden 128, MLP 512). Prints a markdown table.
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const reps = Number(args[0] || 21);
const shapes = (args.length > 1 ? args.slice(1) : ["128x128x384", "128x128x128", "128x128x512", "128x512x128"])
  .map((s) => s.split("x").map(Number));

async function instance(file, M, K, N) {
  const module = await WebAssembly.compile(readFileSync(new URL(`../../web/${file}`, import.meta.url)));
  const x = /** @type {any} */ ((await WebAssembly.instantiate(module, {})).exports);
  let top = (x.__heap_base.value + 15) & ~15;
  const alloc = (n) => {
    const ptr = top;
    top = (top + n + 15) & ~15;
    if (top > x.memory.buffer.byteLength) x.memory.grow(Math.ceil((top - x.memory.buffer.byteLength) / 65536));
    return ptr;
  };
  const params = alloc(64), a = alloc(4 * M * K), w = alloc(4 * K * N), bias = alloc(4 * N), dst = alloc(4 * M * N);
  const scratch = alloc(4 * M * K);
  new Uint32Array(x.memory.buffer, params, 5).set([M, N, K, 1, 1]);   // matmul params: M N K out_group out_stride
  const f = new Float32Array(x.memory.buffer);
  for (let i = 0; i < M * K; i++) f[a / 4 + i] = Math.sin(i);
  for (let i = 0; i < K * N; i++) f[w / 4 + i] = 0.1 * Math.cos(i);
  return { run: () => x.op_matmul(params, a, w, bias, dst, 0, 0, scratch),
           out: () => new Float32Array(x.memory.buffer, dst, M * N).slice() };
}

const median = (v) => [...v].sort((p, q) => p - q)[v.length >> 1];
const rows = [];
for (const [M, K, N] of shapes) {
  const plain = await instance("ditweb-kernels.wasm", M, K, N), relaxed = await instance("ditweb-kernels-relaxed.wasm", M, K, N);
  const inner = Math.max(1, Math.round(2e8 / (2 * M * K * N)));   // ~0.2 GFLOP a sample
  const times = { plain: [], relaxed: [] };
  for (let r = 0; r < reps + 2; r++) {
    for (const [name, k] of [["plain", plain], ["relaxed", relaxed]]) {
      const t = performance.now();
      for (let j = 0; j < inner; j++) k.run();
      if (r >= 2) times[name].push((performance.now() - t) / inner);   // two warm-up rounds
    }
  }
  const gf = (ms) => (2 * M * K * N / ms / 1e6).toFixed(1);
  const p = plain.out(), q = relaxed.out();
  let diff = 0, range = 0;
  for (let i = 0; i < p.length; i++) { diff = Math.max(diff, Math.abs(p[i] - q[i])); range = Math.max(range, Math.abs(p[i])); }
  rows.push(`| ${M} x ${K} x ${N} | ${gf(median(times.plain))} | ${gf(median(times.relaxed))} | `
    + `${(median(times.plain) / median(times.relaxed)).toFixed(2)}x | ${gf(Math.min(...times.plain))} | `
    + `${gf(Math.min(...times.relaxed))} | ${(diff / range).toExponential(1)} |`);
}
console.log("| M x K x N | plain GFLOP/s (median) | relaxed GFLOP/s (median) | relaxed / plain | plain best | relaxed best | max diff / range |");
console.log("|---|---|---|---|---|---|---|");
for (const r of rows) console.log(r);

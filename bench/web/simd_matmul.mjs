// The matmul kernels of the plain and the relaxed SIMD modules (web/ditweb-kernels.wasm, web/ditweb-kernels-relaxed.wasm)
// on one thread in node, timed in turns (background load hits all alike): median and best GFLOP/s per shape, and the
// error of the outputs relative to their range. Not a test: the machine is shared.
//   node --experimental-wasm-relaxed-simd bench/web/simd_matmul.mjs [reps] [MxKxN ...]
//       op_matmul (f32 weights): plain against relaxed, and the largest difference between the two
//   node --experimental-wasm-relaxed-simd bench/web/simd_matmul.mjs --q8 [--before DIR] [reps] [MxKxN ...]
//       op_matmul_q8 (int8 weights, a scale per column): the error against a float64 reference; --before DIR adds
//       the modules of the same names in DIR (another commit's build, e.g. `git show REV:web/ditweb-kernels.wasm`),
//       timed in the same turns, and the ratios now / before
// (node 20 has relaxed SIMD behind that flag; Chromium ships it). Default shapes: the shipped model's matmuls at
// one CFG step (2 rows x 64 tokens, hidden 128, MLP 512). Prints a markdown table.
import { readFileSync } from "node:fs";
import { heapAllocator } from "./wasm_heap.mjs";

const argv = process.argv.slice(2);
const q8 = argv.includes("--q8");
const beforeAt = argv.indexOf("--before");
const before = beforeAt >= 0 ? argv[beforeAt + 1] : null;
const args = argv.filter((a, i) => a !== "--q8" && (beforeAt < 0 || (i !== beforeAt && i !== beforeAt + 1)));
const reps = Number(args[0] || 21);
const shapes = (args.length > 1 ? args.slice(1) : ["128x128x384", "128x128x128", "128x128x512", "128x512x128"])
  .map((s) => s.split("x").map(Number));

let seed = 1;
const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };

async function instance(bytes, M, K, N) {
  const x = /** @type {any} */ ((await WebAssembly.instantiate(await WebAssembly.compile(bytes), {})).exports);
  const alloc = heapAllocator(x);
  const params = alloc(64), a = alloc(4 * M * K), bias = alloc(4 * N), dst = alloc(4 * M * N);
  const w = alloc(q8 ? K * N : 4 * K * N), scale = alloc(4 * N);
  const scratch = alloc(4 * (2 * M * K + 8 * (K + 1) + 2 * M + 16));   // enough for either op_matmul_q8's layout
  new Uint32Array(x.memory.buffer, params, 5).set([M, N, K, 1, 1]);   // matmul params: M N K out_group out_stride
  const f = new Float32Array(x.memory.buffer);
  seed = 1;   // every module the same inputs
  for (let i = 0; i < M * K; i++) f[a / 4 + i] = q8 ? (rnd() - 0.5) * 4 * (1 + Math.sin(i / 7)) : Math.sin(i);
  if (q8) {
    const i8 = new Int8Array(x.memory.buffer);
    for (let i = 0; i < K * N; i++) i8[w + i] = Math.round((rnd() * 2 - 1) * 127);
    for (let n = 0; n < N; n++) { f[scale / 4 + n] = 0.01 * (1 + rnd()); f[bias / 4 + n] = rnd() - 0.5; }
  } else {
    for (let i = 0; i < K * N; i++) f[w / 4 + i] = 0.1 * Math.cos(i);
  }
  const out = () => new Float32Array(x.memory.buffer, dst, M * N).slice();
  const reference = () => {   // float64: a . (q * scale) + bias
    const A = new Float32Array(x.memory.buffer, a, M * K), Q = new Int8Array(x.memory.buffer, w, K * N);
    const S = new Float32Array(x.memory.buffer, scale, N), B = new Float32Array(x.memory.buffer, bias, N);
    const r = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[m * K + k] * Q[n * K + k];
        r[m * N + n] = s * S[n] + B[n];
      }
    }
    return r;
  };
  return { run: q8 ? () => x.op_matmul_q8(params, a, w, scale, bias, dst, 0, 0, scratch)
                   : () => x.op_matmul(params, a, w, bias, dst, 0, 0, scratch), out, reference };
}

const median = (v) => [...v].sort((p, q) => p - q)[v.length >> 1];
const file = (dir, name) => readFileSync(dir ? `${dir}/${name}` : new URL(`../../web/${name}`, import.meta.url));
const modules = [["plain", file(null, "ditweb-kernels.wasm")], ["relaxed", file(null, "ditweb-kernels-relaxed.wasm")]];
if (before) modules.unshift(["before plain", file(before, "ditweb-kernels.wasm")], ["before relaxed", file(before, "ditweb-kernels-relaxed.wasm")]);
const rows = [];
for (const [M, K, N] of shapes) {
  const k = [];
  for (const [name, bytes] of modules) k.push({ name, ...(await instance(bytes, M, K, N)), times: [] });
  const inner = Math.max(1, Math.round(2e8 / (2 * M * K * N)));   // ~0.2 GFLOP a sample
  for (let r = 0; r < reps + 2; r++) {
    for (const c of k) {
      const t = performance.now();
      for (let j = 0; j < inner; j++) c.run();
      if (r >= 2) c.times.push((performance.now() - t) / inner);   // two warm-up rounds
    }
  }
  const gf = (ms) => (2 * M * K * N / ms / 1e6).toFixed(1);
  const by = Object.fromEntries(k.map((c) => [c.name, c]));
  if (!q8) {
    const p = by.plain.out(), q = by.relaxed.out();
    let diff = 0, range = 0;
    for (let i = 0; i < p.length; i++) { diff = Math.max(diff, Math.abs(p[i] - q[i])); range = Math.max(range, Math.abs(p[i])); }
    rows.push(`| ${M} x ${K} x ${N} | ${gf(median(by.plain.times))} | ${gf(median(by.relaxed.times))} | `
      + `${(median(by.plain.times) / median(by.relaxed.times)).toFixed(2)}x | ${gf(Math.min(...by.plain.times))} | `
      + `${gf(Math.min(...by.relaxed.times))} | ${(diff / range).toExponential(1)} |`);
    continue;
  }
  const ref = k[0].reference();
  let range = 0;
  for (const v of ref) range = Math.max(range, Math.abs(v));
  const err = (c) => { const o = c.out(); let e = 0; for (let i = 0; i < o.length; i++) e = Math.max(e, Math.abs(o[i] - ref[i])); return (e / range).toExponential(1); };
  const cells = k.map((c) => `${gf(median(c.times))} (${gf(Math.min(...c.times))})`);
  const ratio = (now, then) => `${(median(by[then].times) / median(by[now].times)).toFixed(2)}x`;
  rows.push(`| ${M} x ${K} x ${N} | ${cells.join(" | ")} | ${before ? `${ratio("plain", "before plain")} | ${ratio("relaxed", "before relaxed")} | ` : ""}`
    + `${k.map(err).join(", ")} |`);
}
if (!q8) {
  console.log("| M x K x N | plain GFLOP/s (median) | relaxed GFLOP/s (median) | relaxed / plain | plain best | relaxed best | max diff / range |");
  console.log("|---|---|---|---|---|---|---|");
} else {
  const names = modules.map(([n]) => n);
  console.log(`| M x K x N | ${names.map((n) => `${n} GFLOP/s median (best)`).join(" | ")} | ${before ? "plain now / before | relaxed now / before | " : ""}max err / range vs float64 (${names.join(", ")}) |`);
  console.log(`|---|${names.map(() => "---|").join("")}${before ? "---|---|" : ""}---|`);
}
for (const r of rows) console.log(r);

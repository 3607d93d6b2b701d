// One denoising step (the CFG batch: B = 2N model rows) with our runtime (several bundle
// variants on WebGPU, and the WebAssembly runtime) and with onnxruntime-web's WebGPU and wasm
// execution providers (one thread each) on the ONNX export of the same model. The runtimes are timed in turns (ours A, ours B, ..., ORT, then again), so background
// load on the shared CPU hits all of them alike and the ratios hold even when absolute times drift.
// Each timing runs from submit to onSubmittedWorkDone / session.run resolving; the first run of
// each (pipeline / shader compilation) is reported separately.
import { loadBundle } from "/web/ditweb.js";
import { makeGuide, makePlan, samplerTables, stepUniform } from "/web/schedule.js";
import { heapAllocator } from "./wasm_heap.mjs";

const log = (s) => { document.getElementById("log").textContent += s + "\n"; };
const now = () => performance.now();
const median = (a) => { const s = [...a].sort((p, q) => p - q); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

// Load, warm up with a 2-step CFG sample (allocates the batch, runs every kernel once) and
// return a function that times one more step: the step record sample() would write at i = 12 of 25.
// opts: more loadBundle options (e.g. wasmThreadsRelaxedUrl: another build's kernels, timed in the same turns)
async function prepareOurs(bundleUrl, N, runtime = "webgpu", threads = undefined, simd = undefined, opts = {}) {
  const t0 = now();
  const b = await loadBundle(bundleUrl, { runtime, threads, simd, useCache: false, features: ["timestamp-query"], ...opts });
  const loadMs = now() - t0;
  const t1 = now();
  await b.sample({ classId: 0, seed: 1, steps: 2, cfg: 4.0, n: N });
  const firstMs = (now() - t1) / 2;
  const m = b.manifest;
  const guide = makeGuide({ cfg: 4.0 }, b.classNames);
  const plan = makePlan(guide, Array(N).fill(0), m.model.num_classes);
  const record = stepUniform({ tables: samplerTables(m, 25), i: 12, nDone: 12, steps: 25, seed: 1, K: 1, J: 2, N,
    plan, guide, sampler: "ddim", eta: 0, clipX0: true });
  const dispatches = ["step_begin", "forward", "step_end"].reduce((a, p) => a + m.programs[p].length, 0);
  // WebAssembly: one request to the worker, the time from posting it to its reply (as sample() sees it); the
  // worker's own time for the step (the reply's ms: the kernels alone) goes to stats.kernelTimes
  const kernelTimes = [];
  const step = runtime === "wasm" ? async () => {
    const s = now();
    const r = await b.call("run", { programs: ["step_begin", "forward", "step_end"], record });
    kernelTimes.push(r.ms);
    return now() - s;
  } : async () => {
    const s = now();
    b.runStep(record);
    await b.device.queue.onSubmittedWorkDone();
    return now() - s;
  };
  // a sampling run as the page makes one (sample() with the live preview, as web/favicon.js asks: web/sampling.js keeps
  // the worker AHEAD steps ahead, so the round trips and the page's work on each reply overlap the kernels): its ms
  // per step, from the first step asked to the last reply (the run's set-up and the decoder after it left out)
  const samplingRun = async (steps) => (await b.sample({ classId: 0, seed: 1, steps, cfg: 4.0, n: N, preview: true })).msPerStep;
  return { b, record, step, samplingRun, stats: { loadMs, firstMs, dispatches, adapter: b.adapterDescription,
    threads: b.threads || 1, simd: b.simd || null, times: [], kernelTimes, samplingTimes: [] } };
}

// GPU time of every dispatch of one step (one compute pass each, timestamps at its start and end),
// summed per op of the op table: {op: {ms, count}}.
async function profileStep(b, record) {
  const device = b.device;
  const list = ["step_begin", "forward", "step_end"].flatMap((p) => b.batch.programs[p]);
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 * list.length });
  const resolve = device.createBuffer({ size: 16 * list.length, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16 * list.length, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(b.batch.step, 0, record);
  const enc = device.createCommandEncoder();
  list.forEach((d, i) => {
    const pass = enc.beginComputePass({ label: d.label, timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(...d.workgroups);
    pass.end();
  });
  enc.resolveQuerySet(querySet, 0, 2 * list.length, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * list.length);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const ts = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  const out = {};
  list.forEach((d, i) => {
    const op = d.kernel.op || d.label;
    out[op] = out[op] || { ms: 0, count: 0 };
    out[op].ms += Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
    out[op].count += 1;
  });
  return out;
}

// ORT session on the WebGPU or wasm EP, the CFG batch's inputs, one warm-up run (shader compilation).
// The wasm EP comes from onnxruntime-web's plain wasm build (its own module), as a site without
// WebGPU would load it.
async function prepareOrt(cfg, ep = "webgpu") {
  const ort = await import(ep === "wasm" ? cfg.ortWasmModule : cfg.ortModule);
  ort.env.wasm.numThreads = 1;                 // no cross-origin isolation on a plain local server
  ort.env.wasm.wasmPaths = cfg.ortBase;
  const t0 = now();
  const session = await ort.InferenceSession.create(cfg.onnx, { executionProviders: [ep] });
  const createMs = now() - t0;
  const B = 2 * cfg.N;
  const feeds = {};
  for (const inp of cfg.inputs) {           // [{name, dtype, shape (batch dim = -1), role, null}]
    const shape = inp.shape.map((d) => (d < 0 ? B : d));
    const count = shape.reduce((a, d) => a * d, 1);
    // rows: [null, class 0] as in CFG; a named model's y (B, L): one id per level, null = each level's size
    const L = inp.role === "y" && shape.length > 1 ? shape[1] : 1, nul = [].concat(inp.null);
    const value = (i) => (inp.role === "t" ? 500 : Math.floor(i / L) % 2 ? 0 : nul[i % L]);
    let data;
    if (inp.dtype === "float32") data = Float32Array.from({ length: count }, (_, i) => Math.sin(i * 12.9898) * 0.8);
    else if (inp.dtype === "int64") data = BigInt64Array.from({ length: count }, (_, i) => BigInt(value(i)));
    else data = Int32Array.from({ length: count }, (_, i) => value(i));
    feeds[inp.name] = new ort.Tensor(inp.dtype, data, shape);
  }
  const t1 = now();
  const first = await session.run(feeds);
  const firstMs = now() - t1;
  const step = async () => {
    const s = now();
    await session.run(feeds);
    return now() - s;
  };
  // `steps` forwards back to back (its part of a sampling run: onnxruntime-web's wasm EP runs on the page's thread,
  // there is no round trip to overlap): ms per forward
  const samplingRun = async (steps) => {
    const s = now();
    for (let i = 0; i < steps; i++) await session.run(feeds);
    return (now() - s) / steps;
  };
  return { session, feeds, first, step, samplingRun, stats: { createMs, firstMs, times: [], samplingTimes: [] } };
}

// The same forward through our runtime and ORT: they must agree, or the timing compares different work.
async function agreement(ours, ort, cfg) {
  const names = Object.fromEntries(cfg.inputs.map((i) => [i.role, i.name]));
  const yIn = cfg.inputs.find((i) => i.role === "y");
  const theirs = ort.first[ort.session.outputNames[0]].data;
  const x = ort.feeds[names.x].data, t = Array.from(ort.feeds[names.t].data, Number), y = Array.from(ort.feeds[names.y].data, Number);
  // a named model's ids per level -> the runtimes' label rows (id + the level's first row), straight to forwardRows
  const mine = yIn && yIn.starts ? await ours.b.forwardRows(Float32Array.from(x), Uint32Array.from(t),
    Uint32Array.from(y, (v, i) => v + yIn.starts[i % yIn.starts.length])) : await ours.b.forward(x, t, y);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < mine.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(mine[i] - theirs[i]));
    maxRef = Math.max(maxRef, Math.abs(theirs[i]));
  }
  return { maxDiff, maxRef, outLength: theirs.length, oursLength: mine.length };
}

// cfg: {variants: [{label, bundle}], N, reps, warm (untimed rounds before them), onnx, ortModule, ortBase, inputs}
window.runBench = async (cfg) => {
  document.body.dataset.state = "running";
  const ours = [];
  for (const v of cfg.variants) {
    log(`ditweb ${v.label}: ${v.bundle}`);
    ours.push({ label: v.label, ...(await prepareOurs(v.bundle, cfg.N, v.runtime, v.threads, v.simd, v.opts)) });
  }
  const orts = {}, ortErrors = {};
  for (const ep of cfg.onnx ? (cfg.ortEps || ["webgpu", "wasm"]) : []) {   // cfg.ortEps: a subset, e.g. ["wasm"]
    log(`onnxruntime-web ${ep}: ${cfg.onnx}`);
    try {
      orts[ep] = await prepareOrt(cfg, ep);
    } catch (e) {
      ortErrors[ep] = String((e && e.message) || e);
    }
  }
  for (let r = 0; r < (cfg.warm || 0); r++) {   // untimed rounds first: V8 optimises a wasm function once it has run enough
    for (const o of ours) await o.step();
    for (const ort of Object.values(orts)) await ort.step();
  }
  for (const o of ours) o.stats.kernelTimes.length = 0;
  for (let r = 0; r < cfg.reps; r++) {          // in turns: the same background load for everyone
    for (const o of ours) o.stats.times.push(await o.step());
    for (const ort of Object.values(orts)) ort.stats.times.push(await ort.step());
    log(`round ${r + 1}: ${ours.map((o) => o.stats.times[r].toFixed(1)).join(", ")}, ort ${Object.values(orts).map((o) => o.stats.times[r].toFixed(1)).join(", ")}`);
  }
  // cfg.samplingRuns runs of cfg.samplingSteps steps per WebAssembly variant and onnxruntime-web EP, in turns (after the
  // single steps: every function is optimised by then)
  for (let r = 0; r < (cfg.samplingRuns || 0); r++) {
    for (const o of ours) if (o.b.runtime === "wasm") o.stats.samplingTimes.push(await o.samplingRun(cfg.samplingSteps || 25));
    for (const ort of Object.values(orts)) ort.stats.samplingTimes.push(await ort.samplingRun(cfg.samplingSteps || 25));
    log(`sampling run ${r + 1}: ${[...ours, ...Object.values(orts)].map((o) => (o.stats.samplingTimes[r] || 0).toFixed(2)).join(", ")} ms per step`);
  }
  const out = { ours: {}, ort: {} };
  for (const o of ours) {
    out.ours[o.label] = { ...o.stats, stepMs: median(o.stats.times), runtime: o.b.runtime };
    if (o.b.device && o.b.device.features.has("timestamp-query")) out.ours[o.label].perKernel = await profileStep(o.b, o.record);
  }
  for (const [ep, ort] of Object.entries(orts)) {
    // each EP against the runtime of its kind (same forward: the timing compares the same work)
    const mine = ours.find((o) => o.b.runtime === ep) || ours[0];
    out.ort[ep] = { ...ort.stats, stepMs: median(ort.stats.times), ...(await agreement(mine, ort, cfg)) };
    await ort.session.release();
  }
  for (const [ep, error] of Object.entries(ortErrors)) out.ort[ep] = { error };
  for (const o of ours) o.b.dispose();
  document.body.dataset.state = "done";
  return out;
};
// The single-thread matmul peak of a kernels module (the same .wasm file the worker runs, instantiated on the page
// with its own memory): op_matmul_q8 (int8 weights, a scale per column) at each shape [M, K, N], timed `reps` times
// (~0.2 GFLOP each, after two warm-up samples), in turns across the shapes. cfg: {module, shapes, reps}
// -> [{shape, gflops (median), best}]. Inputs as bench/web/simd_matmul.mjs's.
window.matmulPeak = async (cfg) => {
  const bytes = await (await fetch(cfg.module)).arrayBuffer();
  let seed = 1;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32; };
  const cases = [];
  for (const [M, K, N] of cfg.shapes) {
    const x = (await WebAssembly.instantiate(bytes, {})).instance.exports;
    const alloc = heapAllocator(x);
    const params = alloc(64), a = alloc(4 * M * K), bias = alloc(4 * N), dst = alloc(4 * M * N), w = alloc(K * N), scale = alloc(4 * N);
    const scratch = alloc(4 * (2 * M * K + 8 * (K + 1) + 2 * M + 16));
    new Uint32Array(x.memory.buffer, params, 5).set([M, N, K, 1, 1]);
    const f = new Float32Array(x.memory.buffer), i8 = new Int8Array(x.memory.buffer);
    for (let i = 0; i < M * K; i++) f[a / 4 + i] = (rnd() - 0.5) * 4 * (1 + Math.sin(i / 7));
    for (let i = 0; i < K * N; i++) i8[w + i] = Math.round((rnd() * 2 - 1) * 127);
    for (let n = 0; n < N; n++) { f[scale / 4 + n] = 0.01 * (1 + rnd()); f[bias / 4 + n] = rnd() - 0.5; }
    const inner = Math.max(1, Math.round(2e8 / (2 * M * K * N)));
    cases.push({ shape: [M, K, N], flop: 2 * M * K * N, inner, times: [],
                 run: () => x.op_matmul_q8(params, a, w, scale, bias, dst, 0, 0, scratch) });
  }
  for (let r = 0; r < cfg.reps + 2; r++) {
    for (const c of cases) {
      const t = now();
      for (let j = 0; j < c.inner; j++) c.run();
      if (r >= 2) c.times.push((now() - t) / c.inner);
    }
  }
  return cases.map((c) => ({ shape: c.shape, gflops: c.flop / median(c.times) / 1e6, best: c.flop / Math.min(...c.times) / 1e6 }));
};
// Time to the first favicon, from navigation (performance.now()'s origin) to the last step of a `steps`-step
// sample: the bundle's fetch + verify (loadBundle less the runtime's start), the kernels' fetch + compile,
// the worker's start and weight unpacking, the steps. cfg: {bundle, runtime, threads, simd, steps, useCache}.
window.firstFavicon = async (cfg) => {
  const t0 = now();
  const b = await loadBundle(cfg.bundle, { runtime: cfg.runtime, threads: cfg.threads, simd: cfg.simd, useCache: cfg.useCache });
  const loaded = now();
  const r = await b.sample({ classId: 0, seed: 1, steps: cfg.steps, cfg: 4.0 });
  const end = now();
  const t = b.timings || { compileMs: 0, initMs: 0 };
  // compileMs: the wait for the kernels after the files; kernelsMs: their fetch + compile (alongside the download)
  const out = { navToStart: t0, loadMs: loaded - t0, compileMs: t.compileMs, kernelsMs: t.kernelsMs ?? t.compileMs, initMs: t.initMs,
                fetchVerifyMs: loaded - t0 - t.compileMs - t.initMs, stepsMs: end - loaded, total: end,
                threads: r.threads || 1, simd: r.simd || null, runtime: r.runtime, downloaded: b.stats.downloaded, cached: b.stats.cached };
  b.dispose();
  return out;
};
document.body.dataset.state = "ready";

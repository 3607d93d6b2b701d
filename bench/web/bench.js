// One denoising step (the CFG batch: B = 2N model rows) with our runtime and with
// onnxruntime-web's WebGPU execution provider on the ONNX export of the same model.
// Timed from submit to onSubmittedWorkDone / session.run resolving; the first run of each
// (pipeline / shader compilation) is reported separately from the steady state.
import { loadBundle } from "/web/ditweb.js";

const log = (s) => { document.getElementById("log").textContent += s + "\n"; };
const now = () => performance.now();
const median = (a) => { const s = [...a].sort((p, q) => p - q); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

async function benchOurs(cfg) {
  const t0 = now();
  const b = await loadBundle(cfg.bundle, { useCache: false, features: ["timestamp-query"] });
  const loadMs = now() - t0;
  const m = b.manifest;
  // one full 2-step CFG sampling run: allocates the batch and runs every kernel once (warm-up)
  const t1 = now();
  await b.sample({ classId: 0, seed: 1, steps: 2, cfg: 4.0, n: cfg.N });
  const firstMs = now() - t1;
  // steady state: the same step record replayed (what sample() does per step)
  const times = [];
  const { stepUniform } = await import("/web/schedule.js");
  const { makeGuide, makePlan, samplerTables } = await import("/web/schedule.js");
  const guide = makeGuide({ cfg: 4.0 }, b.classNames);
  const plan = makePlan(guide, Array(cfg.N).fill(0), m.model.num_classes);
  const tables = samplerTables(m, 25);
  const record = stepUniform({ tables, i: 12, nDone: 12, steps: 25, seed: 1, K: 1, J: 2, N: cfg.N, plan, guide,
    sampler: "ddim", eta: 0, clipX0: true });
  for (let r = 0; r < cfg.reps; r++) {
    const s = now();
    b.runStep(record);
    await b.device.queue.onSubmittedWorkDone();
    times.push(now() - s);
  }
  const dispatches = ["step_begin", "forward", "step_end"].reduce((a, p) => a + m.programs[p].length, 0);
  const perKernel = b.device.features.has("timestamp-query") ? await profileStep(b, record) : null;
  const adapter = b.adapterDescription;
  b.dispose();
  return { loadMs, firstMs, stepMs: median(times), times, dispatches, adapter, perKernel };
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
    const ms = Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
    out[op] = out[op] || { ms: 0, count: 0 };
    out[op].ms += ms;
    out[op].count += 1;
  });
  return out;
}

async function benchOrt(cfg) {
  const ort = await import(cfg.ortModule);
  ort.env.wasm.numThreads = 1;                 // no cross-origin isolation on a plain local server
  ort.env.wasm.wasmPaths = cfg.ortBase;
  const t0 = now();
  const session = await ort.InferenceSession.create(cfg.onnx, { executionProviders: ["webgpu"] });
  const createMs = now() - t0;
  const B = 2 * cfg.N;
  const feeds = {};
  for (const inp of cfg.inputs) {           // [{name, dtype, shape (batch dim = -1)}]
    const shape = inp.shape.map((d) => (d < 0 ? B : d));
    const count = shape.reduce((a, d) => a * d, 1);
    let data;
    if (inp.dtype === "float32") data = Float32Array.from({ length: count }, (_, i) => Math.sin(i * 12.9898) * 0.8);
    else if (inp.dtype === "int64") data = BigInt64Array.from({ length: count }, (_, i) => BigInt(inp.role === "t" ? 500 : i % 2 ? 0 : inp.null));
    else data = Int32Array.from({ length: count }, (_, i) => (inp.role === "t" ? 500 : i % 2 ? 0 : inp.null));
    feeds[inp.name] = new ort.Tensor(inp.dtype, data, shape);
  }
  const t1 = now();
  await session.run(feeds);
  const firstMs = now() - t1;
  const times = [];
  for (let r = 0; r < cfg.ortReps; r++) {
    const s = now();
    await session.run(feeds);
    times.push(now() - s);
  }
  // the same forward through our runtime: the two must agree, or the timing compares different work
  const names = Object.fromEntries(cfg.inputs.map((i) => [i.role, i.name]));
  const result = await session.run(feeds);
  const theirs = result[session.outputNames[0]].data;
  const b = await loadBundle(cfg.bundle, { useCache: false });
  const ours = await b.forward(feeds[names.x].data, Array.from(feeds[names.t].data, Number), Array.from(feeds[names.y].data, Number));
  b.dispose();
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < ours.length; i++) { maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i])); maxRef = Math.max(maxRef, Math.abs(theirs[i])); }
  await session.release();
  return { createMs, firstMs, stepMs: median(times), times, maxDiff, maxRef, outLength: theirs.length, oursLength: ours.length };
}

window.runBench = async (cfg) => {
  document.body.dataset.state = "running";
  const out = {};
  log(`ours: ${cfg.bundle}`);
  out.ours = await benchOurs(cfg);
  log(JSON.stringify(out.ours));
  if (cfg.onnx) {
    log(`onnxruntime-web: ${cfg.onnx}`);
    try {
      out.ort = await benchOrt(cfg);
    } catch (e) {
      out.ort = { error: String(e && e.message || e) };
    }
    log(JSON.stringify(out.ort));
  }
  document.body.dataset.state = "done";
  return out;
};
document.body.dataset.state = "ready";

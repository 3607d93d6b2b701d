// Kernel plans in the browser, the twin of runtime_py/tune.py (docs/bundle-format.md, "candidates and
// plans"): a slot is the work of the dispatches that share a kernel and evaluated params at batch
// (B, N); a plan maps slots to candidate kernels ({} = every dispatch's own kernel). tunePlan times
// every candidate of every slot on its real buffers (timestamp queries where the device has them, else
// wall clock around a submitted pass), medians of interleaved rounds, and picks the fastest; plans are
// cached per adapter, bundle and batch in localStorage.

const CACHE_PREFIX = "ditweb-plan:v1:";

export const slotKey = (kernel, values) => `${kernel}|${values.join(",")}`;

// 32-bit FNV-1a twice (two seeds): a short identity of what a plan depends on in the bundle.
function hashText(text) {
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193 ^ 0x2f) >>> 0;
  }
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

export function bundleIdentity(m) {
  const kernels = Object.entries(m.kernels).map(([k, v]) => [k, m.files[v.file].sha256]);
  return hashText(JSON.stringify([kernels, m.candidates || {}, m.programs]));
}

export function cacheKey(adapterDescription, m, B, N) {
  return `${CACHE_PREFIX}${adapterDescription}|${bundleIdentity(m)}|B=${B} N=${N}`;
}

// A plan from an untrusted source (the cache, a caller): {slot: kernel}, each a candidate of its slot.
export function checkPlan(plan, m) {
  if (plan === null || typeof plan !== "object" || Array.isArray(plan)) throw new RangeError("a plan is an object {slot: kernel}");
  const cands = m.candidates || {};
  for (const [slot, k] of Object.entries(plan)) {
    const base = slot.split("|")[0];
    const list = Object.prototype.hasOwnProperty.call(cands, base) ? cands[base] : [base];
    if (typeof k !== "string" || !list.includes(k)) throw new RangeError(`plan: ${JSON.stringify(k).slice(0, 60)} is not a candidate for slot ${slot.slice(0, 80)}`);
  }
  return plan;
}

export function readCachedPlan(key, m) {
  try {
    const raw = globalThis.localStorage ? localStorage.getItem(key) : null;
    return raw ? checkPlan(JSON.parse(raw), m) : null;
  } catch {
    return null;      // damaged or stale: timed again
  }
}

export function writeCachedPlan(key, plan) {
  try { if (globalThis.localStorage) localStorage.setItem(key, JSON.stringify(plan)); } catch { /* storage full or blocked */ }
}

// Seconds per repetition of each item {run: {pipeline, bindGroup, workgroups}, reps}.
async function timeMany(device, items) {
  const encodePass = (encoder, item, desc) => {
    const pass = encoder.beginComputePass(desc);
    for (let r = 0; r < item.reps; r++) {
      pass.setPipeline(item.run.pipeline);
      pass.setBindGroup(0, item.run.bindGroup);
      pass.dispatchWorkgroups(item.run.workgroups[0], item.run.workgroups[1], item.run.workgroups[2]);
    }
    pass.end();
  };
  if (!device.features.has("timestamp-query")) {
    const out = [];
    for (const item of items) {
      const encoder = device.createCommandEncoder();
      encodePass(encoder, item, {});
      const t0 = performance.now();
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
      out.push((performance.now() - t0) / 1000 / item.reps);
    }
    return out;
  }
  const n = items.length;
  const querySet = device.createQuerySet({ type: "timestamp", count: 2 * n });
  const resolve = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  items.forEach((item, i) => encodePass(encoder, item, { timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } }));
  encoder.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
  encoder.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const ts = new BigUint64Array(read.getMappedRange().slice(0));
  read.destroy(); resolve.destroy(); querySet.destroy();
  return items.map((item, i) => Math.max(Number(ts[2 * i + 1] - ts[2 * i]), 0) * 1e-9 / item.reps);
}

const median = (v) => { const s = [...v].sort((a, b) => a - b); const h = s.length >> 1; return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2; };

// {plan, report: {slots: {slot: {kernel: seconds}}, counts, pipelinesMs, timingMs, source}} at batch (B, N).
// The same rounds and drops as runtime_py/tune.py: a warm-up each (sizes the repetitions; a candidate 2x
// slower than the best is out), then up to `repeats` interleaved rounds, dropping those 1.5x slower.
export async function tunePlan(bundle, B, N, { repeats = 3, budgetMs = 3000 } = {}) {
  const t0 = performance.now();
  const m = bundle.manifest;
  bundle.state(B, N, {});
  const slots = {};
  for (const [prog, list] of Object.entries(bundle.batch.programs)) {
    list.forEach((d, i) => {
      const names = (m.candidates || {})[d.kernelName] || [];
      if (names.length < 2) return;
      const key = slotKey(d.kernelName, d.values);
      if (!slots[key]) slots[key] = { prog, i, count: 0, candidates: names };
      slots[key].count += 1;
    });
  }
  await Promise.all([...new Set(Object.values(slots).flatMap((s) => s.candidates))].map((k) => bundle.pipeline(k)));
  const t1 = performance.now();
  const runs = {};
  const pairs = [];
  for (const [key, s] of Object.entries(slots)) {
    runs[key] = {};
    for (const k of s.candidates) { runs[key][k] = bundle.alternative(s.prog, s.i, k); pairs.push([key, k]); }
  }
  const device = bundle.device;
  const warm = await timeMany(device, pairs.map(([key, k]) => ({ run: runs[key][k], reps: 1 })));
  const reps = {}, times = {};
  pairs.forEach(([key, k], j) => { reps[`${key}\n${k}`] = Math.min(8, Math.max(1, Math.floor(2e-3 / Math.max(warm[j], 1e-7)))); times[`${key}\n${k}`] = []; });
  let live = {};
  for (const key of Object.keys(runs)) {
    const w = pairs.map(([k2, k], j) => (k2 === key ? [k, warm[j]] : null)).filter(Boolean);
    const best = Math.min(...w.map(([, t]) => t));
    live[key] = w.filter(([, t]) => t <= 2 * best).map(([k]) => k);
  }
  for (let r = 0; r < repeats; r++) {
    const batch = [];
    for (const [key, names] of Object.entries(live)) names.forEach((_, j) => batch.push([key, names[(j + r) % names.length]]));
    const got = await timeMany(device, batch.map(([key, k]) => ({ run: runs[key][k], reps: reps[`${key}\n${k}`] })));
    batch.forEach(([key, k], j) => times[`${key}\n${k}`].push(got[j]));
    if (r >= 1) {
      const next = {};
      for (const [key, names] of Object.entries(live)) {
        const med = names.map((k) => median(times[`${key}\n${k}`]));
        const best = Math.min(...med);
        const keep = names.filter((_, j) => med[j] <= 1.5 * best);
        if (keep.length > 1) next[key] = keep;
      }
      live = next;
    }
    if (performance.now() - t1 > budgetMs && r >= 2) break;
  }
  const plan = {}, report = {};
  for (const key of Object.keys(runs)) {
    report[key] = {};
    for (const k of Object.keys(runs[key])) {
      const v = times[`${key}\n${k}`];
      report[key][k] = v.length ? median(v) : warm[pairs.findIndex(([a, b]) => a === key && b === k)];
    }
    plan[key] = Object.keys(report[key]).reduce((a, b) => (report[key][b] < report[key][a] ? b : a));
  }
  const counts = Object.fromEntries(Object.entries(slots).map(([k, s]) => [k, s.count]));
  return { plan, report: { slots: report, counts, pipelinesMs: t1 - t0, timingMs: performance.now() - t1,
                           source: device.features.has("timestamp-query") ? "timestamp queries" : "wall clock" } };
}

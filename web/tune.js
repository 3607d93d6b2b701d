// Kernel plans in the browser, the twin of runtime_py/tune.py (docs/bundle-format.md, "candidates and
// plans"): a slot is the work of the dispatches that share a kernel and evaluated params at batch
// (B, N); a plan maps slots to candidate kernels ({} = every dispatch's own kernel). tunePlan times
// every candidate of every slot on its real buffers (timestamp queries where the device has them, else
// wall clock around a submitted pass), interleaved rounds, and picks the fastest; plans are
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

// Seconds per repetition of each item {run: {pipeline, bindGroup, workgroups}, reps, groups?} (groups: a
// smaller grid than run.workgroups).
/** @returns {Promise<number[]>} */
async function timeMany(device, items) {
  const encodePass = (encoder, item, desc) => {
    const pass = encoder.beginComputePass(desc);
    const g = item.groups || item.run.workgroups;
    for (let r = 0; r < item.reps; r++) {
      pass.setPipeline(item.run.pipeline);
      pass.setBindGroup(0, item.run.bindGroup);
      pass.dispatchWorkgroups(g[0], g[1], g[2]);
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

/** @param {number[]} g */
const prod = (g) => g[0] * g[1] * g[2];

// The first `want` (about) workgroups of a dispatch of `groups` as a smaller grid, and the fraction of the
// work it holds: x shrinks first, then y, then z (runtime_py/tune.py part()).
/** @param {number[]} groups @param {number} want @returns {[number[], number]} */
export function part(groups, want) {
  const g = [groups[0], groups[1], groups[2]];
  for (let i = 0; i < 3; i++) {
    const rest = g[i] ? prod(g) / g[i] : 1;
    g[i] = Math.min(g[i], Math.max(1, Math.ceil(want / rest)));
  }
  return [g, prod(g) / Math.max(1, prod(groups))];
}

// [whether the adapter's time grows with a dispatch's workgroups (a CPU adapter), its fixed time per sample]:
// a quarter and the whole of the dispatch with the most workgroups, twice each (runtime_py/tune.py).
/** @returns {Promise<[boolean, number]>} */
async function proportional(device, allRuns) {
  const run = allRuns.reduce((a, b) => (prod(b.workgroups) > prod(a.workgroups) ? b : a));
  const n = prod(run.workgroups);
  if (n < 16) return [false, 0];
  const [q, frac] = part(run.workgroups, Math.floor(n / 4));
  const t = await timeMany(device, [{ run, reps: 1, groups: q }, { run, reps: 1 }, { run, reps: 1, groups: q }, { run, reps: 1 }]);
  const tq = Math.min(t[0], t[2]), tf = Math.min(t[1], t[3]);
  if (tf < 2.5 * tq) return [false, 0];
  const perGroup = (tf - tq) / (n - frac * n);
  return [true, Math.max(0, tq - perGroup * frac * n)];
}

// {plan, report: {slots: {slot: {kernel: seconds}}, counts, pipelinesMs, firstMs, timingMs, source, partial,
// fixedMs}} at batch (B, N). The same steps as runtime_py/tune.py tune(): each slot timed once; one workgroup
// of every candidate after pipeline creation (a driver's compile on first use: firstMs); on an adapter whose
// time grows with the workgroups (CPU adapters) a sample is the first workgroups of a dispatch, less the
// fixed time, scaled to the whole (elsewhere the whole dispatch, repeated to about targetS); a probe of one
// workgroup drops candidates 2x slower than the best (8x at once, else when a second probe agrees; never
// where the probe is mostly the fixed time); then up
// to `repeats` interleaved rounds of samples of about targetS, dropping from the second on those whose
// fastest sample is 1.5x the best's; the pick is the fastest sample (noise on a loaded machine only adds time).
export async function tunePlan(bundle, B, N, { repeats = 3, budgetMs = 300, targetS = 5e-4 } = {}) {
  const t0 = performance.now();
  bundle.state(B, N, {});
  const slots = tunedSlots(bundle);
  await Promise.all([...new Set(Object.values(slots).flatMap((s) => s.candidates))].map((k) => bundle.pipeline(k)));
  const t1 = performance.now();
  const pairs = [];                  // [slot, kernel, run]
  for (const [key, s] of Object.entries(slots)) {
    for (const k of s.candidates) pairs.push([key, k, bundle.alternative(s.prog, s.i, k)]);
  }
  await bundle.checkRuns(pairs.map(([, , run]) => run));   // a candidate the device refuses: one line naming it
  const device = bundle.device;
  await timeMany(device, pairs.map(([, , run]) => ({ run, reps: 1, groups: [1, 1, 1] })));
  const t2 = performance.now();
  const [partial, fixed] = pairs.length ? await proportional(device, pairs.map(([, , run]) => run)) : [false, 0];
  const timed = timer(device, pairs, partial, fixed);
  const { bySlot, est, live } = await probeCandidates(pairs, timed);
  const threads = Math.max(1, Math.min(32, (globalThis.navigator && navigator.hardwareConcurrency) || 1));
  const size = (j) => {
    const total = prod(pairs[j][2].workgroups);
    if (partial) {
      const n = Math.floor(Math.max(targetS, 8 * fixed) * total / Math.max(est[j], 1e-9));
      return Math.min(total, threads * Math.max(1, Math.ceil(n / threads)));
    }
    return Math.min(8, Math.max(1, Math.floor(targetS / Math.max(est[j], 1e-7))));
  };
  await rounds(live, est, timed, size, { repeats, budgetMs, t2 });
  const plan = {}, report = {};
  for (const [key, js] of Object.entries(bySlot)) {
    report[key] = Object.fromEntries(js.map((j) => [pairs[j][1], est[j]]));
    plan[key] = pairs[js.reduce((a, b) => (est[b] < est[a] ? b : a))][1];
  }
  const counts = Object.fromEntries(Object.entries(slots).map(([k, s]) => [k, s.count]));
  return { plan, report: { slots: report, counts, pipelinesMs: t1 - t0, firstMs: t2 - t1, timingMs: performance.now() - t2,
                           source: device.features.has("timestamp-query") ? "timestamp queries" : "wall clock",
                           partial, fixedMs: fixed * 1e3 } };
}

// {slot: {prog, i, count, candidates}}: the slots of the resident batch whose kernel has two or more candidates
// (prog, i: the first dispatch of the slot; count: how many dispatches it stands for).
function tunedSlots(bundle) {
  const cands = bundle.manifest.candidates || {};
  const slots = {};
  for (const [prog, list] of Object.entries(bundle.batch.programs)) {
    list.forEach((d, i) => {
      const names = cands[d.kernelName] || [];
      if (names.length < 2) return;
      const key = slotKey(d.kernelName, d.values);
      if (!slots[key]) slots[key] = { prog, i, count: 0, candidates: names };
      slots[key].count += 1;
    });
  }
  return slots;
}

// timed(items): [seconds of one whole dispatch, the same without subtracting the fixed time] of each [pair index, n]:
// n workgroups (partial) or n repetitions of the whole dispatch.
function timer(device, pairs, partial, fixed) {
  return async (items) => {
    const work = items.map(([j, n]) => {
      const run = pairs[j][2];
      if (!partial) return { run, reps: n, frac: 1 };
      const [groups, frac] = part(run.workgroups, n);
      return { run, reps: 1, groups, frac };
    });
    const got = await timeMany(device, work);
    return got.map((t, i) => [Math.max(t - fixed, 0.05 * t) / work[i].frac, t / work[i].frac]);
  };
}

// The probe of one workgroup; a candidate it finds 2x slower (less the fixed time) than the best (with it) is out,
// at once where 8x slower, else if a second probe (in reverse order) agrees. -> {bySlot: {slot: [pair index]},
// probe, est: each pair's estimate, live: {slot: [pair index]} still in the race (two or more)}.
async function probeCandidates(pairs, timed) {
  const probe = await timed(pairs.map((_, j) => [j, 1]));
  const bySlot = {};
  pairs.forEach(([key], j) => (bySlot[key] = bySlot[key] || []).push(j));
  const bestOf = (key) => Math.min(...bySlot[key].map((j) => probe[j][1]));
  let best = Object.fromEntries(Object.keys(bySlot).map((key) => [key, bestOf(key)]));
  const again = pairs.map((_, j) => j).filter((j) => probe[j][0] > 2 * best[pairs[j][0]] && probe[j][0] <= 8 * best[pairs[j][0]]
                                                    && probe[j][0] >= 0.75 * probe[j][1]).reverse();
  (await timed(again.map((j) => [j, 1]))).forEach(([t, tAll], i) => {
    const j = again[i];
    probe[j] = [Math.min(t, probe[j][0]), Math.min(tAll, probe[j][1])];
  });
  best = Object.fromEntries(Object.keys(bySlot).map((key) => [key, bestOf(key)]));
  const est = probe.map((p) => p[0]);
  const live = {};
  for (const [key, js] of Object.entries(bySlot)) {
    const keep = js.filter((j) => est[j] <= 2 * best[key] || est[j] < 0.75 * probe[j][1]);   // mostly fixed time: kept
    if (keep.length > 1) live[key] = keep;
  }
  return { bySlot, probe, est, live };
}

// Up to `repeats` interleaved rounds (round r starts at candidate r mod n) of samples of size(j); est[j] becomes
// each pair's fastest sample; from the second round on, candidates 1.5x the fastest of their slot drop out.
async function rounds(live, est, timed, size, { repeats, budgetMs, t2 }) {
  const times = est.map(() => []);
  for (let r = 0; r < repeats && Object.keys(live).length; r++) {
    const batch = [];
    for (const js of Object.values(live)) js.forEach((_, i) => batch.push(js[(i + r) % js.length]));
    const got = await timed(batch.map((j) => [j, size(j)]));
    batch.forEach((j, i) => { times[j].push(got[i][0]); est[j] = Math.min(...times[j]); });
    if (r >= 1) {
      const next = {};
      for (const [key, js] of Object.entries(live)) {
        const fastest = Math.min(...js.map((j) => est[j]));
        const keep = js.filter((j) => est[j] <= 1.5 * fastest);
        if (keep.length > 1) next[key] = keep;
      }
      live = next;
    }
    if (performance.now() - t2 > budgetMs && r >= 1) break;
  }
}

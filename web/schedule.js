// CPU-side tables of one sampling run, the twin of ditformat/schedule.py (the respaced sampler tables, bit for
// bit), ditformat/guidance.py (make_plan, scale_at) and ditformat/step.py (the step record, packed by name with
// packStep from bundle-layout.js, generated from ditformat/layout.py).
// Everything is float64 JS numbers, rounded to f32 only when written to the uniform.

import { SCHEMA } from "./bundle-schema.js";
import { STEP_BYTES, STEP_FLAGS, packStep } from "./bundle-layout.js";

const T = 1000;
const SCHEDULES = ["constant", "linear", "interval"];
export const SAMPLERS = ["ddim", "ddpm"];
export const MAX_BRANCHES = SCHEMA.max_branches;          // 8 guidance coefficients in the step uniform

// numpy's round(): half to even (S_i = round(i (T-1) / (N-1)) hits .5 for some N, e.g. N = 7)
function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ln x (x > 0, normal) from IEEE +, -, *, / only: the same bits as ditformat/schedule.py portable_log
// on every engine (Math.log is left to the engine and differs from numpy's log in the last bit).
const SQRT_HALF = 0.7071067811865476;
const LN2_HI = 6.93147180369123816490e-01;
const LN2_LO = 1.90821492927058770002e-10;
const LOG_TERMS = 12;
export function portableLog(x) {
  let m = x, e = 0;
  while (m >= 1) { m *= 0.5; e += 1; }           // exact scaling by powers of two: m in [0.5, 1) (frexp)
  while (m < 0.5) { m *= 2; e -= 1; }
  if (m < SQRT_HALF) { m *= 2; e -= 1; }
  const s = (m - 1.0) / (m + 1.0);
  const z = s * s;
  let r = 2.0 / (2 * LOG_TERMS + 1);
  for (let k = LOG_TERMS - 1; k > 0; k--) r = r * z + 2.0 / (2 * k + 1);
  const lnM = 2.0 * s + s * (z * r);
  return e * LN2_HI + (lnM + e * LN2_LO);
}

// The base betas the manifest's sampler names: linear from beta_start to beta_end (numpy's linspace).
export function scheduleBetas(sampler) {
  if (!sampler || sampler.schedule !== "linear") throw new RangeError(`unknown noise schedule ${JSON.stringify(sampler && sampler.schedule)}`);
  const n = sampler.num_timesteps, start = sampler.beta_start, end = sampler.beta_end;
  const step = (end - start) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? end : i * step + start));
}

// Respaced tables for `steps` sampler steps, computed from the manifest's schedule (manifest.sampler)
// exactly as ditformat/schedule.py sampler_tables: the same float64 bits.
export function samplerTables(manifest, steps) {
  const base = scheduleBetas(manifest.sampler);
  if (base.length !== T) throw new RangeError(`the bundle's schedule has ${base.length} timesteps; this runtime knows ${T}`);
  if (!(Number.isInteger(steps) && steps >= 1 && steps <= T)) throw new RangeError(`steps must be an integer in [1, ${T}], got ${steps}`);
  const baseAbar = [];
  let prod = 1.0;
  for (const beta of base) { prod *= 1.0 - beta; baseAbar.push(prod); }      // np.cumprod, same order
  const t = steps === 1 ? [T - 1] : Array.from({ length: steps }, (_, i) => roundHalfEven((i * (T - 1)) / (steps - 1)));
  const abar = t.map((s) => baseAbar[s]);
  const abarPrev = [1.0, ...abar.slice(0, -1)];
  const betas = abar.map((a, i) => 1.0 - a / abarPrev[i]);
  const postVar = betas.map((b, i) => (b * (1.0 - abarPrev[i])) / (1.0 - abar[i]));
  const logPostVar = steps > 1 ? [postVar[1], ...postVar.slice(1)].map(portableLog) : postVar.map((v) => portableLog(Math.max(v, 1e-20)));
  return {
    t,
    abar,
    abar_prev: abarPrev,
    sqrt_abar: abar.map(Math.sqrt),
    sqrt_1m_abar: abar.map((a) => Math.sqrt(1.0 - a)),
    coef1: betas.map((b, i) => (b * Math.sqrt(abarPrev[i])) / (1.0 - abar[i])),
    coef2: betas.map((b, i) => ((1.0 - abarPrev[i]) * Math.sqrt(1.0 - b)) / (1.0 - abar[i])),
    log_beta: betas.map(portableLog),
    log_post_var: logPostVar,
  };
}

// The guide of a sample() call, checked like Guide.validate; class names or ids accepted.
// A class name (case-insensitive) or id -> a checked id (as resolve_class in ditweb/sample.py).
export function resolveClass(v, classNames, what = "class") {
  if (typeof v === "string" && !/^\d+$/.test(v)) {
    const i = classNames.findIndex((n) => n.toLowerCase() === v.toLowerCase());
    if (i < 0) throw new RangeError(`${what}: unknown class ${JSON.stringify(v)}; known classes: ${classNames.join(", ")}`);
    return i;
  }
  const id = Number(v);
  if (!Number.isInteger(id) || id < 0 || id >= classNames.length) throw new RangeError(`${what}: class id ${v} is out of range [0, ${classNames.length})`);
  return id;
}

// pick(v, what): how a label is read (a named bundle: prompts and per-level ids, sampling.js); default: class ids
// and names of classNames.
export function makeGuide(opts, classNames, pick = null) {
  const classId = pick || ((v, what) => resolveClass(v, classNames, what));
  const guide = {
    scale: opts.cfg ?? 4.0,
    negativeClass: opts.negativeClass == null ? null : classId(opts.negativeClass, "negativeClass"),
    compose: (opts.compose || []).map(([c, w], k) => [classId(c, `compose[${k}]`), Number(w)]),
    schedule: opts.schedule || "constant",
    scaleEnd: opts.cfgEnd ?? null,
    interval: opts.interval || [0, 999],
    batchK: opts.batchEstimate ? opts.batchEstimate.k : 1,
    batchTau: opts.batchEstimate ? opts.batchEstimate.tau : 0.0,
  };
  if (!Number.isFinite(guide.scale)) throw new RangeError(`cfg must be a number, got ${opts.cfg}`);
  if (!SCHEDULES.includes(guide.schedule)) throw new RangeError(`unknown guidance schedule ${JSON.stringify(guide.schedule)}; choose one of ${SCHEDULES.join(", ")}`);
  if (guide.schedule === "linear" && guide.scaleEnd == null) throw new RangeError("the linear guidance schedule needs cfgEnd");
  const [lo, hi] = guide.interval;
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo <= hi && hi <= 999)) {
    throw new RangeError(`guidance interval must satisfy 0 <= lo <= hi <= 999, got ${lo}..${hi}`);
  }
  if (!(Number.isInteger(guide.batchK) && guide.batchK >= 1 && guide.batchTau >= 0)) throw new RangeError("batchEstimate needs k >= 1 (integer) and tau >= 0");
  if (guide.negativeClass !== null && guide.compose.length) throw new RangeError("use either a negative class or a composition, not both");
  if (guide.compose.length + 1 > MAX_BRANCHES) throw new RangeError(`a composition takes at most ${MAX_BRANCHES - 1} classes`);
  guide.copies = guide.batchTau > 0 ? guide.batchK : 1;   // K only matters with a perturbation
  return guide;
}

// s_i at step nDone (0 = first, noisiest) calling the model at original t
export function scaleAt(guide, nDone, steps, t) {
  if (guide.schedule === "linear") return guide.scale + (guide.scaleEnd - guide.scale) * (nDone / Math.max(steps - 1, 1));
  if (guide.schedule === "interval") return guide.interval[0] <= t && t <= guide.interval[1] ? guide.scale : 1.0;
  return guide.scale;
}

// make_plan: J label branches (each N labels), a_j = base_j + slope_j * s, var_branch. nullLabel: num_classes, or
// for a named bundle the level sizes (every level left out); labels are then arrays of per-level ids.
export function makePlan(guide, classIds, nullLabel) {
  const nul = classIds.map(() => nullLabel);
  if (guide.compose.length) {
    const w = guide.compose.map(([, wt]) => wt);
    return {
      labels: [nul, ...guide.compose.map(([c]) => classIds.map(() => c))],
      base: [1.0, ...w.map(() => 0.0)],
      slope: [-w.reduce((a, b) => a + b, 0), ...w],
      varBranch: 1,
    };
  }
  if (guide.negativeClass !== null) {
    return { labels: [classIds.map(() => guide.negativeClass), [...classIds]], base: [1.0, 0.0], slope: [-1.0, 1.0], varBranch: 1 };
  }
  if (guide.schedule === "constant" && guide.scale === 1.0) return { labels: [[...classIds]], base: [1.0], slope: [0.0], varBranch: 0 };
  return { labels: [nul, [...classIds]], base: [1.0, 0.0], slope: [-1.0, 1.0], varBranch: 1 };
}

// DDIM sigma_i = eta sqrt((1 - abar_prev)/(1 - abar)) sqrt(1 - abar/abar_prev)
function ddimSigma(tables, i, eta) {
  const a = tables.abar[i], ap = tables.abar_prev[i];
  return eta * Math.sqrt((1 - ap) / (1 - a)) * Math.sqrt(1 - a / ap);
}

export const STEP_UNIFORM_BYTES = STEP_BYTES;    // 128

// The 128-byte step uniform (docs/bundle-format.md, "The step uniform").
// i = null writes the init record (t = 0, i = 0, no tables).
// prediction: the manifest's sampler.prediction, "eps" or "v" (flag 8: the output is v).
export function stepUniform({ tables, i, nDone, steps, seed, K, J, N, plan, guide, sampler, eta, clipX0, prediction = "eps" }) {
  // zero stays 0: the runtime zero that keeps the RNG free of FMA contraction
  const common = { seed: seed >>> 0, K, J, N, var_branch: plan.varBranch };
  if (i === null) return packStep(common);
  const t = tables.t[i];
  const ddpm = sampler === "ddpm";
  const sigma = ddpm ? 0.0 : ddimSigma(tables, i, eta);
  const s = scaleAt(guide, nDone, steps, t);
  return packStep({
    ...common,
    t,
    i,
    flags: (clipX0 ? STEP_FLAGS.clip : 0) | (ddpm ? STEP_FLAGS.ddpm : 0) | (i > 0 && (ddpm || sigma > 0) ? STEP_FLAGS.noise : 0)
      | (prediction === "v" ? STEP_FLAGS.v : 0),
    sqrt_abar: tables.sqrt_abar[i],
    sqrt_1m_abar: tables.sqrt_1m_abar[i],
    coef1: tables.coef1[i],
    coef2: tables.coef2[i],
    log_beta: tables.log_beta[i],
    log_post_var: tables.log_post_var[i],
    sqrt_abar_prev: Math.sqrt(tables.abar_prev[i]),
    ddim_dir: Math.sqrt(Math.max(1 - tables.abar_prev[i] - sigma * sigma, 0)),
    sigma,
    perturb: guide.batchTau * Math.sqrt(1 - tables.abar[i]),
    coef: plan.base.map((b, j) => b + plan.slope[j] * s),
  });
}

// The y_in words of a run: for each label of the plan in [k][j][n] order, its label_embed table rows (a class id;
// a named bundle's label: level l's id + starts[l], L words).
export function labelRows(plan, K, N, starts = [0]) {
  const J = plan.labels.length, L = starts.length;
  const y = new Uint32Array(K * J * N * L);
  for (let k = 0; k < K; k++) {
    for (let j = 0; j < J; j++) {
      for (let n = 0; n < N; n++) {
        const label = plan.labels[j][n], at = ((k * J + j) * N + n) * L;
        for (let l = 0; l < L; l++) y[at + l] = (Array.isArray(label) ? label[l] : label) + starts[l];
      }
    }
  }
  return y;
}

// The first table row of each label level (level l: sum of (n_k + 1) over k < l); [0] for a one-level bundle.
export function labelStarts(levels) {
  const starts = [0];
  for (let l = 1; l < levels.length; l++) starts.push(starts[l - 1] + levels[l - 1] + 1);
  return starts;
}

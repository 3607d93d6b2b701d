// Where the WebAssembly step's time goes: the engine of web/wasm-runtime.js in node, one thread, a bundle's
// step_begin + forward + step_end programs run `reps` times with every dispatch timed on its own (the median per
// dispatch over the reps), then the same programs untimed (the whole step). Driven by bench/web/wasm_profile.py,
// which formats the table; reads one JSON request on stdin: {bundle, simd: "plain" | "relaxed", reps, n, modules?}
// (modules: a folder of wasm/build.sh output to time instead of web/'s).
// Prints {ops: [{label, op, ms, flop}], stepMs: [...], B, N}; flop: a matmul's 2 M K N, attention's 4 B H T_q T_kv HD
// (QK^T and PV), else 0.
import { readFileSync } from "node:fs";
import { labelLevels } from "../../web/bundle.js";
import { named } from "../../web/wasm-runtime.js";
import { engineFor } from "../../tests/_wasm_engine.mjs";
import { evaluate } from "../../web/forms.js";
import { labelRows, labelStarts, makeGuide, makePlan, samplerTables, stepUniform } from "../../web/schedule.js";

const req = JSON.parse(readFileSync(0, "utf-8"));
const moduleFile = `ditweb-kernels${req.simd === "relaxed" ? "-relaxed" : ""}.wasm`;   // req.modules: another build's folder
const wasm = readFileSync(req.modules ? `${req.modules}/${moduleFile}` : new URL(`../../web/${moduleFile}`, import.meta.url));
const e = await engineFor(req.bundle, wasm);
const m = e.manifest;
const levels = labelLevels(m);
const nullLabel = levels ? levels.map((l) => l.size) : null;   // a named bundle: every level's null row
const classIds = Array.from({ length: req.n }, () => (nullLabel ? nullLabel.map(() => 0) : 0));
const guide = makeGuide({ cfg: 4.0 }, m.class_names, nullLabel ? (v) => v : null);
const plan = makePlan(guide, classIds, nullLabel || m.model.num_classes);
const N = req.n, K = guide.copies, J = plan.labels.length, B = K * J * N, steps = 25;
const common = { tables: samplerTables(m, steps), steps, seed: 0, K, J, N, plan, guide, sampler: "ddim", eta: 0,
                 clipX0: true, prediction: m.sampler.prediction };
const batch = e.state(B, N);
e.write(m.io.y, labelRows(plan, K, N, labelStarts(levels)));
e.writeStep(stepUniform({ ...common, i: null, nDone: 0 }));
e.run(["init"]);
const names = ["step_begin", "forward", "step_end"];
const fnName = new Map(Object.entries(e.x).filter(([, f]) => typeof f === "function").map(([k, f]) => [f, k.replace(/^op_/, "")]));
const dispatches = names.flatMap((p) => batch.programs[p]);
const times = dispatches.map(() => []);
const stepMs = [];
for (let r = 0; r < req.reps; r++) {
  const i = steps - 1 - (r % steps);
  e.writeStep(stepUniform({ ...common, i, nDone: steps - 1 - i }));
  dispatches.forEach((d, k) => {
    const t0 = performance.now();
    d.fn(...d.args);
    times[k].push(performance.now() - t0);
  });
  const t0 = performance.now();
  e.run(names);
  stepMs.push(performance.now() - t0);
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const params = names.flatMap((prog) => m.programs[prog].map((d) => named(m.kernels[d.kernel], d.params.map((f) => evaluate(f, B, N)))));
function flop(op, p, kernel) {
  if (op.startsWith("matmul")) return 2 * p.M * p.K * p.N;
  if (op.startsWith("attention")) return 4 * p.batch * p.H * p.T_q * p.T_kv * kernel.variant.head_dim;
  return 0;
}
const kernels = names.flatMap((prog) => m.programs[prog].map((d) => m.kernels[d.kernel]));
const ops = dispatches.map((d, k) => {
  const op = fnName.get(d.fn) || "?";
  return { label: d.label, op, ms: median(times[k]), flop: flop(op, params[k], kernels[k]) };
});
process.stdout.write(JSON.stringify({ ops, stepMs, B, N }));

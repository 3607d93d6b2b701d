// The WebAssembly engine (web/wasm-runtime.js + web/ditweb-kernels.wasm) run by node for
// tests/test_wasm.py: reads one JSON request on stdin, prints one JSON reply.
//   {cmd: "noise", seed, stream, step, count}                  -> {x}   op_rng_normal through the engine
//   {cmd: "forward", bundle, x, t, y}                           -> {out} the bundle's forward program (y: ids, or
//                                                                  a named bundle's per-level id arrays)
//   {cmd: "sample", bundle, opts}                               -> {x}   a whole guided run, as WasmBundle.sample
//                                                                  (opts.nullLabel: a named bundle's level sizes)
//   {cmd: "decode", bundle, latents, n}                          -> {image, preview} a latent bundle's decoder/ (verified
//                                                                  as the page does) on the WebAssembly kernels, and its
//                                                                  preview map's image of the same latents
//   {cmd: "simd"}                                              -> {probe, relaxed, plain} checkRelaxedSimd() (the page's
//                                                                  feature test) and whether node validates each module
//   {cmd: "decoder-problem", bundle, kernel}                    -> {problem, error, topBefore, topAfter} decoder/ with one
//                                                                  more kernel ({op, variant}): wasmDecoderProblem's line,
//                                                                  WasmDecoder.create's error, the allocator before and after
// Every request may name simd: "relaxed" (the relaxed SIMD kernels). An exception becomes {error: "Name: message"}.
import { readFileSync } from "node:fs";
import { labelLevels } from "../web/bundle.js";
import { engineFor as bundleEngine } from "./_wasm_engine.mjs";
import { WasmEngine } from "../web/wasm-runtime.js";
import { checkRelaxedSimd } from "../web/wasm-bundle.js";
import { WasmDecoder, wasmDecoderProblem } from "../web/wasm-decode.js";
import { previewMap, previewPictures, verifyDecoderFiles, verifyDecoderManifest } from "../web/decode.js";
import { labelRows, labelStarts, makeGuide, makePlan, samplerTables, stepUniform } from "../web/schedule.js";

const req = JSON.parse(readFileSync(0, "utf-8"));
// req.simd "relaxed": ditweb-kernels-relaxed.wasm (node 20 needs --experimental-wasm-relaxed-simd)
const WASM = readFileSync(new URL(req.simd === "relaxed" ? "../web/ditweb-kernels-relaxed.wasm" : "../web/ditweb-kernels.wasm",
                                  import.meta.url));

const engineFor = (dir) => bundleEngine(dir, WASM);

// decoder/ of a bundle folder, verified as fetchDecoder does (sha256 aside: tests/test_fuzz_bundles.py covers it)
function decoderFor(dir, xShape) {
  const m = JSON.parse(readFileSync(`${dir}/decoder/manifest.json`, "utf-8"));
  verifyDecoderManifest(m, xShape);
  const files = {};
  for (const f of Object.keys(m.files)) {
    const raw = readFileSync(`${dir}/decoder/${f}`);
    files[f] = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
  }
  return { manifest: m, ...verifyDecoderFiles(m, files) };
}

let reply;
try {
if (req.cmd === "noise") {
  // a one-dispatch program: rng_normal over `count` elements with the step record's seed and i
  const manifest = {
    kernels: { rng: { op: "rng_normal", variant: {}, params: ["count", "stream", "use_step"] } },
    buffers: { step: { kind: "step", bytes: 128 }, dst: { kind: "activation", dtype: "f32", elements: [0, 0, req.count] } },
    programs: { p: [{ kernel: "rng", label: "rng", bindings: ["step", "dst"], params: [[0, 0, req.count], [0, 0, req.stream], [0, 0, 1]] }] },
  };
  const e = await WasmEngine.create(WASM, manifest, {});
  e.state(1, 1);
  const record = new Uint32Array(32);
  record[1] = req.step; record[2] = req.seed;
  e.writeStep(record.buffer);
  e.run(["p"]);
  reply = { x: Array.from(e.read("dst", req.count)) };
} else if (req.cmd === "forward") {
  const e = await engineFor(req.bundle);
  const io = e.manifest.io;
  e.state(req.t.length, req.t.length);
  e.write(io.x, Float32Array.from(req.x));
  e.write(io.t, Uint32Array.from(req.t));
  e.write(io.y, labelRows({ labels: [req.y] }, 1, req.t.length, labelStarts(labelLevels(e.manifest))));
  e.run(["forward"]);
  reply = { out: Array.from(e.read(io.out, req.t.length * io.out_shape.reduce((a, b) => a * b, 1))) };
} else if (req.cmd === "sample") {
  // the run WasmBundle.sampleOnce makes in the worker, with the page's step records (schedule.js)
  const e = await engineFor(req.bundle);
  const m = e.manifest, o = req.opts;
  const guide = makeGuide(o, m.class_names, o.nullLabel ? (v) => v : null);   // a named bundle: per-level id arrays
  const plan = makePlan(guide, o.classIds, o.nullLabel || m.model.num_classes);
  const N = o.classIds.length, K = guide.copies, J = plan.labels.length;
  const y = labelRows(plan, K, N, labelStarts(labelLevels(m)));
  const common = { tables: samplerTables(m, o.steps), steps: o.steps, seed: o.seed, K, J, N, plan, guide,
                   sampler: o.sampler || "ddim", eta: o.eta ?? 0, clipX0: true, prediction: m.sampler.prediction };
  e.state(K * J * N, N);
  e.write(m.io.y, y);
  e.writeStep(stepUniform({ ...common, i: null, nDone: 0 }));
  e.run(["init"]);
  for (let nDone = 0; nDone < o.steps; nDone++) {
    e.writeStep(stepUniform({ ...common, i: o.steps - 1 - nDone, nDone }));
    e.run(["step_begin", "forward", "step_end"]);
  }
  reply = { x: Array.from(e.read(m.io.sample, N * m.io.x_shape.reduce((a, b) => a * b, 1))) };
} else if (req.cmd === "decode") {
  const e = await engineFor(req.bundle);
  const dec = decoderFor(req.bundle, e.manifest.io.x_shape);
  const d = WasmDecoder.create(e, dec.manifest, dec.tensors);
  e.state(1, 1);                                   // a batch above the decoder's buffers, as a sampling run has
  const latents = Float32Array.from(req.latents);
  const pv = previewMap(dec.manifest, dec.tensors);
  reply = { image: Array.from(d.decode(latents, req.n).image), preview: pv ? Array.from(previewPictures(pv, latents).image) : null };
} else if (req.cmd === "simd") {
  const file = (name) => readFileSync(new URL(`../web/${name}`, import.meta.url));
  reply = { probe: checkRelaxedSimd(), relaxed: WebAssembly.validate(file("ditweb-kernels-relaxed.wasm")),
            plain: WebAssembly.validate(file("ditweb-kernels.wasm")) };
} else if (req.cmd === "decoder-problem") {
  const e = await engineFor(req.bundle);
  const dec = decoderFor(req.bundle, e.manifest.io.x_shape);
  const m = { ...dec.manifest, kernels: { ...dec.manifest.kernels, extra: { ...req.kernel, params: [], bindings: [] } } };
  const topBefore = e.top;
  let error = null;
  try { WasmDecoder.create(e, m, dec.tensors); } catch (err) { error = err.message; }
  reply = { problem: wasmDecoderProblem(m), error, topBefore, topAfter: e.top };
}
} catch (e) {
  reply = { error: `${e.name}: ${e.message}` };   // what the worker would send the page
}
process.stdout.write(JSON.stringify(reply));

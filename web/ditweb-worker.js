// ditweb-worker.js: the WebAssembly runtime in a Web Worker, so that a sampling run never blocks the
// page. The page (wasm-bundle.js, WasmBundle) sends one request per step; each reply carries the time the
// kernels took. Requests: {id, cmd, ...}; replies: {id, result} or {id, error: {name, message}}.
//   init    {module, manifest, tensors, threads, decoder, batch}   compile and unpack the weights (tensors: {buffer: {buf,
//           offset, nbytes}}); threads > 1: module is ditweb-kernels-mt.wasm and a pool of threads - 1 more workers
//           shares matmul and attention (wasm-threads.js); decoder: a latent bundle's verified decoder/ {manifest,
//           tensors} (wasm-decode.js), its weights unpacked too; batch: [B, N], set up after the reply
//           -> {memoryBytes, threads, unpack}
//   state   {B, N, y}                                batch buffers; y: the label of every row
//   run     {programs, record, read}                 step record -> programs in order; read: a buffer to return
//   forward {x, t, y}                                a plain forward pass -> out
//   decode  {latents, N}                             a latent bundle's decoder on N latents -> {image, ms}
import { WasmDecoder } from "./wasm-decode.js";
import { WasmEngine } from "./wasm-runtime.js";
// what those two import, named here as well: all five are asked for at once, not level by level as the imports are found
import "./bundle-layout.js";
import "./forms.js";
import "./wasm-threads.js";

/** @type {WasmEngine} */
let engine = null;
/** @type {WasmDecoder | null} */
let decoder = null;
/** @type {any} the worker's global scope (the DOM typings describe a window) */
const scope = self;
const epochMs = () => performance.timeOrigin + performance.now();   // a clock the page can read too


const handlers = {
  async init({ module, manifest, tensors, threads = 1, decoder: dec = null, batch = null }) {
    engine = await WasmEngine.create(module, manifest, tensors, { threads });
    decoder = dec ? WasmDecoder.create(engine, dec.manifest, dec.tensors) : null;
    // batch [B, N]: the batch the page will most likely ask for first, set up once this reply is sent, while the page
    // prepares its run (a later state call for it finds it ready; another batch replaces it; a failure is the state
    // call's to report)
    if (batch) setTimeout(() => { try { engine.state(batch[0], batch[1]); } catch { /* reported by state */ } }, 0);
    return { memoryBytes: engine.memory.buffer.byteLength, threads: engine.threads, threadsError: engine.threadsError,
             unpack: engine.unpack };   // when the weights were unpacked (WasmEngine.create), apart from the instantiation
  },
  state({ B, N, y }) {
    engine.state(B, N);
    if (y) engine.write(engine.manifest.io.y, y);
    return null;
  },
  run({ programs, record, read, check }) {
    const started = performance.now();
    if (record) engine.writeStep(record);
    engine.run(programs);
    const ms = performance.now() - started;
    return { ms, x: read ? engine.read(read.name, read.count) : null, out: check ? engine.read(check.name, check.count) : null };
  },
  forward({ x, t, y }) {
    const io = engine.manifest.io;
    engine.state(t.length, t.length);
    engine.write(io.x, x);
    engine.write(io.t, t);
    engine.write(io.y, y);
    engine.run(["forward"]);
    return engine.read(io.out, t.length * io.out_shape.reduce((a, b) => a * b, 1));
  },
  decode({ latents, N }) {
    if (!decoder) throw new Error("this bundle has no decoder");
    return decoder.decode(latents, N);
  },
};

scope.onmessage = async ({ data }) => {
  try {
    const result = await handlers[data.cmd](data);
    const transfer = result && result.x ? [result.x.buffer] : result && result.image ? [result.image.buffer]
      : result instanceof Float32Array ? [result.buffer] : [];
    scope.postMessage({ id: data.id, result }, transfer);
  } catch (e) {
    scope.postMessage({ id: data.id, error: { name: e.name || "Error", message: e.message || String(e) } });
  }
};
// the page hears when this worker's modules have loaded (wasm-bundle.js: the breakdown of the first favicon)
scope.postMessage({ up: epochMs() });

// ditweb-thread.js: one thread of the WebAssembly pool (wasm-threads.js). Instantiates the shared-memory module
// over the engine's memory with its own stack, says it is ready, then runs shares of split dispatches until told
// to stop. Message: {module, memory, stackTop, control, part, parts}.
import { threadLoop } from "./wasm-threads.js";

/** @type {any} the worker's global scope */
const scope = self;

scope.onmessage = async ({ data }) => {
  const { module, memory, stackTop, control, part, parts } = data;
  let exports;
  try {
    /** @type {WebAssembly.Module} */
    const compiled = module;   // a compiled module: instantiate gives an Instance
    const instance = await WebAssembly.instantiate(compiled, { env: { memory } });
    exports = /** @type {any} */ (instance.exports);
    exports.__stack_pointer.value = stackTop;
  } catch (e) {
    scope.postMessage({ error: e.message || String(e) });
    return;
  }
  threadLoop(exports, memory, control, part, parts, () => scope.postMessage({ ready: true }));
};

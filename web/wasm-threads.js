// wasm-threads.js: a pool of threads for the WebAssembly kernels (ditweb-kernels-mt.wasm, the same kernels.c
// built with a shared memory). The engine (wasm-runtime.js) runs in one worker; this adds threads - 1 workers
// (ditweb-thread.js), each with its own instance of the module over the same WebAssembly.Memory and its own
// stack. A split dispatch (matmul, matmul_q8, attention: op_<name>_part) is handed out through a control block
// in that memory: the engine writes the function and its arguments, bumps a generation counter and wakes the
// threads (Atomics.notify); every thread computes share `part` of `parts` (whole blocks of output rows, each
// output's sum in the same order as on one thread, so the image is the same bits for any count), the engine
// does share 0 and waits until the others report. Needs a cross-origin isolated page (SharedArrayBuffer).

// control block, i32 slots: generation, function (-1: stop), argument count, done count, the first failed thread
// (its part; 0: none), arguments
const GEN = 0, FN = 1, NARGS = 2, DONE = 3, FAILED = 4, ARGS = 5, MAX_ARGS = 12;
export const CONTROL_BYTES = 4 * (ARGS + MAX_ARGS);
export const STACK_BYTES = 65536;   // each thread's stack (wasm/build.sh: -z stack-size)
// Loads of a control slot before sleeping on it (Atomics.wait): the dispatches of a step follow each other within
// tens to hundreds of microseconds, and a futex wake-up costs about as much, twice per split dispatch; a short
// spin (some tens of microseconds) catches most hand-overs awake. Bounded, so an idle pool sleeps.
const SPIN = 50000;

/** Whether ctl[slot] moves off `value` within SPIN loads. */
function spinWhile(ctl, slot, value) {
  for (let i = 0; i < SPIN; i++) if (Atomics.load(ctl, slot) !== value) return true;
  return false;
}

// the split functions, by index in the control block
export const PART_FUNCTIONS = ["op_matmul_part", "op_matmul_q8_part", "op_attention_part"];

/** Whether this context can run threads: a shared memory and Atomics.wait need cross-origin isolation. */
export function threadsAvailable() {
  const g = /** @type {any} */ (globalThis);
  return typeof SharedArrayBuffer === "function" && g.crossOriginIsolated === true;
}

export class ThreadPool {
  // module: the compiled mt module; memory: the shared WebAssembly.Memory; exports: the engine's instance;
  // control: byte offset of the control block; stacks: byte offsets of threads - 1 stack tops.
  static async create(module, memory, exports, threads, control, stacks, workerUrl) {
    const pool = new ThreadPool(memory, exports, threads, control);
    try {
      await Promise.all(stacks.map((stackTop, i) => pool.spawn(module, stackTop, i + 1, workerUrl)));
    } catch (e) {
      pool.dispose();
      throw e;
    }
    return pool;
  }

  constructor(memory, exports, threads, control) {
    this.memory = memory;
    this.threads = threads;
    this.ctl = new Int32Array(memory.buffer, control, ARGS + MAX_ARGS);
    this.fns = PART_FUNCTIONS.map((name) => exports[name]);
    /** @type {Worker[]} */
    this.workers = [];
  }

  spawn(module, stackTop, part, workerUrl) {
    const w = new Worker(workerUrl || new URL("./ditweb-thread.js", import.meta.url), { type: "module", name: `ditweb-thread-${part}` });
    this.workers.push(w);
    return new Promise((resolve, reject) => {
      w.onmessage = ({ data }) => (data.error ? reject(new Error(`thread ${part}: ${data.error}`)) : resolve(null));
      w.onerror = (ev) => reject(new Error(`thread ${part} could not start: ${ev.message || "error"}`));
      w.postMessage({ module, memory: this.memory, stackTop, control: this.ctl.byteOffset, part, parts: this.threads });
    });
  }

  // run function `index` of PART_FUNCTIONS with args on every thread, share 0 here; returns when all are done
  parallel(index, args) {
    const ctl = this.ctl, others = this.threads - 1;
    ctl[FN] = index;
    ctl[NARGS] = args.length;
    for (let i = 0; i < args.length; i++) ctl[ARGS + i] = args[i];
    Atomics.store(ctl, DONE, 0);
    Atomics.add(ctl, GEN, 1);
    Atomics.notify(ctl, GEN);
    this.fns[index](...args, 0, this.threads);
    for (let d = Atomics.load(ctl, DONE); d !== others; d = Atomics.load(ctl, DONE)) {
      if (!spinWhile(ctl, DONE, d)) Atomics.wait(ctl, DONE, d, 1000);
    }
    const failed = Atomics.load(ctl, FAILED);
    if (failed) throw new Error(`WebAssembly thread ${failed} failed in ${PART_FUNCTIONS[index]}`);
  }

  dispose() {
    if (!this.workers.length) return;
    Atomics.store(this.ctl, FN, -1);
    Atomics.add(this.ctl, GEN, 1);
    Atomics.notify(this.ctl, GEN);
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}

/** The thread side (ditweb-thread.js): wait for a generation, run the share, report; until FN is -1.
 * ready() is called once the current generation is read (the engine hands out work only after every ready). */
export function threadLoop(exports, memory, control, part, parts, ready) {
  const ctl = new Int32Array(memory.buffer, control, ARGS + MAX_ARGS);
  const fns = PART_FUNCTIONS.map((name) => exports[name]);
  let seen = Atomics.load(ctl, GEN);
  ready();
  for (;;) {
    if (!spinWhile(ctl, GEN, seen)) Atomics.wait(ctl, GEN, seen);
    const gen = Atomics.load(ctl, GEN);
    if (gen === seen) continue;
    seen = gen;
    const fn = Atomics.load(ctl, FN);
    if (fn < 0) return;
    const n = ctl[NARGS], args = new Array(n);
    for (let i = 0; i < n; i++) args[i] = ctl[ARGS + i];
    try {
      fns[fn](...args, part, parts);
    } catch (e) {
      Atomics.compareExchange(ctl, FAILED, 0, part);   // reported by the engine; this thread keeps serving
    }
    if (Atomics.add(ctl, DONE, 1) === parts - 2) Atomics.notify(ctl, DONE);
  }
}

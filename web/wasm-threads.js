// wasm-threads.js: a pool of threads for the WebAssembly kernels (ditweb-kernels-mt.wasm, the same kernels.c
// built with a shared memory). The engine (wasm-runtime.js) runs in one worker; this adds threads - 1 workers
// (ditweb-thread.js), each with its own instance of the module over the same WebAssembly.Memory and its own
// stack. A split dispatch (matmul, matmul_q8, attention: op_<name>_part) is handed out through a control block
// in that memory: the engine writes the function and its arguments, bumps a generation counter and wakes the
// threads (Atomics.notify). Its `parts` shares (as many as threads: whole blocks of output rows, or of columns,
// each output's sum in the same order as on one thread, so the image is the same bits for any count) are claimed,
// not assigned: every thread, the engine's included, takes the next unclaimed share until none is left, and the
// engine waits only for the shares others claimed. A thread still asleep, or descheduled by another process on a
// busy machine, leaves its share to the engine instead of stalling the step: the step never waits on a wake-up.
// Needs a cross-origin isolated page (SharedArrayBuffer).

// control block, i32 slots: generation, function (-1: stop), argument count, shares done, the first failed share
// (its part + 1; 0: none), the claim ticket ((generation & 0xffffff) << 8 | the next share), arguments
const GEN = 0, FN = 1, NARGS = 2, DONE = 3, FAILED = 4, CLAIM = 5, ARGS = 6, MAX_ARGS = 12;
export const CONTROL_BYTES = 4 * (ARGS + MAX_ARGS);
export const STACK_BYTES = 65536;   // each thread's stack (wasm/build.sh: -z stack-size)
// A thread spins on a control slot before sleeping on it (Atomics.wait): the dispatches of a step follow each other
// within tens of microseconds, and a futex wake-up costs about as much, twice per split dispatch; a short spin catches
// most hand-overs awake. At most SPIN loads (some tens of microseconds once the loop is optimised) and at most SPIN_MS:
// while the loop still runs interpreted (the first steps) the count alone lasts milliseconds, and spins that long kept
// V8's background compiler (the kernels' tier-up) off 2 cores, making the first steps of a 2-thread run several times
// slower than one thread's. A bound by time alone (performance.now() every 256 loads, 0.1 ms) let the threads fall
// asleep between dispatches: the engine then ran most shares itself.
const SPIN = 50000, SPIN_MS = 0.25;

/** Whether ctl[slot] moves off `value` within SPIN loads and SPIN_MS. */
function spinWhile(ctl, slot, value) {
  const end = performance.now() + SPIN_MS;
  for (let i = 1; i <= SPIN; i++) {
    if (Atomics.load(ctl, slot) !== value) return true;
    if ((i & 4095) === 0 && performance.now() > end) return false;
  }
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

  // run function `index` of PART_FUNCTIONS with args in `threads` shares, claimed by whichever thread is free (this one
  // first); returns when all are done
  parallel(index, args) {
    const ctl = this.ctl, parts = this.threads;
    ctl[FN] = index;
    ctl[NARGS] = args.length;
    for (let i = 0; i < args.length; i++) ctl[ARGS + i] = args[i];
    Atomics.store(ctl, DONE, 0);
    const gen = (Atomics.load(ctl, GEN) + 1) | 0;
    Atomics.store(ctl, CLAIM, (gen & 0xffffff) << 8);
    Atomics.store(ctl, GEN, gen);
    Atomics.notify(ctl, GEN);
    const fn = this.fns[index];
    for (let part = claim(ctl, gen, parts); part >= 0; part = claim(ctl, gen, parts)) {
      runShare(ctl, fn, args, part, parts);
    }
    for (let d = Atomics.load(ctl, DONE); d !== parts; d = Atomics.load(ctl, DONE)) {
      if (!spinWhile(ctl, DONE, d)) Atomics.wait(ctl, DONE, d, 1000);
    }
    const failed = Atomics.load(ctl, FAILED);
    if (failed) throw new Error(`WebAssembly share ${failed - 1} failed in ${PART_FUNCTIONS[index]}`);
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

/** The next unclaimed share of generation `gen` (-1: none left, or the generation is over). A claim succeeds only
 * while the ticket still names `gen`: a thread that read the arguments of a generation the engine has since
 * finished alone cannot claim a share of the next one with them.
 * @param {Int32Array} ctl @param {number} gen @param {number} parts @returns {number} */
function claim(ctl, gen, parts) {
  for (;;) {
    const t = Atomics.load(ctl, CLAIM);
    if (t >>> 8 !== (gen & 0xffffff) || (t & 0xff) >= parts) return -1;
    if (Atomics.compareExchange(ctl, CLAIM, t, t + 1) === t) return t & 0xff;
  }
}

/** Run share `part` of `parts` and count it done (the last one wakes the engine); a failure is recorded for the
 * engine to report, and the thread keeps serving.
 * @param {Int32Array} ctl @param {Function} fn @param {number[]} args @param {number} part @param {number} parts */
function runShare(ctl, fn, args, part, parts) {
  try {
    fn(...args, part, parts);
  } catch (e) {
    Atomics.compareExchange(ctl, FAILED, 0, part + 1);
  }
  if (Atomics.add(ctl, DONE, 1) === parts - 1) Atomics.notify(ctl, DONE);
}

/** The thread side (ditweb-thread.js): wait for a generation, claim and run shares of it until none is left; until
 * FN is -1. `part` names the thread (its stack); the shares it runs are whichever it claims. ready() is called once
 * the current generation is read (the engine hands out work only after every ready). */
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
    for (let share = claim(ctl, gen, parts); share >= 0; share = claim(ctl, gen, parts)) runShare(ctl, fns[fn], args, share, parts);
  }
}

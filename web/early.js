// The page's first script, a classic one at the top of index.html's head (fetched first and at once, run before the
// page's modules are compiled; a module or an async script waited for those): it starts what the page will surely
// ask for, so that it does not wait for the page's modules to load and run. app.js hands both to
// loadBundle, which treats them as its own (web/ditweb.js, opts.manifestFetch and opts.earlyWorker):
//   manifest  the bundle's manifest.json asked for (the same URL: ?bundle=URL or bundle/, against document.baseURI):
//             only the request; loadBundle reads and verifies the response as one it fetched itself
//   worker    the WebAssembly runtime's worker started (web/wasm-bundle.js openWorker: the same script), where the page
//             runs WebAssembly for sure (?runtime=wasm, or a browser without navigator.gpu): its modules load while
//             the page's do; it gets nothing of the bundle before every file is verified, as always
// Nothing is started where the page may run neither runtime (no WebAssembly SIMD) or checks for WebGPU first
// (?runtime=webgpu).
(() => {
// the folder of this script (and of the page's modules)
const HERE = /** @type {HTMLScriptElement} */ (document.currentScript).src;
// The smallest module with a SIMD instruction (web/ditweb.js SIMD_PROBE).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]);

function earlyManifest(params) {
  const base = new URL(params.get("bundle") || "bundle/", document.baseURI);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const url = new URL("manifest.json", base).href;
  const response = fetch(url, { cache: "no-cache" });
  response.catch(() => {});            // loadBundle reports a failure, as for its own fetch
  return { url, response };
}

// {worker, opened, up, error, release}: up, the worker's first message (its modules loaded, ms since the epoch), and
// error, a failure to start, as they come until release() (the WasmBundle that takes the worker listens from then on)
function earlyWorker() {
  const worker = new Worker(new URL("./ditweb-worker.js", HERE), { type: "module", name: "ditweb" });
  const early = { worker, opened: performance.now(), up: NaN, error: "", release: () => {} };
  const onMessage = ({ data }) => { if (data && data.up) early.up = data.up; };
  const onError = (ev) => { early.error = ev.message || "could not start"; };
  worker.addEventListener("message", onMessage);
  worker.addEventListener("error", onError);
  early.release = () => {
    worker.removeEventListener("message", onMessage);
    worker.removeEventListener("error", onError);
  };
  return early;
}

function startEarly() {
  const params = new URLSearchParams(location.search);
  const runtime = params.get("runtime") || "auto";
  if (runtime === "webgpu") return null;
  try {
    if (typeof WebAssembly !== "object" || !WebAssembly.validate(SIMD_PROBE)) return null;
    const wasm = runtime === "wasm" || (runtime === "auto" && !navigator.gpu);
    return { manifest: earlyManifest(params), worker: wasm && typeof Worker === "function" ? earlyWorker() : null };
  } catch {
    return null;                       // nothing started: the page starts it all itself
  }
}

// where app.js has already asked for the bundle (this script came in late) it has taken the name: nothing to do
if (!("ditwebEarly" in window)) /** @type {any} */ (window).ditwebEarly = startEarly();
})();

// The page's first script (index.html loads it async, ahead of app.js and its module graph): it asks for the bundle's
// manifest.json at once, as app.js will (the same URL: ?bundle=URL or bundle/, against document.baseURI), so that
// the request does not wait for the page's modules to load and run. Only the request: loadBundle reads and verifies
// the response exactly as it reads one it fetches itself (web/ditweb.js, opts.manifestFetch). Nothing is asked for
// where the page will fetch nothing: a browser without WebAssembly SIMD (it may run neither runtime), or ?runtime=webgpu
// (the page checks for WebGPU first).
// The smallest module with a SIMD instruction (web/ditweb.js SIMD_PROBE).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]);

function earlyManifest() {
  const params = new URLSearchParams(location.search);
  if ((params.get("runtime") || "auto") === "webgpu") return null;
  try {
    if (typeof WebAssembly !== "object" || !WebAssembly.validate(SIMD_PROBE)) return null;
    const base = new URL(params.get("bundle") || "bundle/", document.baseURI);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    const url = new URL("manifest.json", base).href;
    const response = fetch(url, { cache: "no-cache" });
    response.catch(() => {});          // loadBundle reports a failure, as for its own fetch
    return { url, response };
  } catch {
    return null;                       // no early request: the page asks for the manifest itself
  }
}

// where app.js has already asked for the bundle (this script came in late) it has taken the name: nothing to do
if (!("ditwebEarlyManifest" in window)) /** @type {any} */ (window).ditwebEarlyManifest = earlyManifest();

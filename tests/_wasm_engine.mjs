// A bundle folder's WebAssembly engine in node (web/wasm-runtime.js over the given kernels module), its manifest and
// weight shards verified as the page verifies them (sha256 aside: tests/test_fuzz_bundles.py covers it). Shared by
// tests/_wasm_node.mjs and bench/web/wasm_profile.mjs.
import { readFileSync } from "node:fs";
import { verifyManifest, verifyShards, weightFiles } from "../web/bundle.js";
import { WasmEngine } from "../web/wasm-runtime.js";

export async function engineFor(dir, wasm) {
  const manifest = JSON.parse(readFileSync(`${dir}/manifest.json`, "utf-8"));
  verifyManifest(manifest);
  const files = {};
  for (const f of weightFiles(manifest.buffers)) {
    const raw = readFileSync(`${dir}/${f}`);
    files[f] = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
  }
  return WasmEngine.create(wasm, manifest, verifyShards(manifest.buffers, files));
}

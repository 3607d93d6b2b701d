// The browser's verifier (web/bundle.js) run by node on bundle folders, file for file what
// loadBundle does before any GPU call: manifest, sha256 of every listed file, sizes, the
// safetensors header, WGSL against the manifest. Reads a JSON list of folders on stdin, prints one
// JSON object {folder: "ok" | "BundleError: ..." | "CRASH: ..."}.
import { readFileSync } from "node:fs";
import { BundleError, bundleFiles, parseJson, sha256Hex, verifyFiles, verifyManifest } from "../web/bundle.js";

async function check(dir) {
  let raw;
  try { raw = readFileSync(`${dir}/manifest.json`); } catch { throw new BundleError("manifest.json", "HTTP 404"); }
  const m = parseJson(raw, "manifest.json");
  verifyManifest(m);
  const files = {};
  for (const file of bundleFiles(m)) {
    let buf;
    try { buf = readFileSync(`${dir}/${file}`); } catch { throw new BundleError(file, "HTTP 404"); }
    buf = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    const got = await sha256Hex(buf);
    if (got !== m.files[file].sha256) throw new BundleError(file, `sha256 ${got.slice(0, 16)}... does not match manifest.json`);
    files[file] = buf;
  }
  verifyFiles(m, files);
}

const dirs = JSON.parse(readFileSync(0, "utf-8"));
const out = {};
for (const d of dirs) {
  try { await check(d); out[d] = "ok"; }
  catch (e) { out[d] = e instanceof BundleError ? `BundleError: ${e.message}` : `CRASH: ${e && e.stack}`; }
}
process.stdout.write(JSON.stringify(out));

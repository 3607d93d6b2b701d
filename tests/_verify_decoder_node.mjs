// The browser's decoder verifier (web/decode.js, with web/bundle.js's shared checks) run by node on decoder/
// folders, file for file what fetchDecoder does before any GPU call: the manifest, each file's sha256, sizes, the
// WGSL against the manifest, the weight shards' headers. Reads a JSON list of [folder, x_shape] on stdin, prints
// one JSON object {folder: "ok" | "BundleError: ..." | "CRASH: ..."}.
import { readFileSync } from "node:fs";
import { BundleError, parseJson, sha256Hex } from "../web/bundle.js";
import { verifyDecoderFiles, verifyDecoderManifest } from "../web/decode.js";

async function check(dir, xShape) {
  let raw;
  try { raw = readFileSync(`${dir}/manifest.json`); } catch { throw new BundleError("decoder/manifest.json", "HTTP 404"); }
  const m = parseJson(raw, "decoder/manifest.json");
  verifyDecoderManifest(m, xShape);
  const files = {};
  for (const file of Object.keys(m.files)) {
    let buf;
    try { buf = readFileSync(`${dir}/${file}`); } catch { throw new BundleError(`decoder/${file}`, "HTTP 404"); }
    buf = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    const got = await sha256Hex(buf);
    if (got !== m.files[file].sha256) throw new BundleError(`decoder/${file}`, `sha256 ${got.slice(0, 16)}... does not match decoder/manifest.json`);
    files[file] = buf;
  }
  verifyDecoderFiles(m, files);
}

const cases = JSON.parse(readFileSync(0, "utf-8"));
const out = {};
for (const [d, xShape] of cases) {
  try { await check(d, xShape); out[d] = "ok"; }
  catch (e) { out[d] = e instanceof BundleError ? `BundleError: ${e.message}` : `CRASH: ${e && e.stack}`; }
}
process.stdout.write(JSON.stringify(out));

r"""web/bundle.js jsonDepth scans by character code what the pattern /"(?:[^"\\]|\\.)*"|[[\]{}]/g finds (the rule
ditformat/schema.py json_depth twins): the same depth for random texts of quotes, backslashes, brackets and line
terminators, and for the shipped bundles' JSON (run by node)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import { jsonDepth } from './web/bundle.js';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
function byPattern(text) {
  let depth = 0, deepest = 0;
  for (const m of text.matchAll(/"(?:[^"\\]|\\.)*"|[[\]{}]/g)) {
    if (m[0] === "[" || m[0] === "{") deepest = Math.max(deepest, ++depth);
    else if (m[0] === "]" || m[0] === "}") depth--;
  }
  return deepest;
}
const alphabet = ['"', '\\', '[', ']', '{', '}', 'a', '\n', '\r', '\u2028', '\u2029', ' ', '"', '[', '\\', '\ud83d'];
let seed = 12345;
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
const diffs = [];
for (let it = 0; it < 100000 && diffs.length < 5; it++) {
  let s = "";
  for (let i = rand(40); i > 0; i--) s += alphabet[rand(alphabet.length)];
  if (byPattern(s) !== jsonDepth(s)) diffs.push(s);
}
let files = 0;
for (const dir of existsSync('bundles') ? readdirSync('bundles') : []) {
  for (const name of ['manifest.json', 'vocabulary.json']) {
    const f = `bundles/${dir}/${name}`;
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf-8');
    if (byPattern(text) !== jsonDepth(text)) diffs.push(f);
    files++;
  }
}
process.stdout.write(JSON.stringify({ diffs, files }));
"""


def test_json_depth_scan_matches_the_pattern():
    r = subprocess.run(["node", "--input-type=module", "-e", SCRIPT], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["diffs"] == [], out["diffs"]

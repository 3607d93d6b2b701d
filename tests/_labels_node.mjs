// web/labels.js run by node for tests/test_labels_js.py: reads {vocab: JSON text, prompts: [[prompt, style]],
// prefixes: [...], files: [JSON text]} on stdin; prints, for each, what Python's ditformat/labels.py answers.
import { readFileSync } from "node:fs";
import { Vocabulary } from "../web/labels.js";

const req = JSON.parse(readFileSync(0, "utf-8"));
const v = Vocabulary.loads(req.vocab);
const tryIt = (f) => { try { return f(); } catch (e) { return { error: `${e.name}: ${e.message}` }; } };
const reply = {
  resolve: req.prompts.map(([p, s]) => tryIt(() => { const l = v.resolve(p, s); return { ids: l.ids, text: l.text, describe: v.describe(l) }; })),
  suggest: req.prefixes.map((p) => v.suggest(p)),
  closest: req.prefixes.map((p) => v.closest(p)),
  files: req.files.map((f) => tryIt(() => Vocabulary.loads(f, "vocabulary.json").sizes)),
};
process.stdout.write(JSON.stringify(reply));

// labels.js: the label vocabulary of a named bundle (vocabulary.json), the twin of ditformat/labels.py.
// resolve / describe / suggest / closest / check give the same answers and the same one-line messages as
// Python (tests/test_labels_js.py runs both on one list of prompts and of bad files). Strings are compared
// by code point, lengths counted in code points, whitespace is Python's str.isspace set, and values in
// messages are written as Python's repr writes them.

export const VOCAB_FORMAT = "ditweb-vocabulary/1";
export const MAX_LABELS = 100000;
export const MAX_NAME = 200;

export class VocabularyError extends Error {
  constructor(message) { super(message); this.name = "VocabularyError"; }
}

// Python's whitespace (str.isspace, which `\s` and str.strip() use)
const WS = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP = new RegExp(`^[${WS}]+|[${WS}]+$`, "g");
const RUNS = new RegExp(`[${WS}_\\-]+`, "g");
const pyStrip = (s) => s.replace(STRIP, "");
const cpSlice = (s, n) => Array.from(s).slice(0, n).join("");
function cmpStr(a, b) {                 // code point order (Python's str <), not UTF-16 units
  const x = Array.from(a), y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

// Case, underscores, hyphens and runs of spaces do not matter when matching a prompt.
export function normalise(text) {
  return pyStrip(String(text)).toLowerCase().replace(RUNS, " ");
}

// Python's repr of a str (and of the few other JSON values a message may show)
const NONPRINTABLE = /[\p{C}\p{Z}]/u;
export function pyRepr(v) {
  if (v === null || v === undefined) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) < 1e16 ? String(v) : String(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
  const s = String(v);
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = q;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === q || ch === "\\") out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch !== " " && NONPRINTABLE.test(ch)) {
      out += c < 0x100 ? `\\x${c.toString(16).padStart(2, "0")}` : c < 0x10000 ? `\\u${c.toString(16).padStart(4, "0")}` : `\\U${c.toString(16).padStart(8, "0")}`;
    } else out += ch;
  }
  return out + q;
}

function editDistance(a, b) {
  const x = Array.from(a), y = Array.from(b);
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) cur.push(Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] !== y[j - 1] ? 1 : 0)));
    prev = cur;
  }
  return prev[prev.length - 1];
}

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const sortPairs = (pairs) => pairs.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
function uniquePairs(found) {
  const seen = new Set();
  return sortPairs(found.filter(([l, i]) => { const k = `${l},${i}`; if (seen.has(k)) return false; seen.add(k); return true; }));
}

// A label: one id per level (ids[l] === sizes[l]: level l left out), and how it was asked for.
export class Label {
  constructor(ids, text = "") { this.ids = ids; this.text = text; }
  toString() { return this.text; }
}

export class Vocabulary {
  // fields as in the JSON file; check() runs first (a vocabulary is untrusted input)
  constructor({ levels, names, nested, parents = [], short_names = [], keywords = [], codes = [] }) {
    /** @type {any} */ this.levels = levels;            // level names, finest nested level first, free levels last
    /** @type {any} */ this.names = names;              // per level: its label names (ids are positions)
    /** @type {any} */ this.nested = nested;            // the first `nested` levels form the hierarchy
    /** @type {any} */ this.parents = parents;          // per nested level but the last: the id of each label's parent
    /** @type {any} */ this.short_names = short_names;  // per label of level 0: other names
    /** @type {any} */ this.keywords = keywords;        // per label of level 0: keywords
    /** @type {any} */ this.codes = codes;              // per label of level 0: its code (emoji: unified)
    /** @type {any} */ this._index = null;
    this.check();
  }

  static fromJSON(d, where = "vocabulary") {
    if (d === null || typeof d !== "object" || Array.isArray(d)) throw new VocabularyError(`${where}: expected a JSON object`);
    const fmt = Object.prototype.hasOwnProperty.call(d, "format") ? d.format : null;
    if (fmt !== VOCAB_FORMAT) throw new VocabularyError(`${where}: format ${pyRepr(fmt)} is not ${pyRepr(VOCAB_FORMAT)}`);
    for (const key of ["levels", "names", "nested"]) {
      if (!Object.prototype.hasOwnProperty.call(d, key)) throw new VocabularyError(`${where}: missing field ${pyRepr(key)}`);
    }
    const get = (k) => (Object.prototype.hasOwnProperty.call(d, k) ? d[k] : []);
    try {
      return new Vocabulary({ levels: d.levels, names: d.names, nested: d.nested, parents: get("parents"),
                              short_names: get("short_names"), keywords: get("keywords"), codes: get("codes") });
    } catch (e) {
      if (e instanceof VocabularyError) throw new VocabularyError(`${where}: ${e.message}`);
      throw e;
    }
  }

  static loads(text, where = "vocabulary") {
    let d;
    try { d = JSON.parse(text); } catch (e) { throw new VocabularyError(`${where}: not valid JSON (${e.message})`); }
    return Vocabulary.fromJSON(d, where);
  }

  get sizes() { return this.names.map((n) => n.length); }
  get null() { return new Label(this.sizes, "(unconditional)"); }

  level(name) {
    if (!this.levels.includes(name)) throw new VocabularyError(`unknown label level ${pyRepr(name)}; this model's levels: ${this.levels.join(", ")}`);
    return this.levels.indexOf(name);
  }

  // Label i of `level` with its coarser nested levels filled in; `free` levels (e.g. {style: "noto"}) by name.
  label(level, i, free = {}) {
    const ids = this.sizes;
    if (level < this.nested) {
      for (let l = level; l < this.nested; l++) {
        ids[l] = i;
        if (l + 1 < this.nested) i = this.parents[l][i];
      }
    } else ids[level] = i;
    let text = this.names[level][ids[level]];
    for (const [lname, value] of Object.entries(free)) {
      if (value === null || value === undefined) continue;
      const l = this.level(lname);
      if (l < this.nested) throw new VocabularyError(`${pyRepr(lname)} is not a free level (free: ${this.levels.slice(this.nested).join(", ")})`);
      if (!this.names[l].includes(value)) throw new VocabularyError(`unknown ${lname} ${pyRepr(value)}; known: ${this.names[l].join(", ")}`);
      ids[l] = this.names[l].indexOf(value);
      text += ` [${value}]`;
    }
    return new Label(ids, text);
  }

  // 'hippopotamus < animal-mammal < Animals & Nature, style noto' (what a label conditions on)
  describe(label) {
    const ids = label instanceof Label ? label.ids : label;
    const sizes = this.sizes;
    const parts = [];
    for (let l = 0; l < this.nested; l++) if (ids[l] < sizes[l]) parts.push(this.names[l][ids[l]]);
    let text = parts.length ? parts.join(" < ") : "(any)";
    for (let l = this.nested; l < this.levels.length; l++) text += `, ${this.levels[l]} ${ids[l] < sizes[l] ? this.names[l][ids[l]] : "(any)"}`;
    return text;
  }

  checkLabel(label) {
    const ids = label instanceof Label ? label.ids : label;
    const sizes = this.sizes;
    if (!Array.isArray(ids) || ids.length !== this.levels.length || !ids.every((i, l) => isInt(i) && i >= 0 && i <= sizes[l])) {
      const tuple = (v) => (Array.isArray(v) ? `(${v.join(", ")}${v.length === 1 ? "," : ""})` : pyRepr(v));
      throw new VocabularyError(`label ${tuple(ids)} does not fit the vocabulary's levels ${tuple(sizes)}`);
    }
    return label;
  }

  // Every label's name, level after level (a checkpoint's class_names).
  flatNames() { return this.names.flat(); }

  // [normalised key, kind, level, id]: kind 0 exact name, 1 short name / code, 2 keyword (Python's order)
  entries() {
    if (this._index === null) {
      const out = [];
      this.names.forEach((names, l) => names.forEach((n, i) => out.push([normalise(n), 0, l, i])));
      this.short_names.forEach((shorts, i) => shorts.forEach((s) => out.push([normalise(s), 1, 0, i])));
      this.codes.forEach((code, i) => out.push([normalise(code), 1, 0, i]));
      this.keywords.forEach((kws, i) => kws.forEach((k) => out.push([normalise(k), 2, 0, i])));
      this._index = out;
    }
    return this._index;
  }

  // A word or phrase -> a Label: exact name, short name or code, name prefix, keyword, keyword prefix, whole
  // word of a name; the first tier that finds anything decides (ditformat/labels.py Vocabulary.resolve).
  resolve(prompt, style = null) {
    if (typeof prompt !== "string" || !pyStrip(prompt)) throw new VocabularyError("empty prompt; ask for an emoji, a subcategory, a category or a style by name");
    let entries = this.entries();
    const colon = prompt.indexOf(":");
    if (colon >= 0 && this.levels.includes(pyStrip(prompt.slice(0, colon)))) {
      const only = this.levels.indexOf(pyStrip(prompt.slice(0, colon)));
      entries = entries.filter((e) => e[2] === only);
      prompt = prompt.slice(colon + 1);
    }
    const key = normalise(prompt);
    const pick = (f) => entries.filter(f).map(([, , l, i]) => [l, i]);
    const tiers = [
      () => pick(([k, kind]) => kind === 0 && k === key),
      () => pick(([k, kind]) => kind === 1 && k === key),
      () => pick(([k, kind]) => kind <= 1 && k.startsWith(key)),
      () => pick(([k, kind]) => kind === 2 && k === key),
      () => pick(([k, kind]) => kind === 2 && k.startsWith(key)),
      () => pick(([k, kind]) => kind <= 1 && ` ${k} `.includes(` ${key} `)),
    ];
    for (let tier = 0; tier < tiers.length; tier++) {
      let found = uniquePairs(tiers[tier]());
      if (!found.length) continue;
      if (tier === 0) found = found.filter((f) => f[0] === found[0][0]);    // an exact name at several levels: the finest
      if (found.length === 1) {
        const [l, i] = found[0];
        if (l >= this.nested) return this.label(l, i);                    // a style alone: any emoji in that style
        return this.label(l, i, style && this.levels.length > this.nested ? { [this.levels[this.levels.length - 1]]: style } : {});
      }
      const shown = found.slice(0, 8).map(([l, i]) => pyRepr(this.names[l][i])).join(", ");
      const more = found.length > 8 ? ` and ${found.length - 8} more` : "";
      throw new VocabularyError(`prompt ${pyRepr(prompt)} is ambiguous: ${shown}${more}; use a longer name`);
    }
    throw new VocabularyError(`unknown prompt ${pyRepr(prompt)}; closest labels: ${this.closest(prompt).map(pyRepr).join(", ")}`);
  }

  // The k labels nearest to the prompt (edit distance to a name, short name or keyword, or to its start).
  closest(prompt, k = 5) {
    const key = normalise(prompt);
    const n = Array.from(key).length;
    const best = new Map();
    for (const [e, kind, l, i] of this.entries()) {
      const d = Math.min(editDistance(key, e), editDistance(key, cpSlice(e, n)) + 0.5) + 0.25 * (kind === 2 ? 1 : 0);
      const name = this.names[l][i];
      if (d < (best.has(name) ? best.get(name) : 2 ** 30)) best.set(name, d);
    }
    return [...best.entries()].sort((a, b) => a[1] - b[1] || cmpStr(a[0], b[0])).slice(0, k).map(([name]) => name);
  }

  // Names (all levels) and short names starting with `prefix`, shortest first (the page's suggestions).
  suggest(prefix, k = 10) {
    const key = normalise(prefix);
    const out = new Map();
    for (const [e, kind, l, i] of this.entries()) {
      if (kind <= 1 && e.startsWith(key) && !out.has(this.names[l][i])) out.set(this.names[l][i], Array.from(e).length);
    }
    return [...out.entries()].sort((a, b) => a[1] - b[1] || cmpStr(a[0], b[0])).slice(0, k).map(([name]) => name);
  }

  // Types, sizes and links, with Python's messages.
  check() {
    const fail = (msg) => { throw new VocabularyError(msg); };
    const strings = (v, what, lo = 0) => {
      if (!Array.isArray(v) || v.length < lo || v.length > MAX_LABELS
          || !v.every((s) => typeof s === "string" && s.length > 0 && (s.length <= MAX_NAME || Array.from(s).length <= MAX_NAME))) {   // code points <= UTF-16 units
        fail(`${what} must be a list of ${lo}..${MAX_LABELS} non-empty strings of at most ${MAX_NAME} characters`);
      }
    };
    strings(this.levels, "levels", 1);
    if (new Set(this.levels).size !== this.levels.length || this.levels.length > 8) fail("levels must be at most 8 distinct names");
    if (!Array.isArray(this.names) || this.names.length !== this.levels.length) fail(`names must hold one list per level (${this.levels.length})`);
    this.levels.forEach((lname, l) => {
      const names = this.names[l];
      strings(names, `names of level ${pyRepr(lname)}`, 1);
      if (new Set(names).size !== names.length) {
        const dup = names.find((n) => names.indexOf(n) !== names.lastIndexOf(n));
        fail(`level ${pyRepr(lname)} names ${pyRepr(dup)} twice`);
      }
    });
    if (this.names.reduce((a, n) => a + n.length, 0) > MAX_LABELS) fail(`more than ${MAX_LABELS} labels`);
    if (!isInt(this.nested) || this.nested < 1 || this.nested > this.levels.length) fail(`nested must be an integer in [1, ${this.levels.length}]`);
    if (!Array.isArray(this.parents) || this.parents.length !== this.nested - 1) fail(`parents must hold one list per nested level but the last (${this.nested - 1})`);
    this.parents.forEach((par, l) => {
      const n = this.names[l].length, up = this.names[l + 1].length;
      if (!Array.isArray(par) || par.length !== n || !par.every((p) => isInt(p) && p >= 0 && p < up)) {
        fail(`parents of level ${pyRepr(this.levels[l])} must be ${n} ids in [0, ${up})`);
      }
    });
    const n0 = this.names[0].length;
    for (const [what, v] of [["short_names", this.short_names], ["keywords", this.keywords]]) {
      if (!Array.isArray(v) || (v.length && v.length !== n0)) fail(`${what} must be empty or hold one list per ${this.levels[0]} (${n0})`);
      for (const s of v) strings(s, `${what} entries`);
    }
    if (!Array.isArray(this.codes) || this.codes.length) {
      strings(this.codes, "codes", n0);
      if (this.codes.length !== n0) fail(`codes must be empty or hold one per ${this.levels[0]} (${n0})`);
    }
  }
}

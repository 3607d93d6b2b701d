// The demo page: pickers filled from the manifest, a big canvas and the live tab favicon.
// body[data-state] says where the page is (loading, unsupported, no-webgpu, no-adapter, bundle-error,
// ready, running, done, stopped, error); the browser tests read it, people read #message.
// ?runtime=auto|webgpu|wasm picks the runtime (default auto: WebGPU on a hardware GPU, else WebAssembly).
// ?plan=default runs each dispatch's own kernel instead of the plan timed on this adapter (web/tune.js).
// ?bundle=URL loads another bundle (same origin); bundles.json lists the ones the "model" picker offers.
// A named bundle (vocabulary.json) shows a prompt box with suggestions as you type and a style picker in place of
// the class picker: ?prompt=hippo (the default) and ?style=noto preset them.
// The footer shows the attribution the training data's licences require, read from the bundle's model card
// (README.md, listed and hashed in the manifest): every bullet of its "**Attribution**" list.
// Relative URLs resolve against document.baseURI: `ditweb site --base-path /icons/` writes a <base href>, so the
// page works at any URL a host maps to it. No inline script and no eval: the page runs under a strict CSP.
// index.html runs web/app.bundle.js, this module and all it imports in one file: after editing any of them, run
// `python -m webserve.pagebundle` (webserve/pagebundle.py; tests/test_site.py checks the bundle is current).
import { checkWebGPU, chooseRuntime, loadBundle, diffuseFavicon } from "./ditweb.js";
import { fetchManifest, fetchVerified, measure } from "./bundle.js";

// when this module began to run, ms since navigation: the HTML, the CSS and the whole module graph are in by then
const appStartMs = performance.now();
/** @type {(id: string) => any} form fields, buttons, canvas: each used as what it is */
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const bundleUrl = new URL(params.get("bundle") || "bundle/", document.baseURI);
const runtime = params.get("runtime") || "auto";
// A named bundle's style picker starts here where the bundle has it (?style= for "any"): Twemoji's hippo is the one
// the shipped named model draws most cleanly (the identity judge's top 1 for 15 of 16 seeds; any style: the
// styles' average, muddier). Written in index.html (#style's data-default), where `ditweb site` reads it too.
const DEFAULT_STYLE = $("style").dataset.default || "";
// The label `ditweb site` resolved for the page's default prompt and style (webserve/site.py page_label: #prompt's
// data-label), so that the first favicon need not wait for the vocabulary's download, parse and index; see presetLabel.
const preset = presetLabel();
/** @type {Promise<any> | null} a named bundle's vocabulary loaded after the bundle (vocabularyReady) */
let vocabReady = null;
let bundle = null;
let controller = null;
/** @type {(() => void) | null} page work put off until the first run's first step is done (setUpPrompt) */
let afterFirstStep = null;
// Time to the first favicon, in ms since navigation (performance.now()'s origin): when the bundle's download began
// and when it was ready to sample; the first finished run completes the line (#first, window.ditwebFirstFavicon).
const firstFavicon = { loadStartMs: NaN, readyMs: NaN, shown: false };

function setState(state) { document.body.dataset.state = state; }

function show(text, kind = "info") {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
  m.hidden = !text;
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = text;
  select.appendChild(o);
}

/**
 * index.html's preset label ({vocabulary: the sha256 of the vocabulary.json `ditweb site` resolved it with, prompt,
 * style (null: any), ids: one id per level}), or null where there is none or it is not of that form (the page then
 * resolves its prompt itself). It is used only where the loaded bundle's verified manifest lists a vocabulary.json of
 * that sha256 (the ids come from those very bytes) and the form asks for that prompt and style (presetFits).
 * @returns {{vocabulary: string, prompt: string, style: string | null, ids: number[]} | null}
 */
function presetLabel() {
  const text = $("prompt").dataset.label;
  if (!text) return null;
  try {
    const p = JSON.parse(text);
    const ok = p && typeof p.vocabulary === "string" && typeof p.prompt === "string"
      && (p.style === null || typeof p.style === "string") && Array.isArray(p.ids) && p.ids.every(Number.isInteger);
    return ok ? p : null;
  } catch {
    return null;
  }
}

// The style the form asks for before the vocabulary (and so the style picker) is in: ?style= ("" for any), else
// the one the page starts with, which is the preset's (site.py resolves it with DEFAULT_STYLE where the bundle has it).
const wantedStyle = () => (params.has("style") ? params.get("style") || null : preset ? preset.style : null);

// Whether the preset label is the form's label: the prompt and style it was resolved for, no negative prompt, and (once
// the bundle is loaded) the bundle's vocabulary.json the one it was resolved with.
function presetFits() {
  if (!preset || (bundle && (bundle.vocab || !bundle.named))) return false;
  const prompt = bundle ? /** @type {HTMLInputElement} */ ($("prompt")).value : params.get("prompt") ?? $("prompt").value;
  const negative = bundle ? /** @type {HTMLInputElement} */ ($("negative-prompt")).value.trim() : params.get("negative") || "";
  const file = bundle && bundle.manifest.files["vocabulary.json"];
  return prompt === preset.prompt && wantedStyle() === preset.style && negative === ""
    && (!bundle || (!!file && file.sha256 === preset.vocabulary));
}

// A named bundle loaded without its vocabulary: vocabulary.json fetched and verified once (bundle.loadVocabulary),
// then the prompt box's suggestions and the style picker; a failure is the page's one-line error.
function vocabularyReady() {
  if (!vocabReady && bundle.vocab) vocabReady = Promise.resolve(bundle.vocab);     // loaded with the bundle (setUpForm)
  if (!vocabReady) {
    vocabReady = bundle.loadVocabulary().then((vocab) => { setUpPrompt(vocab); return vocab; });
    vocabReady.catch((e) => {
      console.error(e);
      const what = e.name === "BundleError" ? "failed verification" : "could not be loaded";
      show(`The bundle at ${bundleUrl.pathname} ${what}: ${e.message}`, "error");
      setState(e.name === "BundleError" ? "bundle-error" : "error");
    });
  }
  return vocabReady;
}

function readOptions() {
  // a named bundle's negative label is a prompt like the label itself (its vocabulary has thousands of names)
  const negative = bundle.named ? /** @type {HTMLInputElement} */ ($("negative-prompt")).value.trim() : $("negative").value;
  const named = presetFits() ? { classIds: [preset.ids] } : { prompt: $("prompt").value, style: $("style").value || null };
  const label = bundle.named ? named : { classId: Number($("class").value) };
  return {
    ...label,
    seed: Number($("seed").value) >>> 0,
    steps: Math.max(1, Math.min(1000, Math.round(Number($("steps").value) || 1))),
    cfg: Number($("cfg").value),
    negativeClass: negative === "" ? null : bundle.named ? negative : Number(negative),
    sampler: $("sampler").value,
  };
}

async function generate() {
  if (bundle.named && !bundle.vocab && !presetFits()) {
    try { await vocabularyReady(); } catch { return; }       // the error is on the page already
  }
  controller = new AbortController();
  $("go").disabled = true;
  $("stop").disabled = false;
  setState("running");
  show("");
  const opts = readOptions();
  const started = performance.now();
  try {
    const result = await diffuseFavicon(bundle, {
      ...opts,
      signal: controller.signal,
      canvas: $("big"),
      onStep: ({ step, steps, msPerStep, dataURL }) => {
        if (afterFirstStep) {
          const later = afterFirstStep;
          afterFirstStep = null;
          later();
        }
        $("step").textContent = `${step} / ${steps}`;
        $("ms").textContent = `${msPerStep.toFixed(1)} ms (${bundle.runtime}, mean over the steps so far)`;
        if (dataURL) $("live").src = dataURL;
      },
    });
    /** @type {any} */ (window).ditwebLast = result;   // for the browser tests: pixels and timings of the last run
    const seconds = (performance.now() - started) / 1000;
    show(`done: ${opts.steps} steps in ${seconds.toFixed(2)} s`);
    if (!firstFavicon.shown) showFirstFavicon(started, opts.steps, result, "classIds" in opts ? "site" : "page");
    setState("done");
  } catch (e) {
    if (e.name === "AbortError") {
      show("stopped");
      setState("stopped");
    } else {
      console.error(e);
      show(e.message, "error");
      setState(e.name === "BundleError" ? "bundle-error" : "error");
    }
  } finally {
    $("go").disabled = false;
    $("stop").disabled = true;
    if (bundle.named) vocabularyReady().catch(() => {});     // put off until the first favicon: needed from now on
  }
}

/**
 * The first finished favicon: how long after navigation, split into the page's own load, the bundle (fetch, sha256
 * of every file, kernels compiled, weights unpacked) and the sampling steps. A visitor waits for all of it.
 * window.ditwebFirstFavicon: {totalMs, pageMs, bundleMs, waitMs, stepsMs} (the coarse split), phases (the fine one,
 * firstFaviconPhases: [name, ms] in order, summing to totalMs) and detail (firstFaviconDetail: what ran alongside).
 * @param {number} runStartMs when the first run began (ms since navigation)
 * @param {number} steps
 * @param {any} result the run's sample() result (its timeline, kernelMs, iconMs)
 * @param {string} labels where a named bundle's label came from: "site" (the preset label), "page" (resolved here)
 */
function showFirstFavicon(runStartMs, steps, result, labels) {
  const doneMs = performance.now();
  const parts = {
    totalMs: doneMs,
    pageMs: firstFavicon.loadStartMs,
    bundleMs: firstFavicon.readyMs - firstFavicon.loadStartMs,
    waitMs: runStartMs - firstFavicon.readyMs,                // ready until the first click (0 with ?autorun)
    stepsMs: doneMs - runStartMs,
    steps,
    runtime: bundle.runtime,
    threads: bundle.threads || 1,
    labels: bundle.named ? labels : "class",
    phases: firstFaviconPhases(runStartMs, doneMs, steps, result.timeline),
    detail: firstFaviconDetail(result),
  };
  firstFavicon.shown = true;
  /** @type {any} */ (window).ditwebFirstFavicon = parts;
  const s = (ms) => (ms / 1000).toFixed(2);
  const d = parts.detail;
  const perStep = d.stepMs > 0 ? `; a step ${d.stepMs.toFixed(1)} ms${d.kernelMs > 0 ? `, kernels ${d.kernelMs.toFixed(1)} ms` : ""}` : "";
  $("first").textContent = `${s(parts.totalMs)} s after navigation: `
    + parts.phases.map(([name, ms]) => `${name} ${s(ms)}`).join(", ")
    + ` s (${parts.runtime}${parts.runtime === "wasm" ? `, ${parts.threads} thread${parts.threads > 1 ? "s" : ""}` : ""}${perStep})`;
}

// The first user-timing entry named "ditweb:<name>" (web/bundle.js measure), or null.
function span(name) {
  const e = performance.getEntriesByName(`ditweb:${name}`)[0];
  return e ? { start: e.startTime, end: e.startTime + e.duration } : null;
}

// All "ditweb:<prefix> <file>" entries but the model card's (README.md: fetched for the attribution footer, or with
// every file on the WebGPU path; no part of the way to the favicon): [{file, start, end}].
function spans(prefix) {
  return performance.getEntriesByType("measure").filter((e) => e.name.startsWith(`ditweb:${prefix} `))
    .map((e) => ({ file: e.name.slice(prefix.length + 8), start: e.startTime, end: e.startTime + e.duration }))
    .filter((e) => !e.file.startsWith("README"));
}

/**
 * The way to the first favicon as consecutive phases, [name, ms] each, summing to the total: each ends at a moment of
 * the load (ms since navigation) and lasts from the latest moment before it (work that ran alongside an earlier phase
 * adds nothing).
 *   HTML        the document's bytes are in (navigation timing)
 *   modules     the CSS and the page's module graph loaded and run, until app.js runs
 *   start       until the bundle is asked for (the runtime chosen)
 *   manifest    manifest.json fetched, its files asked for (it is verified while they download)
 *   download    the last file's bytes in (the Cache API on a later visit)
 *   verify      sha256 of the last file, sizes and headers of all
 *   set-up      the runtime ready: the kernels compiled, the worker's init (weights unpacked)
 *   wait        until the run began (a click; none with ?autorun)
 *   first step  the run's batch set up, its first step done
 *   steps       the other steps, with their previews
 *   finish      the last picture made and set as the favicon
 */
function firstFaviconPhases(runStartMs, doneMs, steps, timeline) {
  const nav = /** @type {any} */ (performance.getEntriesByType("navigation")[0]);
  // the manifest is in once its files are asked for (it is verified while they download), else once verified
  const manifest = span("requests") || span("verify manifest"), files = span("verify files");
  const got = [...spans("fetch"), ...spans("cache")];
  const ends = timeline ? timeline.stepEndMs : [];
  const moments = [
    ["HTML", nav ? nav.responseEnd : 0],
    ["modules", appStartMs],
    ["start", firstFavicon.loadStartMs],
    ["manifest", manifest ? manifest.end : firstFavicon.loadStartMs],
    ["download", got.length ? Math.max(...got.map((e) => e.end)) : 0],
    ["verify", files ? files.end : 0],
    ["set-up", firstFavicon.readyMs],
    ["wait", runStartMs],
    ["first step", ends.length ? ends[0] : runStartMs],
    [`${Math.max(steps - 1, 0)} steps`, ends.length ? ends[ends.length - 1] : runStartMs],
    ["finish", doneMs],
  ];
  let at = 0;
  return moments.map(([name, t]) => {
    const ms = Math.max(0, t - at);
    at += ms;
    return [name, ms];
  });
}

// What ran alongside the phases, ms since navigation or ms: each file's fetch and sha256, the kernels' fetch and
// compile, the worker's start, its init and the weights' unpacking in it; per step, the wall time, the kernels' time
// in the worker and the page's own time between steps (previews), and the live icons.
function firstFaviconDetail(result) {
  const nav = /** @type {any} */ (performance.getEntriesByType("navigation")[0]);
  const resources = /** @type {any[]} */ (performance.getEntriesByType("resource"));
  const scripts = resources.filter((e) => /\.js$/.test(new URL(e.name).pathname) && e.startTime < appStartMs);   // imported or preloaded
  const mean = (v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
  const tl = result.timeline || { stepEndMs: [], hostMs: [], initEndMs: 0 };
  const ends = tl.stepEndMs;
  const sha = spans("sha256");
  const kernelMs = result.kernelMs || [];
  return {
    htmlMs: nav ? nav.responseEnd : 0,
    domInteractiveMs: nav ? nav.domInteractive : 0,
    modules: scripts.length,
    modulesStartMs: scripts.length ? Math.min(...scripts.map((e) => e.startTime)) : 0,
    modulesEndMs: scripts.length ? Math.max(...scripts.map((e) => e.responseEnd)) : 0,
    appStartMs,
    manifest: span("manifest"),
    verifyManifest: span("verify manifest"),
    cache: spans("cache"),
    fetch: spans("fetch"),
    sha256Ms: sha.reduce((a, e) => a + e.end - e.start, 0),
    verifyFiles: span("verify files"),
    kernels: span("kernels"),
    worker: span("worker"),
    init: span("init"),
    unpack: span("unpack"),
    runStartMs: tl.startMs,
    batchMs: tl.initEndMs - tl.startMs,                       // the run's batch buffers and its "init" program
    firstStepMs: ends.length ? ends[0] - tl.initEndMs : 0,
    stepMs: ends.length > 1 ? (ends[ends.length - 1] - ends[0]) / (ends.length - 1) : 0,   // steps 2 .. n, wall
    kernelFirstMs: kernelMs.length ? kernelMs[0] : 0,
    kernelMs: mean(kernelMs.slice(1)),                        // steps 2 .. n, the kernels in the worker
    hostMs: mean(tl.hostMs),                                  // the page's own ms after each step
    icons: (result.iconMs || []).length,
    iconMs: (result.iconMs || []).reduce((a, b) => a + b, 0),
  };
}

/**
 * The "model" picker: the entries of bundles.json ([{url, label}], URLs relative to the page, same origin) whose
 * manifest.json answers here. Shown only when two or more do (`ditweb serve` mounts bundles/; a `ditweb site`
 * folder holds one bundle and no bundles.json). Choosing one reloads the page with ?bundle=URL.
 * @returns {Promise<number>} how many the picker offers (0: hidden)
 */
async function listModels() {
  let entries;
  try {
    const r = await fetch(new URL("bundles.json", document.baseURI), { cache: "no-cache" });
    if (!r.ok) return 0;
    entries = await r.json();
  } catch {
    return 0;
  }
  if (!Array.isArray(entries)) return 0;
  /** @type {{url: URL, label: string}[]} */
  const models = [];
  for (const e of entries) {
    if (!e || typeof e.url !== "string" || typeof e.label !== "string") continue;
    const url = new URL(e.url, document.baseURI);
    if (url.origin !== location.origin) continue;
    try {
      const head = await fetch(new URL("manifest.json", url), { method: "HEAD", cache: "no-cache" });
      if (head.ok) models.push({ url, label: e.label });
    } catch {
      // not served here
    }
  }
  if (models.length < 2) return 0;
  const select = $("model");
  models.forEach((m, i) => option(select, i, m.label));
  const current = models.findIndex((m) => m.url.href === bundleUrl.href);
  if (current < 0) option(select, models.length, `other: ${bundleUrl.pathname}`);
  select.value = String(current < 0 ? models.length : current);
  select.addEventListener("change", () => {
    const m = models[Number(select.value)];
    if (!m) return;
    params.set("bundle", m.url.pathname);
    params.delete("class");
    params.delete("negative");
    location.search = params.toString();
  });
  $("model-label").hidden = false;
  return models.length;
}

// A named bundle: the prompt box (suggestions from the vocabulary as you type, what it resolves to in its title)
// and the style picker replace the class picker.
function setUpPrompt(vocab) {
  const last = vocab.levels.length - 1;
  if (last >= vocab.nested) {
    vocab.names[last].forEach((name) => option($("style"), name, name));
    if (vocab.names[last].includes(DEFAULT_STYLE)) /** @type {HTMLSelectElement} */ ($("style")).value = DEFAULT_STYLE;
    if (params.has("style")) $("style").value = params.get("style");
    $("style-label").hidden = false;
  }
  const input = $("prompt");
  const update = () => {
    const list = $("suggestions");
    list.replaceChildren();
    for (const name of vocab.suggest(input.value)) option(list, name, name);
    try {
      input.title = vocab.describe(vocab.resolve(input.value));
      input.setCustomValidity("");
    } catch (e) {
      input.title = e.message;
    }
  };
  input.addEventListener("input", update);
  // the suggestions (some tens of ms on a first visit) need not delay a run: with ?autorun they are made after the
  // first step, while the worker computes the next ones; else once this task is done
  if (params.has("autorun") && !firstFavicon.shown) afterFirstStep = update;
  else setTimeout(update, 0);
}

/**
 * The bullets of the card's "**Attribution**" list (export/card.py writes it), as text.
 * @param {string} card the bundle's README.md
 * @returns {string[]}
 */
export function attributionLines(card) {
  const lines = card.split(/\r?\n/);
  const start = lines.findIndex((l) => l.startsWith("**Attribution**"));
  if (start < 0) return [];
  const out = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("- ")) out.push(line.slice(2).trim());
    else if (line.trim() !== "" || out.length) break;
  }
  return out;
}

// One attribution line as footer content: its http(s) URLs become links (text nodes only: no HTML from the card).
function attributionItem(text) {
  const li = document.createElement("li");
  let last = 0;
  for (const m of text.matchAll(/https?:\/\/[^\s)]+/g)) {
    li.append(text.slice(last, m.index));
    const a = document.createElement("a");
    a.href = a.textContent = m[0];
    a.rel = "license noopener";
    li.append(a);
    last = m.index + m[0].length;
  }
  li.append(text.slice(last));
  return li;
}

/**
 * Fill the footer from the bundle's card (verified against the manifest's sha256; after a WebGPU load it comes from
 * the Cache API, no second download). A page written by `ditweb site` has the footer in its HTML already
 * (data-attribution, webserve/site.py): nothing is fetched. Without a card, or without an attribution list in it, the
 * footer says where to look.
 * @param {any} [manifest] the loaded bundle's; fetched when absent (the page could not load the bundle)
 */
async function showAttribution(manifest) {
  const footer = $("attribution");
  if (footer.dataset.attribution !== undefined) return;
  try {
    const m = manifest || await fetchManifest(bundleUrl);
    const entry = m.files && m.files["README.md"];
    if (!entry) return;
    const card = new TextDecoder().decode(await fetchVerified(bundleUrl, "README.md", entry.sha256));
    const lines = attributionLines(card);
    if (!lines.length) return;
    const list = document.createElement("ul");
    list.append(...lines.map(attributionItem));
    const intro = document.createElement("p");
    intro.append("Training data of this model (", Object.assign(document.createElement("a"), { href: new URL("README.md", bundleUrl).href, textContent: "model card" }), "):");
    footer.replaceChildren(intro, list);
    footer.dataset.attribution = String(lines.length);
  } catch (e) {
    console.warn(`no attribution shown: ${e.message}`);
  }
}

// What web/early.js started before the modules ran ({manifest, worker}: manifest.json asked for, the WebAssembly
// worker), or {}; either way the name is taken, so that an early.js that runs only now starts nothing.
function takeEarly() {
  const w = /** @type {any} */ (window), early = w.ditwebEarly || {};
  w.ditwebEarly = null;
  return early;
}

async function main() {
  /** @type {any} */ (window).ditwebModels = listModels();   // in parallel with loading the bundle; it only adds the picker
  if (runtime === "webgpu") {   // WebGPU asked for: say so plainly when it is missing
    const support = await checkWebGPU();
    if (!support.ok) {
      /** @type {any} */ (window).ditwebAttribution = showAttribution();
      show(`${support.message} The page keeps its static favicon.`, "error");
      setState(support.reason);
      return;
    }
  }
  // auto: choose before downloading anything, so a browser that can run neither path fetches nothing
  let chosen = { runtime, reason: "asked for" };
  const early = takeEarly();
  try {
    if (runtime === "auto") chosen = await chooseRuntime();
    if (early.worker && chosen.runtime !== "wasm") early.worker.worker.terminate();   // WebGPU runs: not needed
    show(`loading the bundle from ${bundleUrl.pathname} ...`);
    firstFavicon.loadStartMs = performance.now();
    bundle = await loadBundle(bundleUrl, {
      runtime: chosen.runtime,
      plan: params.get("plan") === "default" ? "default" : "auto",   // WebGPU kernel plan (web/tune.js)
      manifestFetch: early.manifest,
      // the preset label needs no vocabulary for the first favicon; another bundle (?bundle=) most likely has another
      // vocabulary, which its first run would then wait for instead of downloading it alongside
      vocabulary: presetFits() && !params.has("bundle") ? "later" : "now",
      earlyWorker: chosen.runtime === "wasm" ? early.worker : null,
      onProgress: ({ file, done, total }) => show(`loading the bundle: ${done} / ${total} files verified (${file})`),
      onDeviceLost: (info) => show(`The GPU device was lost (${info.message || info.reason}); a new device is created and the work goes on.`, "warn"),
    });
  } catch (e) {
    console.error(e);
    if (early.worker && !early.worker.taken) early.worker.worker.terminate();
    /** @type {any} */ (window).ditwebAttribution = showAttribution();
    if (e.name === "UnsupportedError") {
      show(`${e.message} The page keeps its static favicon.`, "error");
      setState("unsupported");
    } else if (e.name === "BundleError") {
      show(`The bundle at ${bundleUrl.pathname} failed verification: ${e.message}`, "error");
      setState("bundle-error");
    } else {
      show(`The bundle at ${bundleUrl.pathname} could not be loaded: ${e.message}`, "error");
      setState("error");
    }
    return;
  }
  firstFavicon.readyMs = performance.now();
  const t0 = firstFavicon.readyMs;
  /** @type {any} */ (window).ditwebBundle = bundle;
  /** @type {any} */ (window).ditwebAttribution = showAttribution(bundle.manifest);
  show("");
  $("runtime").textContent = `${bundle.runtime} (${chosen.reason})`;
  $("adapter").textContent = bundle.adapterDescription;
  $("bundle").textContent = bundle.describe();
  setUpForm();
  $("go").disabled = false;
  setState("ready");
  measure("page set-up", t0);
  if (params.has("autorun")) generate();
}

// The form for the loaded bundle: class pickers, or a named bundle's prompt boxes (their suggestions and the style
// picker once its vocabulary is in: now, or after the first favicon where the preset label drew it); ?class=1&seed=7...
// preset the fields.
function setUpForm() {
  if (bundle.named) {
    $("class-label").hidden = true;
    $("prompt-label").hidden = false;
    $("negative-label").hidden = true;
    $("negative-prompt-label").hidden = false;
    for (const id of ["prompt", "negative-prompt"]) $(id).addEventListener("focus", () => vocabularyReady().catch(() => {}), { once: true });
  } else {
    bundle.classNames.forEach((name, i) => option($("class"), i, name));
    bundle.classNames.forEach((name, i) => option($("negative"), i, name));
  }
  for (const key of ["class", "seed", "steps", "cfg", "negative", "sampler", "prompt", "style"]) {
    if (params.has(key)) $(key === "negative" && bundle.named ? "negative-prompt" : key).value = params.get(key);
  }
  if (bundle.vocab) setUpPrompt(bundle.vocab);
  else if (bundle.named && !params.has("autorun")) vocabularyReady().catch(() => {});
}

$("controls").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
$("stop").addEventListener("click", () => controller && controller.abort());
$("reseed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 32)); });
main().catch((e) => { console.error(e); show(e.message, "error"); setState("error"); });

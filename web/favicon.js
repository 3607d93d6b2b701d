// The favicon: model-space images -> RGBA bytes -> a canvas, a PNG data URL and the page's <link rel="icon">, and
// diffuseFavicon, the animation of that link through the denoising steps of a bundle's sample() (either runtime).

// x: Float32Array (C, H, W) in [-1, 1] for one image -> Uint8ClampedArray (H, W, 4).
// Same rounding as dit_model/images.py to_uint8: clip((x + 1) * 127.5 + 0.5) truncated;
// C = 4 is RGBA, 3 is RGB (opaque), 1 is grey, other C keep the first 3 (as the Python side).
export function toRGBA(x, C, H, W) {
  const out = new Uint8ClampedArray(H * W * 4);
  const byte = (v) => Math.min(255, Math.max(0, Math.floor((v + 1) * 127.5 + 0.5)));
  for (let p = 0; p < H * W; p++) {
    if (C === 1) {
      const g = byte(x[p]);
      out[4 * p] = g; out[4 * p + 1] = g; out[4 * p + 2] = g; out[4 * p + 3] = 255;
    } else {
      for (let c = 0; c < 3; c++) out[4 * p + c] = byte(x[c * H * W + p]);
      out[4 * p + 3] = C === 4 ? byte(x[3 * H * W + p]) : 255;
    }
  }
  return out;
}

// A decoder's images (N, C, H, W) -> {image, rgba: one (H, W, 4) per image, width, height}, a sample() result's pictures.
export function decodedPictures(image, [C, H, W], N) {
  const per = C * H * W;
  const rgba = [];
  for (let n = 0; n < N; n++) rgba.push(toRGBA(image.subarray(n * per, (n + 1) * per), C, H, W));
  return { image, rgba, width: W, height: H };
}

// Draw RGBA (H, W, 4) onto a canvas of any size, nearest-neighbour (favicons are pixel art).
export function drawRGBA(canvas, rgba, W, H) {
  const small = document.createElement("canvas");
  small.width = W; small.height = H;
  small.getContext("2d").putImageData(new ImageData(rgba, W, H), 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  return small;
}

export function toDataURL(rgba, W, H) {
  return drawRGBA(document.createElement("canvas"), rgba, W, H).toDataURL("image/png");
}

// The page's <link rel="icon">, created when absent; remembers the static favicon it replaced.
/** @returns {HTMLLinkElement} */
export function faviconLink(doc = document) {
  /** @type {HTMLLinkElement | null} */
  let link = doc.querySelector('link[rel~="icon"]');
  if (!link) {
    link = doc.createElement("link");
    link.rel = "icon";
    doc.head.appendChild(link);
  }
  if (!link.dataset.staticHref) link.dataset.staticHref = link.getAttribute("href") || "";
  return link;
}

export function setFavicon(rgba, W, H, doc = document) {
  const link = faviconLink(doc);
  link.type = "image/png";
  link.href = toDataURL(rgba, W, H);
  return link.href;
}

export function restoreStaticFavicon(doc = document) {
  /** @type {HTMLLinkElement | null} */
  const link = doc.querySelector('link[rel~="icon"]');
  if (link && link.dataset.staticHref !== undefined) link.href = link.dataset.staticHref;
}

// ------------------------------------------------------------------ the animation

// Animate the page's <link rel="icon"> through the denoising steps (x_t after each step) and
// leave the final image as the favicon; the same on both runtimes. opts: everything sample() takes,
// plus canvas (drawn too), timeBudgetMs (stop with a "TimeoutError" once a run takes longer; the
// signal aborts as before) and remember (default true: the drawn favicon is kept in localStorage per
// bundle and shown at once on the next visit, before a new one is drawn) and iconEveryMs (default 100: the
// <link rel="icon"> follows the steps at most this often, the canvas every step; the final image always). Each
// icon is a PNG encode plus the browser's decode on the main thread, which competes with the WebAssembly worker
// threads for the visitor's cores: every step's icon cost 6 ms a step at 2 threads on 2 cores; tabs show a few
// frames a second at most.
// On failure the previous favicon (the remembered one, else the static one) is kept and the error thrown.
export async function diffuseFavicon(bundle, opts = {}) {
  faviconLink();   // remember the static favicon before the first frame
  const { canvas, onStep, timeBudgetMs } = opts;
  const iconEveryMs = opts.iconEveryMs ?? 100;
  let iconAt = -Infinity;
  const icons = [];                    // ms of each live icon (PNG encode, <link> update): result.iconMs
  const remember = opts.remember !== false;
  const key = `ditweb-favicon:${bundle.url}`;
  const stored = remember ? rememberedFavicon(key) : null;
  if (stored) faviconLink().href = stored;
  const controller = new AbortController();
  const stop = (reason) => controller.abort(reason);
  if (opts.signal) {
    if (opts.signal.aborted) stop(opts.signal.reason);
    else opts.signal.addEventListener("abort", () => stop(opts.signal.reason), { once: true });
  }
  const timer = timeBudgetMs > 0 ? setTimeout(() => stop("budget"), timeBudgetMs) : null;
  try {
    const result = await bundle.sample({
      ...opts,
      signal: controller.signal,
      n: 1,
      preview: true,
      onStep: (info) => {
        let dataURL = null;
        if (info.rgba) {
          const now = performance.now();
          if (now - iconAt >= iconEveryMs) {
            dataURL = setFavicon(info.rgba[0], info.width, info.height);
            iconAt = now;
            icons.push(performance.now() - now);
          }
          if (canvas) drawRGBA(canvas, info.rgba[0], info.width, info.height);
        }
        if (onStep) onStep({ ...info, dataURL, runtime: bundle.runtime });
      },
    });
    result.dataURL = setFavicon(result.rgba[0], result.width, result.height);
    if (canvas) drawRGBA(canvas, result.rgba[0], result.width, result.height);
    result.iconMs = icons;
    if (onStep) onStep({ step: opts.steps ?? 25, steps: opts.steps ?? 25, msPerStep: result.msPerStep, dataURL: result.dataURL, runtime: result.runtime });
    if (remember) {
      try { localStorage.setItem(key, result.dataURL); } catch { /* storage full or blocked: nothing to remember */ }
    }
    return result;
  } catch (e) {
    if (stored) faviconLink().href = stored; else restoreStaticFavicon();
    if (e.name === "AbortError" && controller.signal.reason === "budget") {
      throw new DOMException(`the favicon took longer than its time budget of ${timeBudgetMs} ms`, "TimeoutError");
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function rememberedFavicon(key) {
  try {
    const v = localStorage.getItem(key);
    return v && v.startsWith("data:image/png;base64,") ? v : null;
  } catch {
    return null;
  }
}

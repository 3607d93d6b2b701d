// Model-space images -> RGBA bytes -> a canvas, a PNG data URL and the page's <link rel="icon">.

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

"""A 25-step latent favicon against today's pixel favicon on the WebAssembly path, in one headless Chromium run: the
shipped named bundle (bundles/named: Favicon-T/4 on 32 x 32 pixels) and a latent bundle (a Favicon-T/1 checkpoint on
the favicon autoencoder's 8 x 8 x 8 latents, exported with --vae: its decoder and preview map), one image, prompt
hippo, cfg 4, previews on (the page's diffuseFavicon: the preview map every step for the latent bundle, the decoder
once at the end). One thread, timed in turns so background load hits both alike; the median over the repetitions of
the whole sample() call (decode included), of its ms per step and of the decode. Not a test: the machine is shared.

    .venv/bin/ditweb export /work/runs/latent-t1/ckpt.pt /tmp/latent-t1 --dtype f16 --vae models/favicon-vae.safetensors
    .venv/bin/python bench/web/latent_time.py --latent /tmp/latent-t1 --label "the latent-t1 run's ckpt.pt" [--reps 5]

Writes bench/results/web-latent.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import format_table, save_text, shown_path  # noqa: E402
from webserve.browser import WEB_DIR, chromium, local_server  # noqa: E402

RESULTS = REPO / "bench" / "results" / "web-latent.md"

TIME_JS = """async ([reps, steps]) => {
    const { loadBundle } = await import('/ditweb.js');
    const loaded = { pixel: await loadBundle('/pixel/', { runtime: 'wasm', threads: 1, useCache: false }),
                     latent: await loadBundle('/latent/', { runtime: 'wasm', threads: 1, useCache: false }) };
    const out = {};
    for (let r = 0; r < reps + 1; r++)                     // the first turn warms up
      for (const [name, b] of Object.entries(loaded)) {
        let previews = 0;
        const t0 = performance.now();
        const res = await b.sample({ prompt: 'hippo', steps, cfg: 4, seed: r, preview: true, onStep: (i) => { if (i.rgba) previews++; } });
        const ms = performance.now() - t0;
        if (r === 0) continue;
        const o = (out[name] = out[name] || { total: [], perStep: [], decode: [], previews, width: res.width });
        o.total.push(ms); o.perStep.push(res.msPerStep); o.decode.push(res.decodeMs ?? 0);
      }
    for (const b of Object.values(loaded)) b.dispose();
    return out;
}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", required=True, help="the latent bundle folder (export --vae)")
    ap.add_argument("--label", help="what the latent bundle is, for the table (default: its folder's name)")
    ap.add_argument("--pixel", default=str(REPO / "bundles" / "named"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    with local_server({"/": WEB_DIR, "/pixel/": Path(args.pixel), "/latent/": Path(args.latent)}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.goto(url + "favicon.svg")
        res = page.evaluate(TIME_JS, [args.reps, args.steps])
    load1 = os.getloadavg()[0]
    med = {k: {m: statistics.median(v[m]) for m in ("total", "perStep", "decode")} for k, v in res.items()}
    rows = [[name, f"{res[name]['width']} px", f"{res[name]['previews']}", f"{m['total']:.0f}", f"{m['perStep']:.1f}",
             f"{m['decode']:.1f}", f"{m['total'] / med['pixel']['total']:.2f}x"] for name, m in med.items()]
    lines = ["# A latent favicon against a pixel favicon on WebAssembly (bench/web/latent_time.py)", "",
             f"pixel `{shown_path(args.pixel)}`, latent {args.label or '`' + shown_path(args.latent) + '`'}; {args.steps} steps, cfg 4, one image, "
             f"previews on, one thread, median of {args.reps} turns; load average {load0:.1f} -> {load1:.1f} (2 cores, shared).", "",
             format_table(["bundle", "image", "previews", "ms per favicon", "ms per step", "decode ms", "vs pixel"], rows)]
    save_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""(Re)train every judge of the named-emoji evaluation and write bench/results/judges.md (slow; not in CI).

    OMP_NUM_THREADS=1 .venv/bin/python bench/judges.py

  - one identity judge per style (models/judge_identity_<style>.safetensors): trained on every image
    of the other styles, its ceiling = top-1 / top-5 on the base images of the style it never saw;
  - the category judge on all styles (models/judge_styles.safetensors), its ceiling on the 20% of
    identities it never saw (all styles), and the FD floor per style;
  - the evaluation list models/eval_emoji.json (100 identities, fixed seed, hippopotamus first);
  - for comparison, the pixel nearest neighbour: each base image of the held-out style against every
    image of the other styles (RGBA RMSE, flips included).
Everything runs on one thread (torch.set_num_threads(1)); the times in the table are wall clock.
See docs/evaluation.md, "Named emoji: the identity judges"."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from dit_model import evaluate as ev
    from dit_model import identity as idj
    from dit_model.bench import RESULTS, publish, save_text
    from dit_model.emoji import STYLES

    t_all = time.time()
    data = idj.load_data()
    print(f"data: {len(data.images)} images, {len(data.identities)} identities, styles {', '.join(data.styles)}")

    ev_list = idj.make_eval_list(data)
    save_text(idj.EVAL_LIST, json.dumps(ev_list, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {idj.EVAL_LIST}: {ev_list['n']} identities, first {ev_list['emoji'][0]['name']}")

    results = {"identity": [], "baseline": {}}
    for s in STYLES:
        t0 = time.time()
        results["baseline"][s] = idj.pixel_nn_baseline(data, s)
        print(f"pixel nearest neighbour, {s} vs the other styles: top-1 {results['baseline'][s][0]:.1f}% "
              f"top-5 {results['baseline'][s][1]:.1f}% ({time.time() - t0:.0f}s)")
    # the baseline quoted in the brief: Noto queries against Twemoji references only
    two = data.select(np.isin(data.style, [data.styles.index("twemoji"), data.styles.index("noto")]))
    results["baseline_noto_vs_twemoji"] = idj.pixel_nn_baseline(two, "noto")
    print(f"pixel nearest neighbour, noto vs twemoji only: top-1 {results['baseline_noto_vs_twemoji'][0]:.1f}% "
          f"top-5 {results['baseline_noto_vs_twemoji'][1]:.1f}%")

    for s in STYLES:
        results["identity"].append(idj.train_identity_judge(data, s))

    results["styles"] = idj.train_styles_judge(data)
    results["seconds"] = round(time.time() - t_all)
    report(data, results)


def report(data, results):
    """Floors per style, then the table (results: the training part's numbers)."""
    import numpy as np
    from dit_model import evaluate as ev
    from dit_model import identity as idj
    from dit_model.bench import RESULTS, publish, save_text
    from dit_model.emoji import STYLES
    clf, _ = idj.load_styles_judge(data)
    x = idj._training_tensor(data)
    base = idj.is_base(data)
    y = idj.category_labels(data)
    results["floors"] = {}
    for s in STYLES:
        idx = np.flatnonzero((data.style == data.styles.index(s)) & base)
        _, f = ev.predict(clf, x[idx])
        counts = np.minimum(16, np.bincount(y[idx], minlength=len(data.categories)) // 2)   # Fluent has 8 flags
        ref = idj.MatchedReference(f, y[idx], counts, ev.FLOOR_PAIRS, list(data.categories))
        results["floors"][s] = (ref.floor, ref.spread, counts.tolist())
        print(f"FD floor, {s}, {counts.tolist()} per category: {ref.floor:.2f} ± {ref.spread:.2f}")
    save_text(RESULTS / "judges.json", json.dumps(results, indent=1) + "\n")

    header = ["judge", "trained on", "tested on (never seen)", "top-1 %", "top-5 %", "same-style sanity top-1 / top-5 %",
              "pixel nearest neighbour top-1 / top-5 %", "parameters", "file", "training time"]
    rows = []
    for r in results["identity"]:
        s = r["style"]
        b = results["baseline"][s]
        rows.append([f"identity, without {s}", f"{r['train_images']} images of the other styles",
                     f"{r['held_out']['n']} base images of {s}", f"{r['held_out']['top1']:.1f}", f"{r['held_out']['top5']:.1f}",
                     f"{r['sanity']['top1']:.1f} / {r['sanity']['top5']:.1f}", f"{b[0]:.1f} / {b[1]:.1f}",
                     f"{r['parameters']:,}", f"{r['bytes'] / 1e6:.2f} MB (f16)", f"{r['seconds'] / 60:.1f} min"])
    c = results["styles"]
    rows.append(["category (9), all styles", f"{c['train_images']} base images, 80% of the identities",
                 f"{c['held_out']} base images of the other 20% of identities", f"{c['ceiling']:.1f} (balanced)", "-",
                 "; ".join(f"{k} {v:.1f}" for k, v in c["per_style"].items()), "-", "66k",
                 f"{idj.STYLES_JUDGE.stat().st_size / 1e6:.2f} MB", f"{c['seconds'] / 60:.1f} min"])
    nb = results["baseline_noto_vs_twemoji"]
    floors = "; ".join(f"{s} {m:.2f} ± {sd:.2f}" + ("" if min(k) == 16 else f" ({k[-1]} flags)")
                       for s, (m, sd, k) in results["floors"].items())
    all_held = "; ".join(f"{r['style']} {r['held_out_all']['top1']:.1f} / {r['held_out_all']['top5']:.1f} "
                         f"({r['held_out_all']['n']} images)" for r in results["identity"])
    notes = (f"`OMP_NUM_THREADS=1 .venv/bin/python bench/judges.py`, one thread, on a 2-core machine shared with a DiT "
             f"training run (total {results['seconds'] / 60:.0f} min). Identity judges: {idj.IDENTITY_RECIPE}; test "
             f"time averages the logits of the image and its mirror image. Top-1 / top-5 among all "
             f"{len(data.identities)} identities on the base (no skin tone) images of the style the judge never saw: the "
             f"cross-style ceiling of that style. With the skin-tone images too: {all_held}. Sanity: the base images of "
             f"the styles it trained on (a fit check, not a held-out score). Pixel nearest neighbour: each held-out image's "
             f"nearest image (RGBA RMSE, mirror images included) among every image of the other styles; Noto against "
             f"Twemoji alone gives {nb[0]:.1f} / {nb[1]:.1f}. Category judge: {idj.STYLES_RECIPE}; balanced accuracy per "
             f"style in the sanity column. FD floor (category judge features, base images of one style, 16 per category or half "
             f"what the style has, "
             f"{ev.FLOOR_PAIRS} pairs): {floors}. See docs/evaluation.md.")
    publish("judges", "The named-emoji judges (bench/judges.py)", header, rows, notes, RESULTS)


if __name__ == "__main__":
    main()

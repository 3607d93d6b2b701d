"""The model card a bundle carries: README.md, rendered at export from the checkpoint's card record and an optional
card file (dit_model/card.py), listed in the manifest's files with its size and sha256 like every file. Whatever the
record does not say is written as unknown, never guessed."""
from __future__ import annotations

from dit_model.card import RECIPE_KEYS

CARD_FILE = "README.md"
DEFAULT_GUIDANCE = 4.0          # `ditweb sample --cfg` and the page's guidance scale when not given
UNKNOWN = "unknown (not recorded in the checkpoint; give it with `ditweb export --card FILE`)"
INTENDED_USE = [
    "Drawing small decorative images (favicons, placeholders) in the style of the training data, in the browser "
    "(WebGPU or WebAssembly) or with wgpu-py, e.g. a site's own favicon drawn on the visitor's device.",
    "Teaching and research: a complete, checked diffusion transformer from training to WGSL kernels.",
]
OUT_OF_SCOPE = [
    "Passing samples off as the original emoji sets or as any company's artwork, or using them as logos or "
    "trademarks.",
    "Anything that needs a faithful or recognisable depiction (people, flags, symbols with meaning): samples are "
    "approximate and can be wrong.",
    "Publishing samples or the weights without the attribution the data's licences require (Training data, above).",
]
LIMITS = [
    "Draws images of one small size only (above); a sample's quality varies with the seed and the label (the "
    "evaluation above measures it).",
    "Knows only its labels; a small model trained on a few thousand images, it can repeat biases and gaps of its "
    "data (e.g. a style that lacks an emoji).",
    "Measured near copies of training images are in the evaluation; none is guaranteed absent for every seed.",
]


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def _hours(seconds) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def _texts(v) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else [str(v)] if v else []


def labels_section(cfg, class_names, vocab) -> list[str]:
    if vocab is not None:
        lines = [f"A named model: labels at {len(vocab.levels)} levels, summed "
                 f"({', '.join(f'{lv} {n:,}' for lv, n in zip(vocab.levels, vocab.sizes))}); every name, short name "
                 "and keyword is in `vocabulary.json`. A prompt (`--prompt hippo`) resolves to a label by name.", ""]
        for lv, names in zip(vocab.levels, vocab.names):
            if len(names) <= 12:
                lines.append(f"- {lv}: {', '.join(names)}")
        return lines
    shown = ", ".join(class_names[:40]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 40 else "")
    return [f"{cfg.num_classes} classes: {shown}."]


def compute_lines(card: dict, indent: str = "") -> list[str]:
    c = card.get("compute") if isinstance(card.get("compute"), dict) else {}
    steps, seen = card.get("steps"), card.get("images_seen")
    out = [f"{indent}- steps: {steps:,}" if isinstance(steps, int) else f"{indent}- steps: unknown",
           f"{indent}- images seen: {seen:,}" if isinstance(seen, int) and seen else f"{indent}- images seen: unknown"]
    if c:
        parts = [str(c.get("device", "unknown device")), f"{c.get('processes', 1)} process(es)"]
        if c.get("precision"):
            parts.append(f"precision {c['precision']}")
        if c.get("train_seconds") is not None:
            parts.append(f"{_hours(c['train_seconds'])} in training steps")
        if c.get("sittings"):
            parts.append(f"{c['sittings']} sitting(s)")
        if c.get("untimed_steps"):
            parts.append(f"{c['untimed_steps']:,} earlier steps untimed")
        if c.get("note"):
            parts.append(str(c["note"]))
        out.append(f"{indent}- compute: {'; '.join(parts)}")
    else:
        out.append(f"{indent}- compute: unknown")
    return out


def data_section(card: dict) -> list[str]:
    data = card.get("data") if isinstance(card.get("data"), dict) else None
    if not data:
        return [f"Training data: {UNKNOWN}. Whoever publishes these weights must name the data and give the "
                "attribution its licences require."]
    lines = [str(data.get("description", "")).strip() or "(no description)"]
    sources = [s for s in data.get("sources", []) if isinstance(s, dict)]
    if not sources:
        lines += ["", f"Sources and licences: {UNKNOWN}."]
        return lines
    lines += [""] + _table(["source", "package", "licence"], [[s.get("name", "?"), s.get("package", "?"),
                                                               s.get("licence", "unknown")] for s in sources])
    lines += ["", "**Attribution** (required by the licences; keep it with the weights and on pages that show "
                  "samples):", ""]
    lines += [f"- {s.get('attribution') or s.get('name', '?') + ': attribution unknown'}" for s in sources]
    return lines


def recipe_section(card: dict) -> list[str]:
    r = card.get("recipe") if isinstance(card.get("recipe"), dict) else None
    if not r:
        return [f"Recipe: {UNKNOWN}."]
    keys = [k for k in RECIPE_KEYS if k in r] + sorted(k for k in r if k not in RECIPE_KEYS)
    return _table(["option", "value"], [[k.replace("_", " "), r[k]] for k in keys])


def warm_start_lines(card: dict) -> list[str]:
    out, w, depth = [], card.get("warm_start"), 0
    while isinstance(w, dict) and depth < 8:
        out.append(f"{'  ' * depth}- warm-started from `{w.get('from', '?')}`, which was trained:")
        out += compute_lines(w, "  " * (depth + 1))
        w, depth = w.get("warm_start"), depth + 1
    return out


def eval_section(card: dict) -> list[str]:
    tables = [e for e in card.get("eval") or [] if isinstance(e, dict)]
    if not tables:
        return ["No evaluation recorded (`ditweb eval CKPT --card` adds its table, then export again).", ""]
    out = []
    for e in tables:
        out += [f"**{e.get('title', 'evaluation')}** ({e.get('date', 'undated')})", ""]
        out += _table(e.get("header", []), e.get("rows", []))
        if e.get("notes"):
            out += ["", str(e["notes"])]
        out.append("")
    return out


def render_card(name: str, cfg, class_names, vocab, dtype: str, params: int, card: dict | None,
                exporter: str, format_version: int) -> str:
    """README.md of a bundle: model, labels, data (sources, licences, attribution), recipe, compute, evaluation,
    the default guidance scale, intended use and limits."""
    card = card or {}
    guidance = card.get("guidance_scale", DEFAULT_GUIDANCE)
    kind = "named" if vocab is not None else "class-conditional"
    lines = [f"# {card.get('name') or name}: model card", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    lines += [f"A {kind} Diffusion Transformer (DiT) that draws {cfg.input_size}x{cfg.input_size} "
              f"{'RGBA' if cfg.in_channels == 4 else f'{cfg.in_channels}-channel'} images, exported by {exporter} "
              f"as an {dtype} shader bundle (format {format_version}): `manifest.json`, the weights and WGSL kernels "
              f"beside this file. Run it with `ditweb sample BUNDLE --runtime wgpu`, `ditweb serve BUNDLE`, or the "
              f"browser runtime.", "", "## Model", ""]
    lines += _table(["", ""], [
        ["architecture", f"DiT, patch {cfg.patch_size}, hidden {cfg.hidden_size}, depth {cfg.depth}, "
                         f"{cfg.num_heads} heads, {cfg.conditioning} conditioning"],
        ["parameters", f"{params:,}"], ["prediction", cfg.prediction],
        ["output", "eps/v and learned variance" if cfg.learn_sigma else "eps/v"],
        ["weights in this bundle", dtype + (" (the blocks' Linear weights in 4 bits with a step per 32 inputs, "
                                            "unpacked to int8 at load; math in f32)" if dtype == "int4" else
                                            " (math in f32)" if dtype != "f32" else "")]])
    lines += ["", "## Labels", ""] + labels_section(cfg, class_names, vocab)
    lines += ["", "## Training data", ""] + data_section(card)
    lines += ["", "## Training recipe", ""] + recipe_section(card)
    lines += ["", "## Compute", ""] + compute_lines(card) + warm_start_lines(card)
    lines += ["", "## Evaluation", ""] + eval_section(card)
    lines += ["## Use", "", f"Default guidance scale: **{guidance:g}** (classifier-free guidance; "
              f"`ditweb sample --cfg`, the page's guidance scale; 1 = no guidance). Sampling: 25-50 DDIM steps.", "",
              "Intended use:", ""] + [f"- {t}" for t in _texts(card.get("intended_use")) or INTENDED_USE]
    lines += ["", "Not for:", ""] + [f"- {t}" for t in OUT_OF_SCOPE]
    lines += ["", "## Limits", ""] + [f"- {t}" for t in LIMITS + _texts(card.get("limits"))]
    lines += ["", "## Licence", "", "The ditweb code is MIT-licensed. These weights are derived from the training "
              "data above: using or publishing them, or images made with them, follows the data's licences "
              "(the attribution above)."]
    return "\n".join(lines) + "\n"

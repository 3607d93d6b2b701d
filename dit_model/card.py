"""What a model card needs, recorded where the facts are known: the training data's sources with their licences
and required attribution (docs/data.md), the recipe, steps, images seen and compute (recorded by the Trainer in
every checkpoint, carried into .safetensors weights by save_weights), and `ditweb eval`'s tables (added to a card
file beside the checkpoint). `ditweb export` renders it as the bundle's README.md (export/card.py).

A card record is a JSON object (CARD_VERSION 1):
  data        {"sources": [source, ...], "description": str}   source: name, package, licence, attribution, url
  recipe      the training options that define the model (preset, prediction, loss weighting, lr, EMA, ...)
  steps, images_seen
  compute     {"device", "processes", "precision", "train_seconds", "sittings"}
  warm_start  {"from": path, + the steps, images_seen, compute, data and warm_start of the weights it started from}
  eval        [{"title", "date", "header", "rows", "notes"}, ...]
  and, from a card file only: name, description, guidance_scale, intended_use, limits (lists of text)
Standard library only: the card is read by `ditweb export` and written by `ditweb eval` alike."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ditformat.errors import DitwebError
from ditformat.atomic import write_text_atomic

CARD_VERSION = 1
CARD_SUFFIX = ".card.json"

# The data sets (docs/data.md, "Sources and licences"; the attribution lines are docs/data.md's, verbatim).
_RESIZED = "Changes: resized to 32x32 (premultiplied alpha)."
_SOURCE_ROWS = (  # key, name, npm package, licence, url, attribution ({url} stands for the url)
    ("twemoji", "Twemoji graphics", "emoji-datasource-twitter@16.0.0 (img/twitter/64)", "CC-BY 4.0",
     "https://github.com/jdecked/twemoji", "Twemoji graphics: Copyright 2020 Twitter, Inc and other contributors "
     "({url}), licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/). " + _RESIZED),
    ("noto", "Noto Emoji graphics", "emoji-datasource-google@16.0.0 (img/google/64)", "Apache-2.0",
     "https://github.com/googlefonts/noto-emoji", "Noto Emoji graphics: Copyright Google Inc. ({url}), licensed under "
     "the Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0). " + _RESIZED),
    ("fluent", "Fluent Emoji (flat)", "@iconify-json/fluent-emoji-flat@1.2.6", "MIT",
     "https://github.com/microsoft/fluentui-emoji",
     "Fluent Emoji: Copyright (c) Microsoft Corporation ({url}), MIT licence. Changes: rasterised with resvg and "
     "resized to 32x32."),
    ("emoji-data", "emoji-data metadata (emoji.json, categories)",
     "emoji-datasource-twitter@16.0.0, emoji-datasource-google@16.0.0", "MIT", "https://github.com/iamcal/emoji-data",
     "emoji-data: Copyright (c) 2013 Cal Henderson, MIT licence."),
    ("emojibase", "emojibase-data (names, keywords; CLDR)", "emojibase-data@17.0.0", "MIT (labels: Unicode License v3)",
     "https://github.com/milesj/emojibase", "emojibase-data: Copyright (c) 2017-2019 Miles Johnson, MIT licence; its "
     "labels and tags come from Unicode CLDR (Copyright (c) Unicode, Inc., Unicode License v3)."),
)
SOURCES = {key: {"name": name, "package": package, "licence": licence, "url": url,
                 "attribution": attribution.format(url=url)}
           for key, name, package, licence, url, attribution in _SOURCE_ROWS}
# The options of `ditweb train` that define the model a card describes (the rest: logging, paths, devices).
RECIPE_KEYS = ("preset", "size", "subcategories", "styles", "repeat", "skin_tones", "flip", "conditioning",
               "prediction", "loss_weighting", "min_snr_gamma", "t_sampling", "batch_size", "lr", "weight_decay",
               "warmup", "ema", "precision_used", "seed", "init")


class CardError(DitwebError):
    """A card file or record that cannot be read (one line, names the file)."""


def data_sources(train_args: dict) -> dict:
    """The data of a run from its options: the emoji sets by name, or the user's own data (licence unknown)."""
    if train_args.get("data") and not train_args.get("styles"):
        return {"description": f"your own images ({train_args['data']}): record their sources and licences in a "
                               f"card file (ditweb export --card)", "sources": []}
    if train_args.get("styles"):
        styles = [s.strip() for s in str(train_args["styles"]).split(",") if s.strip()]
        keys = [s for s in styles if s in SOURCES] + ["emoji-data", "emojibase"]
        unknown = [s for s in styles if s not in SOURCES]
        what = f"every emoji in the styles {', '.join(styles)}, with names and keywords, labelled at every level"
        if unknown:
            what += f" (styles without a recorded licence: {', '.join(unknown)})"
        return {"description": what, "sources": [dict(SOURCES[k], key=k) for k in keys]}
    level = "one class per Twemoji subcategory" if train_args.get("subcategories") else "one class per Twemoji category"
    tones = ", skin-tone variants included" if train_args.get("skin_tones") else ""
    return {"description": f"the Twemoji images at 32x32, {level}{tones}",
            "sources": [dict(SOURCES[k], key=k) for k in ("twemoji", "emoji-data")]}


def training_card(train_args: dict, step: int, compute: dict, warm_start: dict | None = None,
                  data: dict | None = None) -> dict:
    """The record a checkpoint carries: data, recipe, steps, images seen (steps x global batch), compute."""
    card = {"card_version": CARD_VERSION, "data": data or data_sources(train_args),
            "recipe": {k: train_args[k] for k in RECIPE_KEYS if train_args.get(k) is not None},
            "steps": int(step), "images_seen": int(step) * int(train_args.get("batch_size") or 0), "compute": compute}
    if warm_start:
        card["warm_start"] = warm_start
    return card


def warm_start_entry(path, card: dict | None, step=None) -> dict:
    """What a card says about the weights a run started from (--init): their own record, or only the file."""
    entry = {"from": str(path)}
    if isinstance(card, dict):
        entry.update({k: card[k] for k in ("steps", "images_seen", "compute", "data", "recipe", "warm_start")
                      if k in card})
    elif step is not None:
        entry["steps"] = step
    return entry


def card_path_for(ckpt) -> Path:
    """The card file beside a checkpoint: models/default.safetensors -> models/default.card.json."""
    p = Path(ckpt)
    return p.with_name(p.name[: -len(p.suffix)] + CARD_SUFFIX if p.suffix else p.name + CARD_SUFFIX)


def check_card(card, where) -> dict:
    """A card record or file: a JSON object whose known fields have the right types (the rest is kept as is)."""
    if not isinstance(card, dict):
        raise CardError(f"{where}: a model card must be a JSON object, found {type(card).__name__}")
    kinds = {"data": dict, "recipe": dict, "compute": dict, "warm_start": dict, "eval": list, "steps": int,
             "images_seen": int, "limits": list, "intended_use": list, "guidance_scale": (int, float),
             "name": str, "description": str}
    for k, kind in kinds.items():
        if k in card and card[k] is not None and (not isinstance(card[k], kind) or isinstance(card[k], bool)):
            raise CardError(f"{where}: card field {k!r} must be a {getattr(kind, '__name__', 'number')}, found "
                            f"{type(card[k]).__name__}")
    for i, e in enumerate(card.get("eval") or []):
        if not isinstance(e, dict) or not isinstance(e.get("header"), list) or not isinstance(e.get("rows"), list):
            raise CardError(f"{where}: card eval[{i}] must hold a header and rows")
    return card


def read_card_file(path) -> dict:
    path = Path(path)
    try:
        card = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CardError(f"{path}: no such card file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CardError(f"{path}: not a JSON card file ({e})") from None
    return check_card(card, path)


def merge(base: dict | None, extra: dict | None) -> dict:
    """A card file over a checkpoint's record: its fields win, dicts merge one level deep, eval tables add up
    (one per title, the newer kept)."""
    out = dict(base or {})
    for k, v in (extra or {}).items():
        if k == "eval":
            titles = {e.get("title") for e in v}
            out["eval"] = [e for e in out.get("eval", []) if e.get("title") not in titles] + list(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def write_card_file(path, card: dict) -> Path:
    return write_text_atomic(path, json.dumps(card, indent=1, ensure_ascii=False) + "\n")


def add_eval(path, title: str, header: list, rows: list, notes: str) -> Path:
    """`ditweb eval --card`: put one result table into the card file (a table of the same title is replaced)."""
    path = Path(path)
    card = read_card_file(path) if path.is_file() else {"card_version": CARD_VERSION}
    entry = {"title": title, "date": time.strftime("%Y-%m-%d"), "header": [str(h) for h in header],
             "rows": [[str(c) for c in r] for r in rows], "notes": notes}
    return write_card_file(path, merge(card, {"eval": [entry]}))

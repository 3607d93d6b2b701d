"""`ditweb data`: the training images of one style (Twemoji categories, your folders, packs) or of several
emoji styles with full metadata (`--styles`): counts, contact sheets, packs. The command layer over
dit_model.data and dit_model.emoji (which imports data, so this verb lives beside both)."""
from __future__ import annotations

from pathlib import Path

from ditformat.errors import UsageError

from . import emoji as E
from .data import DataError, add_data_options, contact_sheet, load_data, save_pack


def register(sub):
    p = sub.add_parser("data", help="the training images: counts per class, a contact sheet, --pack")
    add_data_options(p)
    p.add_argument("--sheet", default="samples/data/contact_sheet.png", help="contact-sheet PNG to write")
    p.add_argument("--per-class", type=int, default=16, help="images per class on the contact sheet")
    p.add_argument("--pack", metavar="FILE", help="also write the prepared set as one .npz (uint8) for offline training")
    p.add_argument("--styles", metavar="LIST",
                   help="several emoji styles with full metadata (dit_model/emoji.py), comma-separated: "
                        "twemoji,noto,fluent (openmoji: opt-in); prints counts per style and category, "
                        "writes one contact sheet per style (SHEET_<style>.png); --pack writes every field")
    p.set_defaults(func=cmd_data)


def cmd_data_styles(args):
    """`ditweb data --styles ...`: the multi-style EmojiSet (dit_model/emoji.py)."""
    if args.data:
        raise UsageError("--styles loads the emoji packages from data/npm; leave out --data "
                         "(an emoji pack is read with dit_model.emoji.load_emoji_pack)")
    try:
        styles = E._check_styles(args.styles)
    except DataError as e:
        raise UsageError(str(e)) from None
    es = E.load_emoji(styles, args.size or 32, skin_tones=bool(args.skin_tones))
    E.print_counts(es)
    if args.sheet:
        base = Path(args.sheet)
        for s, style in enumerate(es.styles):
            path = base.with_name(f"{base.stem}_{style}{base.suffix or '.png'}")
            path.parent.mkdir(parents=True, exist_ok=True)
            contact_sheet(es.select(es.style == s).favicon_data("category"), max(1, args.per_class)).save(path)
            print(f"contact sheet ({style}): {path}")
    if args.pack:
        out = E.save_emoji_pack(es, args.pack)
        print(f"pack: {out} ({out.stat().st_size / 1e6:.1f} MB; every field: images, emoji, style, variant, metadata)")


def cmd_data(args):
    if getattr(args, "styles", None):
        return cmd_data_styles(args)
    data = load_data(args.data, args.size or 32, bool(args.skin_tones), bool(args.subcategories))
    counts = data.counts()
    width = max(len(n) for n in data.class_names)
    print(f"{data.source}: {len(data.images)} images, {data.size}x{data.size} RGBA, {len(data.class_names)} classes")
    for i, (name, n) in enumerate(zip(data.class_names, counts)):
        print(f"{i:>4}  {name:<{width}}  {n:>6}")
    alpha = data.images[..., 3]
    print(f"alpha: {100 * (alpha == 0).mean():.1f}% transparent, {100 * ((alpha > 0) & (alpha < 255)).mean():.1f}% partial")
    if args.sheet:
        path = Path(args.sheet)
        path.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(data, max(1, args.per_class)).save(path)
        print(f"contact sheet: {path}")
    if args.pack:
        out = save_pack(data, args.pack)
        print(f"pack: {out} ({out.stat().st_size / 1e6:.1f} MB); train on it with `ditweb train --data {out}`")

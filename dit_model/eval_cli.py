"""`ditweb eval CKPT`: the command over the two evaluations — a one-level model by its classes
(dit_model.evaluate), a named model by emoji identity across styles (dit_model.named_eval)."""
from __future__ import annotations

import json
from pathlib import Path

from .evaluate import FLOOR_PAIRS, JUDGE, ROOT, EvalError, evaluate, table


def register(sub):
    p = sub.add_parser("eval", help="sample quality: balanced class accuracy, Frechet distance, near copies")
    p.add_argument("ckpt", help="weights: .safetensors, a published state dict, or a training checkpoint runs/NAME/ckpt.pt")
    p.add_argument("--weights", default="ema", choices=["ema", "raw"],
                   help="for a training checkpoint: its EMA (default) or raw trained weights")
    p.add_argument("--data", help="the training data (default: Twemoji)")
    p.add_argument("--n-per-class", type=int, default=32, help="samples per class (and reference images per class)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--scales", help="guidance scales, comma-separated (1 = no guidance; default 1,2,4,6, a named "
                                    "model 2,4)")
    p.add_argument("--interval", help="guide only while the model's t is in LO:HI (e.g. 0:600), 1 outside it; "
                                      "default: every step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge", help=f"the judge's weights (default {JUDGE.relative_to(ROOT)})")
    p.add_argument("--retrain-judge", action="store_true",
                   help="train the judge on this data's 80%% split and write it to --judge before evaluating")
    p.add_argument("--floor-pairs", type=int, default=FLOOR_PAIRS, help="real-vs-real pairs behind the floor")
    p.add_argument("--json", help="also write the results (one row per scale) as JSON to this file")
    p.add_argument("--out", default=None, help="folder for the table (default bench/results)")
    p.add_argument("--card", nargs="?", const="", metavar="FILE",
                   help="also add the table to a model card file (default: CKPT's NAME.card.json beside it), which "
                        "`ditweb export` renders into the bundle's README.md")
    p.add_argument("--seeds", type=int, default=4, help="named models: seeds per (evaluation emoji, style) request")
    p.add_argument("--styles", help="named models: the styles to draw in (default: all of the model's)")
    p.add_argument("--hippo-seeds", type=int, default=16, help="named models: seeds of the hippo per style")
    p.add_argument("--vae", help="latent named models: decode with this autoencoder instead of the one the model names "
                                 "(that file or a decoder fine-tune of it: checked)")
    p.set_defaults(func=cmd_eval)


def _is_named(path) -> bool:
    """Does the checkpoint carry a label vocabulary (a named model: evaluated by identity)?"""
    from .checkpoint import _torch_load
    p = Path(path)
    if not p.is_file():
        return False
    obj = _torch_load(p)
    return isinstance(obj, dict) and "vocabulary" in obj


def check_card_target(args) -> None:
    """--card: a folder, or a card file that does not read, is bad input found before minutes of sampling."""
    if args.card is None:
        return
    from .card import card_path_for, read_card_file
    path = Path(args.card or card_path_for(args.ckpt))
    if path.is_dir():
        raise EvalError(f"--card {path}: is a folder; give a card file name (NAME.card.json)")
    if path.exists():
        read_card_file(path)


def add_to_card(args, result_table) -> None:
    """--card: the result table (title, header, rows, notes) into the model card file."""
    if args.card is None:
        return
    from .card import add_eval, card_path_for
    print(f"added the table to the model card {add_eval(args.card or card_path_for(args.ckpt), *result_table)}")


def _interval(args) -> tuple[int, int] | None:
    if not args.interval:
        return None
    from ditformat.guidance import parse_interval
    try:
        return parse_interval(args.interval)
    except ValueError as e:
        raise EvalError(f"bad --interval {args.interval!r}: {e}") from None


def cmd_eval_named(args):
    from .bench import RESULTS, publish, save_text
    from .named_eval import evaluate_named_model, table as named_table
    try:
        scales = [float(s) for s in (args.scales or "2,4").split(",")]
    except ValueError:
        raise EvalError(f"bad --scales {args.scales!r} (want numbers separated by commas)") from None
    if args.seeds < 2 or args.hippo_seeds < 1 or args.steps < 1:
        raise EvalError("--seeds must be at least 2 (diversity), --hippo-seeds and --steps at least 1")
    styles = [s.strip() for s in args.styles.split(",")] if args.styles else None
    result = evaluate_named_model(args.ckpt, scales, args.seeds, args.steps, styles, args.weights, args.hippo_seeds,
                                  args.floor_pairs, vae_path=args.vae, interval=_interval(args))
    publish("eval-named", *named_table(result), args.out or RESULTS)
    add_to_card(args, named_table(result))
    if args.json:
        print(f"saved {save_text(Path(args.json), json.dumps(result, indent=1, default=str) + chr(10))}")


def cmd_eval(args):
    from .bench import RESULTS, publish, save_text
    check_card_target(args)
    if _is_named(args.ckpt):
        return cmd_eval_named(args)
    try:
        scales = [float(s) for s in (args.scales or "1,2,4,6").split(",")]
    except ValueError:
        raise EvalError(f"bad --scales {args.scales!r} (want numbers separated by commas)") from None
    if args.n_per_class < 2:
        raise EvalError("--n-per-class must be at least 2")
    interval = _interval(args)
    if args.steps < 1 or args.floor_pairs < 2:
        raise EvalError("--steps must be at least 1 and --floor-pairs at least 2")
    result = evaluate(args.ckpt, args.data, args.n_per_class, args.steps, args.sampler, scales, args.seed,
                      args.weights, args.judge, args.retrain_judge, args.floor_pairs, interval)
    publish("eval", *table(result), args.out or RESULTS)
    add_to_card(args, table(result))
    if args.json:
        print(f"saved {save_text(Path(args.json), json.dumps(result, indent=1) + chr(10))}")

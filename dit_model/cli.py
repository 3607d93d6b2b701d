"""`ditweb`: one console script, one sub-command per verb. Each verb lives next to its code
and registers itself here through a `register(subparsers)` function."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# Modules that add sub-commands (each has register(subparsers)); order = order in --help.
VERBS = [
    "dit_model.cli:register_info",
    "dit_model.cli:register_sample",
    "dit_model.data:register",
    "dit_model.train:register",
    "dit_model.evaluate:register",
    "dit_model.bench:register",
    "export.cli:register",
    "runtime_py.validate:register",
    "webserve.cli:register_serve",
    "webserve.cli:register_site",
]


class UsageError(ValueError):
    """Bad input from the command line: printed as one line, exit status 2."""


# ------------------------------------------------------------------ info

def register_info(sub):
    p = sub.add_parser("info", help="parameters and forward Gflops of a preset")
    p.add_argument("name", nargs="?", help="preset name (default: all presets)")
    p.add_argument("--input-size", type=int)
    p.add_argument("--in-channels", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--conditioning")
    p.add_argument("--no-learn-sigma", dest="learn_sigma", action="store_false", default=None)
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    from .model import PRESETS, build_meta, count_params, forward_gflops, preset_config
    names = [args.name] if args.name else list(PRESETS)
    print(f"{'preset':<14}{'input':>9}{'layers':>7}{'D':>6}{'heads':>6}{'p':>3}{'classes':>8}  {'conditioning':<12}{'params':>14}{'Gflops':>10}")
    for name in names:
        cfg = preset_config(name, input_size=args.input_size, in_channels=args.in_channels,
                            num_classes=args.num_classes, conditioning=args.conditioning, learn_sigma=args.learn_sigma)
        n = count_params(build_meta(cfg))
        shape = f"{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}"
        g = forward_gflops(cfg)
        gflops = f"{g:.3f}" if g >= 0.01 else f"{g:.2e}"
        print(f"{name:<14}{shape:>9}{cfg.depth:>7}{cfg.hidden_size:>6}{cfg.num_heads:>6}"
              f"{cfg.patch_size:>3}{cfg.num_classes:>8}  {cfg.conditioning:<12}{n:>14,}{gflops:>10}")


# ------------------------------------------------------------------ sample

def register_sample(sub):
    p = sub.add_parser("sample", help="sample images (PNG grid, PNGs, .ico) from a checkpoint or a preset")
    p.add_argument("source", help="a checkpoint file (.pt / .safetensors), a bundle folder (--runtime wgpu) or a preset name (random weights)")
    p.add_argument("--class", dest="cls", default="0", help="class name or id (default 0)")
    p.add_argument("--n", type=int, default=16, help="number of images")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--cfg", type=float, help="guidance scale (default 4; 1 = plain conditional; with --compose it "
                                          "multiplies the weights, default 1)")
    p.add_argument("--negative-class", help="class name or id that replaces the unconditional branch")
    p.add_argument("--compose", help="weighted classes, e.g. 'Animals & Nature:1,Flags:-0.5' (replaces --class)")
    p.add_argument("--schedule", default="constant", choices=["constant", "linear", "interval"])
    p.add_argument("--cfg-end", type=float, help="linear schedule: scale at the last step")
    p.add_argument("--interval", default="0:999", help="interval schedule: guided t range LO:HI")
    p.add_argument("--batch-k", type=int, default=1, help="batch-estimated guidance: perturbed copies K")
    p.add_argument("--batch-tau", type=float, default=0.0, help="batch-estimated guidance: perturbation scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-clip", dest="clip", action="store_false", help="do not clip x0 to [-1, 1] (latent models)")
    p.add_argument("--preset", help="preset for a checkpoint whose shapes match none")
    p.add_argument("--runtime", default="torch", choices=["torch", "wgpu"])
    p.add_argument("--out", default="samples", help="output folder")
    p.set_defaults(func=cmd_sample)


def resolve_class(value: str, names: list[str]) -> int:
    if value in names:
        return names.index(value)
    lowered = [n.lower() for n in names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    try:
        i = int(value)
    except ValueError:
        raise UsageError(f"unknown class {value!r}; known classes: {', '.join(names)}") from None
    if not 0 <= i < len(names):
        raise UsageError(f"class id {i} out of range [0, {len(names)})")
    return i


def guide_from_args(args, names: list[str]):
    from .guidance import Guide
    compose = ()
    if args.compose:
        pairs = []
        for part in args.compose.split(","):
            name, _, w = part.rpartition(":")
            try:
                pairs.append((resolve_class(name.strip(), names), float(w)))
            except ValueError as e:
                raise UsageError(f"bad --compose entry {part!r} (want NAME:WEIGHT): {e}") from None
        compose = tuple(pairs)
    try:
        lo, hi = (int(v) for v in args.interval.split(":"))
    except ValueError:
        raise UsageError(f"bad --interval {args.interval!r} (want LO:HI, e.g. 0:700)") from None
    neg = resolve_class(args.negative_class, names) if args.negative_class is not None else None
    try:
        scale = args.cfg if args.cfg is not None else (1.0 if compose else 4.0)
        return Guide(scale=scale, negative_class=neg, compose=compose,
                     schedule=args.schedule, scale_end=args.cfg_end, interval=(lo, hi), batch_k=args.batch_k,
                     batch_tau=args.batch_tau).validate(len(names))
    except ValueError as e:
        raise UsageError(str(e)) from None


def load_source(source: str, preset: str | None):
    """(model, config, class names): a checkpoint file, else a preset with seeded random weights."""
    import torch
    from .checkpoint import load_model
    from .model import PRESETS, DiT
    if Path(source).is_file():
        model, meta = load_model(source, preset)
        return model, meta["config"], meta["class_names"]
    if source in PRESETS:
        torch.manual_seed(0)
        model = DiT.from_preset(source).eval()
        return model, model.cfg, [str(i) for i in range(model.cfg.num_classes)]
    raise UsageError(f"{source!r} is neither a checkpoint file nor a preset (presets: {', '.join(PRESETS)})")


def cmd_sample(args):
    from tqdm import tqdm
    from .images import to_uint8, write_samples
    from .sample import sample_images
    if args.n < 1 or args.steps < 1:
        raise UsageError("--n and --steps must be at least 1")
    if args.runtime == "wgpu":
        from runtime_py.cli import sample_wgpu  # noqa: the wgpu runtime shares this verb
        return sample_wgpu(args)
    model, cfg, names = load_source(args.source, args.preset)
    cls = resolve_class(args.cls, names)
    guide = guide_from_args(args, names)
    bar = tqdm(total=args.steps, desc="sampling", unit="step", file=sys.stderr)
    x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                      class_ids=[cls] * args.n, guide=guide, steps=args.steps, sampler=args.sampler, eta=args.eta,
                      seed=args.seed, clip_x0=args.clip, prediction=cfg.prediction, on_step=lambda i, n: bar.update(1))
    bar.close()
    paths = write_samples(to_uint8(x), Path(args.out))
    what = f"composition {args.compose!r}" if guide.compose else f"class {names[cls]!r}"
    print(f"wrote {len(paths)} files to {args.out} (grid: {Path(args.out) / 'grid.png'}), {what}, seed {args.seed}")


# ------------------------------------------------------------------ entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditweb", description="DiT from PyTorch to the web")
    sub = parser.add_subparsers(dest="verb", required=True)
    for spec in VERBS:
        module, func = spec.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, PermissionError) as e:
        # CheckpointError, BundleError, ... are ValueErrors: one line, no traceback
        print(f"ditweb {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`ditweb sample SOURCE`: images from a checkpoint or a preset (torch), or from a bundle folder
(--runtime wgpu: numpy + wgpu, no torch). Both runtimes share the options and the summary line."""
from __future__ import annotations

import sys
from pathlib import Path

from ditformat.errors import UsageError


def register(sub):
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
    p.add_argument("--vae", help="latent models: decode with this VAE (a diffusers folder, .safetensors or .ckpt) "
                                 "into RGB PNGs; x0 is then not clipped (torch runtime)")
    p.add_argument("--runtime", default="torch", choices=["torch", "wgpu"])
    p.add_argument("--plan", help="--runtime wgpu: the kernel plan: auto (time the bundle's candidate kernels on this "
                                  "adapter once, cached; the default), default (each dispatch's own kernel) or a plan "
                                  "JSON file {slot: kernel}")
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
    from dit_model.guidance import Guide, parse_interval
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
        lo, hi = parse_interval(args.interval)
    except ValueError as e:
        raise UsageError(f"bad --interval {args.interval!r}: {e}") from None
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
    from dit_model.checkpoint import load_model
    from dit_model.model import PRESETS, DiT
    if Path(source).is_file() or Path(source).is_dir():      # a folder: the diffusers DiT layout
        model, meta = load_model(source, preset)
        return model, meta["config"], meta["class_names"]
    if source in PRESETS:
        torch.manual_seed(0)
        model = DiT.from_preset(source).eval()
        return model, model.cfg, [str(i) for i in range(model.cfg.num_classes)]
    raise UsageError(f"{source!r} is neither a checkpoint file nor a preset (presets: {', '.join(PRESETS)})")


def cmd_sample(args):
    from tqdm import tqdm
    from dit_model.images import to_uint8, write_samples
    if args.n < 1 or not 1 <= args.steps <= 1000:
        raise UsageError("--n must be at least 1 and --steps in [1, 1000]")
    bar = lambda desc: tqdm(total=args.steps, desc=desc, unit="step", file=sys.stderr)
    if args.vae and args.runtime == "wgpu":
        raise UsageError("--vae is for checkpoints; a bundle carries its decoder (ditweb export CKPT OUT --vae VAE)")
    if args.runtime == "wgpu":
        from runtime_py.bundle import Bundle
        if not Path(args.source, "manifest.json").is_file():
            raise UsageError(f"--runtime wgpu needs a bundle folder (from ditweb export), got {args.source!r}")
        import numpy as np
        from runtime_py.decode import load_decoder
        bundle = Bundle.load(args.source, plan=args.plan)
        decoder = load_decoder(bundle)                        # a latent bundle (export --vae): RGB after sampling
        if decoder is not None:
            args.clip = False                                 # latents are not bounded to [-1, 1]
        names = bundle.class_names
        cls, guide = resolve_class(args.cls, names), guide_from_args(args, names)
        b = bar("sampling (wgpu)")
        x = bundle.sample([cls] * args.n, seed=args.seed, steps=args.steps, guide=guide, sampler=args.sampler,
                          eta=args.eta, clip_x0=args.clip, on_step=lambda i, n: b.update(1))
        where = f", adapter {bundle.gpu.name}"
        if decoder is not None:                               # one image at a time bounds the activation memory
            x = np.concatenate([decoder.decode(xi[None]) for xi in x]).clip(-1.0, 1.0)
            where += ", decoded by the bundle's VAE decoder"
    else:
        from dit_model.sample import sample_images
        vae = None
        if args.vae:
            import torch
            from dit_model.vae import load_vae
            vae = load_vae(args.vae)
            args.clip = False                                 # latents are not bounded to [-1, 1]
        model, cfg, names = load_source(args.source, args.preset)
        if vae is not None and vae.cfg.latent_channels != cfg.in_channels:
            raise UsageError(f"--vae {args.vae} decodes {vae.cfg.latent_channels}-channel latents, the model makes {cfg.in_channels}")
        cls, guide = resolve_class(args.cls, names), guide_from_args(args, names)
        b = bar("sampling")
        x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                          class_ids=[cls] * args.n, guide=guide, steps=args.steps, sampler=args.sampler, eta=args.eta,
                          seed=args.seed, clip_x0=args.clip, prediction=cfg.prediction, on_step=lambda i, n: b.update(1))
        where = ""
        if vae is not None:
            b.close()
            x = torch.cat([vae.decode(xi[None]) for xi in tqdm(x, desc="decoding", unit="image", file=sys.stderr)])  # (N, 3, H, W)
            where = f", decoded with {args.vae}"
    b.close()
    paths = write_samples(to_uint8(x), Path(args.out))
    what = f"composition {args.compose!r}" if guide.compose else f"class {names[cls]!r}"
    print(f"wrote {len(paths)} files to {args.out} (grid: {Path(args.out) / 'grid.png'}), {what}, seed {args.seed}{where}")

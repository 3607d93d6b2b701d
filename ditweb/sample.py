"""`ditweb sample SOURCE`: images from a checkpoint or a preset (torch), or from a bundle folder
(--runtime wgpu: numpy + wgpu, no torch). Both runtimes share the options and the summary line."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from ditformat.errors import UsageError


def register(sub):
    p = sub.add_parser("sample", help="sample images (PNG grid, PNGs, .ico) from a checkpoint or a preset")
    p.add_argument("source", help="a checkpoint file (.pt / .safetensors), a bundle folder (--runtime wgpu) or a preset name (random weights)")
    p.add_argument("--class", dest="cls", help="class name or id (default 0); for a named model any label name")
    p.add_argument("--prompt", help="named models: a word or phrase, resolved to a label by name, short name and "
                                    "keyword (exact before prefix before keyword), e.g. 'hippo'")
    p.add_argument("--style", help="named models: the style to draw in (e.g. noto); default: any style")
    p.add_argument("--n", type=int, default=16, help="number of images")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--cfg", type=float, help="guidance scale (default 4; 1 = plain conditional; with --compose it "
                                          "multiplies the weights, default 1)")
    p.add_argument("--negative-class", help="class name or id (named models: a prompt) that replaces the unconditional branch")
    p.add_argument("--compose", action="append", metavar="NAME=WEIGHT",
                   help="weighted labels (replaces --class), one per option: --compose 'family: man, boy=1' "
                        "--compose Flags=-0.5 (NAME:WEIGHT too; the old one-option list 'A:1,B:-0.5' still works)")
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


def compose_entries(values: list[str] | str | None) -> list[tuple[str, float]]:
    """--compose values -> [(name, weight)]: each value is NAME=WEIGHT or NAME:WEIGHT (split at the last
    '=' or ':', so names holding ', ' and ':' work, e.g. 'family: man, boy=1'); a single value that is a
    comma list of NAME:WEIGHT entries is the older form."""
    if values is None:
        return []
    values = [values] if isinstance(values, str) else list(values)
    def split(v):
        for sep in ("=", ":"):
            name, found, w = v.rpartition(sep)
            if found and name.strip():
                try:
                    weight = float(w)
                except ValueError:
                    continue
                if not math.isfinite(weight):
                    raise UsageError(f"bad --compose entry {v!r}: the weight must be a finite number")
                return name.strip(), weight
        raise UsageError(f"bad --compose entry {v!r}: want NAME=WEIGHT, e.g. 'Flags=-0.5'")
    if len(values) == 1 and "," in values[0] and "=" not in values[0]:
        parts = values[0].split(",")
        try:
            return [split(p) for p in parts]
        except UsageError:
            pass                                              # a name holding ", ": one entry
    return [split(v) for v in values]


def guide_from_args(args, names: list[str], vocab=None, style: str | None = None):
    from ditformat.guidance import Guide, parse_interval
    compose = ()
    pick = (lambda n: resolve_label(n, vocab, style)) if vocab is not None else (lambda n: resolve_class(n, names))
    if args.compose:
        compose = tuple((pick(name).ids if vocab is not None else pick(name), w)
                        for name, w in compose_entries(args.compose))
    try:
        lo, hi = parse_interval(args.interval)
    except ValueError as e:
        raise UsageError(f"bad --interval {args.interval!r}: {e}") from None
    neg = None
    if args.negative_class is not None:
        neg = pick(args.negative_class).ids if vocab is not None else pick(args.negative_class)
    for name in ("cfg", "cfg_end", "batch_tau"):
        v = getattr(args, name, None)
        if v is not None and not math.isfinite(v):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    try:
        scale = args.cfg if args.cfg is not None else (1.0 if compose else 4.0)
        return Guide(scale=scale, negative_class=neg, compose=compose,
                     schedule=args.schedule, scale_end=args.cfg_end, interval=(lo, hi), batch_k=args.batch_k,
                     batch_tau=args.batch_tau).validate(len(names))
    except ValueError as e:
        raise UsageError(str(e)) from None


def resolve_label(value: str, vocab, style: str | None = None):
    """A prompt or label name -> a Label of the model's vocabulary (UsageError: one line)."""
    from ditformat.labels import VocabularyError
    try:
        return vocab.resolve(value, style)
    except VocabularyError as e:
        raise UsageError(str(e)) from None


def request(args, names: list[str], vocab):
    """What to draw: (label for the sampler, its description). A named model takes --prompt or
    --class (any label name) and --style; a one-level model a class name or id."""
    if vocab is None:
        if args.prompt is not None or args.style is not None:
            raise UsageError("--prompt and --style need a named model (one trained with `ditweb train --styles ...`)")
        cls = resolve_class(args.cls if args.cls is not None else "0", names)
        return cls, f"class {names[cls]!r}"
    if args.prompt is not None and args.cls is not None:
        raise UsageError("give --prompt or --class, not both")
    if args.style is not None:
        from ditformat.labels import VocabularyError
        try:
            vocab.label(vocab.level(vocab.levels[-1]), 0, **{vocab.levels[-1]: args.style})
        except VocabularyError as e:
            raise UsageError(str(e)) from None
    text = args.prompt if args.prompt is not None else args.cls
    if text is None and args.compose:
        return vocab.null.ids, "composition"                 # the composed labels replace the request
    if text is None:
        raise UsageError("a named model needs --prompt (e.g. --prompt hippo) or --class LABEL")
    label = resolve_label(text, vocab, args.style)
    return label.ids, f"prompt {text!r} -> {vocab.describe(label)}"


def load_source(source: str, preset: str | None):
    """(model, config, class names): a checkpoint file, else a preset with seeded random weights."""
    import torch
    from dit_model.checkpoint import load_model
    from dit_model.model import PRESETS, DiT
    if Path(source).is_file() or Path(source).is_dir():      # a folder: the diffusers DiT layout
        model, meta = load_model(source, preset)
        return model, meta["config"], meta["class_names"], meta.get("vocab")
    if source in PRESETS:
        torch.manual_seed(0)
        model = DiT.from_preset(source).eval()
        return model, model.cfg, [str(i) for i in range(model.cfg.num_classes)], None
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
        from runtime_py.verify import read_vocabulary, verify_bundle
        manifest = verify_bundle(args.source)                 # the request is checked before any GPU call
        vocab = read_vocabulary(args.source, manifest)        # a named bundle: its verified vocabulary.json
        names = vocab.flat_names() if vocab is not None else manifest["class_names"]
        cls, what = request(args, names, vocab)
        guide = guide_from_args(args, names, vocab, args.style)
        bundle = Bundle.load(args.source, plan=args.plan)
        decoder = load_decoder(bundle)                        # a latent bundle (export --vae): RGB after sampling
        if decoder is not None:
            args.clip = False                                 # latents are not bounded to [-1, 1]
        if vocab is not None:
            print(f"sampling {what}", file=sys.stderr)
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
        model, cfg, names, vocab = load_source(args.source, args.preset)
        from dit_model.latent import vae_for_model
        named, named_path = vae_for_model(args.source, args.vae)   # a latent model names its autoencoder (and sha256)
        if named is not None:
            import torch
            vae, args.vae, args.clip = named, str(named_path), False
        if vae is not None and vae.cfg.latent_channels != cfg.in_channels:
            raise UsageError(f"--vae {args.vae} decodes {vae.cfg.latent_channels}-channel latents, the model makes {cfg.in_channels}")
        cls, what = request(args, names, vocab)
        guide = guide_from_args(args, names, vocab, args.style)
        if vocab is not None:
            print(f"sampling {what}", file=sys.stderr)
        b = bar("sampling")
        x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                          class_ids=[cls] * args.n, guide=guide, steps=args.steps, sampler=args.sampler, eta=args.eta,
                          seed=args.seed, clip_x0=args.clip, prediction=cfg.prediction, on_step=lambda i, n: b.update(1),
                          null=vocab.sizes if vocab is not None else None)
        where = ""
        if vae is not None:
            b.close()
            x = torch.cat([vae.decode(xi[None]) for xi in tqdm(x, desc="decoding", unit="image", file=sys.stderr)])  # (N, 3, H, W)
            where = f", decoded with {args.vae}"
    b.close()
    finite = x.isfinite().all() if hasattr(x, "isfinite") else __import__("numpy").isfinite(x).all()
    if not bool(finite):                                      # the decoders: sampling itself checks its latents
        from ditformat.errors import NonFiniteError
        raise NonFiniteError(f"sampling ({args.runtime} runtime): the images are non-finite (NaN or Inf) after "
                             f"{args.steps} steps{where}")
    paths = write_samples(to_uint8(x), Path(args.out))
    if guide.compose:
        what = "composition " + ", ".join(f"{n}={w:g}" for n, w in compose_entries(args.compose))
    print(f"wrote {len(paths)} files to {args.out} (grid: {Path(args.out) / 'grid.png'}), {what}, seed {args.seed}{where}")

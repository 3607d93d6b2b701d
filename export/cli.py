"""`ditweb export CKPT OUT [--dtype f32|f16|int8|int4] [--onnx] [--preset NAME]`: a checkpoint to a shader bundle."""
from __future__ import annotations

from pathlib import Path

DTYPES = ("f32", "f16", "int8", "int4")   # a bundle's weight storage (the manifest's "dtype"); the math is always f32
VAE_DTYPES = ("f32", "f16", "int8")       # a decoder's (an int4 bundle's decoder is int8)


def register(sub):
    p = sub.add_parser("export", help="export a checkpoint to a WGSL shader bundle (weights, kernels, manifest)")
    p.add_argument("ckpt", help="checkpoint (.pt ours / reference {ema, model} / bare state dict / .safetensors), "
                                "or a preset name for random weights (tests, benchmarks)")
    p.add_argument("out", help="bundle folder to write (replaced atomically)")
    p.add_argument("--dtype", default="f32", choices=list(DTYPES),
                   help="weight storage (math is always f32); int8: every linear weight int8 per output channel, "
                        "the other tensors f16; int4: as int8, the transformer blocks' linear weights stored in 4 bits "
                        "(a step per 32 inputs), unpacked to int8 at load")
    p.add_argument("--shard-mb", type=float, default=64,
                   help="largest weight shard in MiB (default 64; >= 1): browsers download, cache and resume per shard")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx into the bundle folder (the forward pass, opset 17; not listed in the "
                   "manifest: no runtime reads it)")
    p.add_argument("--preset", help="preset for a checkpoint whose config is not stored and shapes match no preset")
    p.add_argument("--matmul", default="registers", choices=["registers", "shared"],
                   help="matmul kernel: 4x4 register blocks (default; best on software adapters) or workgroup-memory tiles")
    p.add_argument("--no-candidates", dest="candidates", action="store_false",
                   help="write only the default kernel of each step, no candidates for the runtimes to time")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when CKPT is a preset name")
    p.add_argument("--vae", help="a latent model's VAE (diffusers folder, .safetensors or .ckpt): its decoder goes into "
                                 "the bundle (decoder/), run once after sampling, with a preview map fitted to it (decoder/preview.safetensors: "
                                 "the page's per-step previews); the bundle then makes images")
    p.add_argument("--card", metavar="FILE",
                   help="a model card file (JSON, dit_model/card.py: data sources, recipe, compute, eval, limits) "
                        "merged over the checkpoint's own record into the bundle's README.md (default: CKPT's "
                        "NAME.card.json beside it, where there is one; `ditweb eval --card` writes it)")
    p.add_argument("--vae-dtype", choices=list(VAE_DTYPES),
                   help="the decoder's weights (default: --dtype; int8 for --dtype int4); int8: per-output-channel int8 "
                        "convolutions")
    p.set_defaults(func=cmd_export)


def add_benchmark_model_options(p, preset: str | None, dtypes: str, allowed=DTYPES, preset_for: str = "",
                                dtypes_for: str = "") -> None:
    """The model a benchmark exports and times: a preset with random weights (export's CKPT as a preset name), once
    per weight dtype of --dtypes (`ditweb bench`, bench/xl.py; check_dtypes reads the list). *_for: a help prefix
    naming the benchmarks that read the option, where not all do (e.g. "step: ")."""
    p.add_argument("--preset", default=preset, help=f"{preset_for}preset to benchmark, with random weights"
                   + (f" (default {preset})" if preset else ""))
    p.add_argument("--dtypes", default=dtypes, help=f"{dtypes_for}bundle weight dtypes to time, comma-separated, of "
                   f"{', '.join(allowed)} (default {dtypes})")


def check_dtypes(text: str, allowed=DTYPES) -> list[str]:
    """--dtypes as a list: each of `allowed` (a UsageError names the option otherwise)."""
    from ditformat.errors import UsageError
    dtypes = [d for d in text.split(",") if d]
    if any(d not in allowed for d in dtypes):
        raise UsageError(f"--dtypes: choose from {', '.join(allowed)} (comma-separated), got {text[:40]!r}")
    return dtypes


def load_checkpoint(source: str, preset: str | None, seed: int = 0):
    """(model, class names, label vocabulary or None, card record or None). A preset name gives random weights in
    every tensor (see randomize_)."""
    from dit_model.checkpoint import load_model
    from dit_model.model import PRESETS, DiT
    from .bundle import ExportError, randomize_
    if Path(source).is_file():
        model, meta = load_model(source, preset)
        card = meta.get("card") or ({"steps": meta["step"]} if isinstance(meta.get("step"), int) else None)
        return model, meta["class_names"], meta.get("vocab"), card
    if source in PRESETS:
        model = randomize_(DiT.from_preset(source).eval(), seed)
        card = {"description": f"random weights of the preset {source} (seed {seed}): a test bundle, not a model"}
        return model, [str(i) for i in range(model.cfg.num_classes)], None, card
    raise ExportError(f"{source!r} is neither a checkpoint file nor a preset name")


def load_for_export(source: str, preset: str | None, seed: int = 0, with_vocab: bool = False):
    """(model, class names), with the label vocabulary (None for a one-level model) as a third item when
    with_vocab."""
    model, names, vocab, _ = load_checkpoint(source, preset, seed)
    return (model, names, vocab) if with_vocab else (model, names)


def model_card(source: str, record: dict | None, card_file: str | None) -> tuple[dict | None, str]:
    """The checkpoint's card record merged with a card file (--card, else SOURCE's NAME.card.json beside it), and
    a line saying where the card came from."""
    from dit_model.card import card_path_for, merge, read_card_file
    path = Path(card_file) if card_file else card_path_for(source) if Path(source).is_file() else None
    if path is None or (not card_file and not path.is_file()):
        return record, "from the checkpoint" if record else "unknown: the checkpoint records none (see --card)"
    return merge(record, read_card_file(path)), f"from {'the checkpoint and ' if record else ''}{path}"


def check_exportable(model, source, dtype: str) -> None:
    """No NaN / Inf goes into a bundle, and none appears when weights are stored as float16 (|w| > 65504)."""
    from dit_model.checkpoint import first_nonfinite
    from ditformat.packed import QUANTISED_DTYPES
    from .bundle import ExportError
    sd = model.state_dict()
    bad = first_nonfinite(sd)
    if bad:
        raise ExportError(f"{source}: non-finite weights ({bad}); refusing to export them")
    if dtype == "f16" or dtype in QUANTISED_DTYPES:   # int8/int4 bundles keep their other tensors (and scales) in f16
        for k, v in sd.items():
            big = float(v.abs().max()) if v.is_floating_point() and v.numel() else 0.0
            if big > 65504.0:
                raise ExportError(f"{source}: tensor {k!r} holds {big:g}, beyond float16's range (65504): it would "
                                  f"be Inf in a {dtype} bundle; export with --dtype f32")


def cmd_export(args):
    import torch
    from .bundle import export_bundle
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from ditformat.shards import MIN_SHARD_BYTES
    if args.shard_mb * 2 ** 20 < MIN_SHARD_BYTES:
        from .bundle import ExportError
        raise ExportError(f"--shard-mb {args.shard_mb:g} is below 1 MiB")
    model, names, vocab, record = load_checkpoint(args.ckpt, args.preset, args.seed)
    check_exportable(model, args.ckpt, args.dtype)
    card, card_from = model_card(args.ckpt, record, args.card)
    vae = None
    if args.vae_dtype and not args.vae:
        from .bundle import ExportError
        raise ExportError("--vae-dtype needs --vae")
    if args.vae:
        from dit_model.vae import load_vae
        from .bundle import ExportError
        vae = load_vae(args.vae)
        if vae.cfg.latent_channels != model.cfg.in_channels:
            raise ExportError(f"--vae {args.vae} decodes {vae.cfg.latent_channels}-channel latents, the model makes "
                              f"{model.cfg.in_channels}")
    out = export_bundle(model, args.out, args.dtype, names, vocab=vocab, onnx=args.onnx, matmul=args.matmul,
                        candidates=args.candidates, shard_bytes=int(args.shard_mb * 2 ** 20), card=card)
    if vae is not None:
        from .decode import write_decoder
        dec = write_decoder(out, vae, args.vae_dtype or ("int8" if args.dtype == "int4" else args.dtype),
                            model.cfg.input_size)
        print(f"wrote {dec}: the VAE decoder, {sum(f.stat().st_size for f in dec.rglob('*') if f.is_file()) / 1e6:.2f} MB")
    import json
    m = json.loads((out / "manifest.json").read_text())
    size = sum(f["size"] for f in m["files"].values())
    n = sum(len(m["programs"][p]) for p in m["programs"])
    print(f"wrote {out}: {m['dtype']} weights, {len(m['kernels'])} kernels, {n} dispatches, {size / 1e6:.2f} MB "
          f"({', '.join(sorted(m['files']))[:120]}...); model card README.md {card_from}")

"""`ditweb info`: the model's own verb (parameters and Gflops of the presets). The command shell
that gathers every verb is ditweb/cli.py, above all layers; `ditweb sample` is ditweb/sample.py."""
from __future__ import annotations

from ditformat.errors import UsageError  # noqa: F401  (kept importable from here)

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
    from .vae import SD_VAE, decode_gmacs
    names = [args.name] if args.name else list(PRESETS)
    print(f"{'preset':<14}{'input':>9}{'layers':>7}{'D':>6}{'heads':>6}{'p':>3}{'classes':>8}  {'conditioning':<12}{'params':>14}{'Gflops':>10}"
          f"{'VAE Gflops':>12}")
    for name in names:
        cfg = preset_config(name, input_size=args.input_size, in_channels=args.in_channels,
                            num_classes=args.num_classes, conditioning=args.conditioning, learn_sigma=args.learn_sigma)
        n = count_params(build_meta(cfg))
        shape = f"{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}"
        g = forward_gflops(cfg)
        gflops = f"{g:.3f}" if g >= 0.01 else f"{g:.2e}"
        # the paper's presets are latent models: the SD VAE decodes each image once, after sampling
        vae = f"{decode_gmacs(SD_VAE, cfg.input_size):.1f}" if name.startswith("DiT-") and cfg.in_channels == 4 else "-"
        print(f"{name:<14}{shape:>9}{cfg.depth:>7}{cfg.hidden_size:>6}{cfg.num_heads:>6}"
              f"{cfg.patch_size:>3}{cfg.num_classes:>8}  {cfg.conditioning:<12}{n:>14,}{gflops:>10}{vae:>12}")
    print(f"VAE Gflops: the Stable Diffusion VAE decoder, once per image: {decode_gmacs(SD_VAE, 32):.1f} at a 4x32x32 latent "
          f"(256x256), {decode_gmacs(SD_VAE, 64):.1f} at 4x64x64 (512x512); the DiT's Gflops are per step")

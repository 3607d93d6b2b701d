"""Does a favicon autoencoder's latent hold an emoji's fine detail? An overfitting probe: the decoder alone is trained
on the posterior means of a few images (the chosen emoji in every style plus random others; the encoder is frozen), with
the training's L1 + edge loss, and the chosen emoji's reconstructions are drawn every --every steps. If the detail
(e.g. the hippo's eye and mouth) comes back, the latent holds it and a better decoder can draw it without a new
encoder or DiT; if not, the encoder threw it away.

    .venv/bin/python bench/decoder_probe.py [--vae models/favicon-vae.safetensors] [--emoji 1F99B] [--steps 150]

Writes one PNG per probe point (real row above, reconstruction row below, 4x nearest) to --out (default
/tmp/decoder-probe) and prints the loss. Not a decoder to ship: it has seen only these images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sheet(real: np.ndarray, rec: np.ndarray, scale: int = 4):
    """Real images in the top row, reconstructions below, over white, scaled by `scale` (nearest)."""
    from PIL import Image
    s = real.shape[1] * scale
    out = Image.new("RGBA", (len(real) * s, 2 * s), (255, 255, 255, 255))
    for j in range(len(real)):
        for k, a in enumerate((real[j], rec[j])):
            bg = Image.new("RGBA", a.shape[:2][::-1], (255, 255, 255, 255))
            bg.alpha_composite(Image.fromarray(a, "RGBA"))
            out.paste(bg.resize((s, s), Image.NEAREST), (j * s, k * s))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default="models/favicon-vae.safetensors")
    ap.add_argument("--emoji", default="1F99B", help="unified code point of the emoji to watch (default: hippopotamus)")
    ap.add_argument("--others", type=int, default=61, help="random other images in the probe's set")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--edge", type=float, default=1.0)
    ap.add_argument("--out", default="/tmp/decoder-probe")
    args = ap.parse_args(argv)
    import torch
    from dit_model.emoji import load_emoji
    from dit_model.favicon_vae import edge_l1, load_favicon_vae, to_model, to_uint8
    torch.manual_seed(0)
    torch.set_num_threads(1)
    es = load_emoji(styles=["twemoji", "noto", "fluent"], size=32)
    ident = [i for i, e in enumerate(es.identities) if e.unified == args.emoji.upper()]
    if not ident:
        sys.exit(f"decoder_probe: no emoji {args.emoji} in the data")
    watched = np.flatnonzero(np.asarray(es.emoji) == ident[0])
    others = np.random.default_rng(0).choice(len(es.images), args.others, replace=False)
    x = to_model(es.images[np.concatenate([watched, others])])
    vae = load_favicon_vae(args.vae)
    with torch.no_grad():
        mean, _ = vae.moments(x)
    opt = torch.optim.Adam(vae.dec.parameters(), lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for step in range(args.steps + 1):
        if step % args.every == 0:
            with torch.no_grad():
                rec = to_uint8(vae.dec(mean[:len(watched)]))
            sheet(es.images[watched], rec).save(out / f"probe_{step:05d}.png")
        if step == args.steps:
            break
        rec = vae.dec(mean)
        loss = (rec - x).abs().mean() + args.edge * edge_l1(rec, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    print(f"wrote {out}/probe_*.png (real row, reconstruction row; {es.identities[ident[0]].name} in every style)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

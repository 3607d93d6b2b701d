"""`ditweb eval` of a named model: the committed evaluation emoji, drawn in every style, judged by
the identity judges (each style by the judge that never saw it), the all-styles category judge, FD
per style, near copies and diversity (dit_model/identity.py, docs/evaluation.md); and the hippo,
16 seeds per style, counted by how often the judge ranks hippopotamus in its top 5.

Samples: for seed s, one batch holds every (evaluation emoji, style) request; image k of the
batch draws its noise from (s, k), so a request's seeds differ and the eval is reproducible."""
from __future__ import annotations

import time

import numpy as np
import torch

from ditformat.errors import DitwebError

from ditformat.guidance import Guide
from .sample import sample_images

HIPPO_SEEDS = 16


class NamedEvalError(DitwebError):
    """Bad input to the named evaluation (one line)."""


def _sampler(model):
    return lambda x, t, y: model(x, t, y).float()


@torch.no_grad()
def sample_requests(model, cfg, vocab, labels: list[tuple], scale: float, steps: int, seed: int,
                    batch: int = 256, log=print, vae=None, interval: tuple[int, int] | None = None) -> torch.Tensor:
    """(len(labels), C, I, I) samples of the given labels at guidance `scale`, `batch` at a time;
    chunk j draws its noise from seed * 1000 + j, so the images depend on `batch` too: keep it fixed
    to compare runs. A latent model (`vae`: its autoencoder) samples unclipped latents, decoded to images.
    `interval`: guide only while the model's t is in [lo, hi] (scale 1 outside it)."""
    guide = Guide.within(scale, interval)
    out = []
    for j in range(0, len(labels), batch):
        chunk = labels[j:j + batch]
        x = sample_images(_sampler(model), in_channels=cfg.in_channels, input_size=cfg.input_size,
                          num_classes=cfg.num_classes, class_ids=chunk, guide=guide, steps=steps,
                          seed=seed * 1000 + j // batch, prediction=cfg.prediction, null=vocab.sizes,
                          clip_x0=vae is None)
        out.append(x if vae is None else vae.decode(x.float()).clamp(-1.0, 1.0))
    return torch.cat(out)


def evaluate_named_model(ckpt: str, scales=(2.0, 4.0), seeds: int = 4, steps: int = 50, styles=None,
                         weights: str = "ema", hippo_seeds: int = HIPPO_SEEDS, floor_pairs: int | None = None,
                         log=print, vae_path: str | None = None, interval: tuple[int, int] | None = None) -> dict:
    from . import identity
    from .evaluate import load_eval_model
    from .latent import vae_for_model
    model, meta = load_eval_model(ckpt, weights)
    vae, vae_file = vae_for_model(ckpt, vae_path)   # a latent model's autoencoder (checked by its sha256), else None
    vocab, cfg = meta.get("vocab"), meta["config"]
    if vocab is None:
        raise NamedEvalError(f"{ckpt}: not a named model (no label vocabulary)")
    data = identity.load_data()
    codes = [e.unified for e in data.identities]
    if list(vocab.codes) != codes:
        raise NamedEvalError(f"{ckpt}: its emoji vocabulary ({len(vocab.codes)} codes) is not the data's ({len(codes)})")
    model_styles = vocab.names[vocab.level("style")]
    styles = list(styles or model_styles)
    bad = [s for s in styles if s not in model_styles or s not in data.styles]
    if bad:
        raise NamedEvalError(f"unknown style {bad[0]!r}; the model has {', '.join(model_styles)}")
    eval_ids = identity.load_eval_list(data)
    hippo = codes.index(identity.HIPPO)
    generated, hippo_rows = {}, []
    t0 = time.time()
    for scale in scales:
        recs = []
        requests = [(e, s) for s in styles for e in eval_ids]
        labels = [vocab.label(0, e, style=s).ids for e, s in requests]
        for seed in range(seeds):
            x = sample_requests(model, cfg, vocab, labels, scale, steps, seed, vae=vae, interval=interval)
            recs += [{"emoji": e, "style": s, "seed": seed, "image": img} for (e, s), img in zip(requests, x)]
            log(f"cfg {scale:g}: seed {seed + 1}/{seeds} sampled ({time.time() - t0:.0f}s)")
        generated[f"cfg {scale:g}"] = recs
        hl = [vocab.label(0, hippo, style=s).ids for s in styles for _ in range(hippo_seeds)]
        hx = sample_requests(model, cfg, vocab, hl, scale, steps, seed=777, vae=vae, interval=interval)
        hs = [s for s in styles for _ in range(hippo_seeds)]
        sc = identity.identity_scores(hx, [hippo] * len(hl), hs)
        for s in styles:
            m = np.array(hs) == s
            hippo_rows.append({"cfg": scale, "style": s, "seeds": int(m.sum()), "top5": int(sc["hit5"][m].sum()),
                               "top1": int(sc["hit1"][m].sum())})
        log(f"cfg {scale:g}: hippo top-5 in " + ", ".join(f"{r['style']} {r['top5']}/{r['seeds']}"
                                                      for r in hippo_rows if r["cfg"] == scale))
    kw = {} if floor_pairs is None else {"floor_pairs": floor_pairs}
    info = {"model": str(ckpt), "step": meta.get("step"), "weights": meta.get("weights"), "steps": steps,
            "seeds per request": seeds, "sampler": "ddim"}
    if vae_file is not None:
        info["autoencoder"] = str(vae_file)
    if interval:
        info["guidance only at t in"] = f"{interval[0]}..{interval[1]}"
    result = identity.evaluate_named(generated, data, meta=info, log=log, **kw)
    result["hippo"] = hippo_rows
    return result


def table(r: dict):
    from . import identity
    title, header, rows, notes = identity.table(r)
    hippo = "; ".join(f"cfg {h['cfg']:g} {h['style']}: {h['top5']}/{h['seeds']} (top-1 {h['top1']})" for h in r["hippo"])
    notes += (f" The hippo (the aim: hippopotamus in the judge's top 5 for at least 8 of 16 seeds): {hippo}.")
    return title, header, rows, notes

"""Latent DiT training on the favicon autoencoder (the paper's pipeline at favicon size): encode, scale, train, decode.

`ditweb train PRESET --vae models/favicon-vae.safetensors` (dit_model/train.py calls `encode_for_training`):

1. every training image is encoded once by the autoencoder (dit_model/favicon_vae.py) to its posterior mean,
   minus the latents' measured mean and times 1 / their measured std (both stored in the autoencoder's config
   as shift_factor and scaling_factor), so the DiT sees latents of std 1, like the paper's 0.18215-scaled SD latents;
2. and its horizontal mirror image too: a flipped latent is not the latent of the flipped image, so the flip
   augmentation picks between the two encodings (`latent_batch`, called by randomness.make_batch);
3. the run records the autoencoder as {"path", "sha256", "latent_shape"} (`vae_reference`): in ckpt.pt's
   train_args["vae_ref"] and in every weights file's metadata (`autoencoder`), so `ditweb sample MODEL`
   finds and checks the autoencoder itself (`vae_for_model`): a different file at that path, or one that cannot
   be found, is a one-line error. A decoder fine-tune of the named file (`ditweb train-vae --init FILE
   --decoder-only`: same encoder, shift and scale, the file's hash in its metadata `encoder_of`) is accepted in
   its place (`favicon_vae.shares_latents`): the latents are the same, only their decoding changed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ditformat.errors import UsageError

from .data import ROOT
from .vae import VAEError


class AutoencoderMismatch(UsageError):
    """A latent model and an autoencoder that do not belong together."""


def vae_reference(path, vae) -> dict:
    from .favicon_vae import file_sha256
    p = Path(path)
    try:                                                   # stored relative to the repository when inside it
        shown = str(p.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(p)
    return {"path": shown, "sha256": file_sha256(p)}


@torch.no_grad()
def encode_for_training(path, images_u8: np.ndarray, expect: dict | None = None, batch: int = 256):
    """(latents (N, 2, C, h, w) float32: each image's and its mirror image's, the autoencoder's reference).
    `expect`: the reference a resumed run recorded; another file is refused."""
    from .favicon_vae import load_favicon_vae, shares_latents, to_model
    vae = load_favicon_vae(path)
    ref = vae_reference(path, vae)
    if expect is not None and expect.get("sha256") != ref["sha256"]:
        if not shares_latents(path, str(expect.get("sha256"))):
            raise AutoencoderMismatch(f"{path}: sha256 {ref['sha256'][:12]}... is not the autoencoder this run was "
                                      f"trained with ({expect.get('path')}, sha256 {str(expect.get('sha256'))[:12]}...), "
                                      f"nor a decoder fine-tune of it")
        ref = {"path": ref["path"], "sha256": expect["sha256"]}        # same latents: the run keeps naming its start
    if images_u8.shape[1] % vae.downscale or images_u8.shape[3] != vae.cfg.out_channels:
        raise AutoencoderMismatch(f"{path}: encodes images of {vae.cfg.out_channels} channels and a side divisible by "
                                  f"{vae.downscale}, the data is {images_u8.shape[1]}x{images_u8.shape[2]}x{images_u8.shape[3]}")
    out = []
    for i in range(0, len(images_u8), batch):
        x = to_model(images_u8[i:i + batch])
        out.append(torch.stack([vae.encode(x), vae.encode(x.flip(-1))], dim=1))
    lat = torch.cat(out)
    ref["latent_shape"] = list(lat.shape[2:])
    print(f"encoded {len(lat)} images (and their mirror images) with {path}: latents {tuple(lat.shape[2:])}, "
          f"std {lat[:, 0].std().item():.3f} after scaling", file=sys.stderr)
    return lat, ref


def latent_batch(latents: torch.Tensor, sel: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The (n, C, h, w) latents of images `sel`, the mirror image's where `flips` is set."""
    pair = latents[sel.to(latents.device)]                                 # (n, 2, C, h, w)
    return pair[torch.arange(len(sel), device=pair.device), flips.to(pair.device).long()]


def weights_metadata(ref: dict | None) -> dict:
    """The safetensors metadata entry naming the autoencoder (empty for a pixel model)."""
    return {"autoencoder": json.dumps(ref)} if ref else {}


def read_reference(source) -> dict | None:
    """The autoencoder a model file names (safetensors metadata `autoencoder`, or ckpt.pt's train_args["vae_ref"]),
    or None for a pixel model."""
    p = Path(source)
    if p.is_dir() or not p.is_file():
        return None
    ref = None
    if p.suffix == ".safetensors":
        from .vae import safetensors_metadata
        try:
            meta = safetensors_metadata(p)
        except VAEError:
            return None                                    # not ours to judge: load_model says what is wrong
        if "autoencoder" in meta:
            try:
                ref = json.loads(meta["autoencoder"])
            except ValueError:
                raise AutoencoderMismatch(f"{p}: metadata 'autoencoder' is not JSON") from None
    elif p.suffix == ".pt":
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            return None
        args = obj.get("train_args") if isinstance(obj, dict) else None
        ref = args.get("vae_ref") if isinstance(args, dict) else None
    if ref is None:
        return None
    if not (isinstance(ref, dict) and isinstance(ref.get("path"), str) and isinstance(ref.get("sha256"), str)):
        raise AutoencoderMismatch(f"{p}: its autoencoder reference is malformed (want path and sha256)")
    return ref


def vae_for_model(source, given: str | None = None):
    """(the decoder of the autoencoder a latent model names, its path), or (None, None) for a pixel model.
    `given` (--vae) overrides where to look, not what to accept: it must be the recorded file (its sha256) or a
    decoder fine-tune of it (`favicon_vae.shares_latents`)."""
    from .favicon_vae import shares_latents
    from .vae import load_vae
    ref = read_reference(source)
    if ref is None:
        return None, None
    if given is not None:
        tries = [Path(given)]
    else:
        stored = Path(ref["path"])
        tries = [stored, ROOT / stored, Path(source).parent / stored.name]
    found = next((t for t in tries if t.is_file()), None)
    if found is None:
        raise AutoencoderMismatch(f"{source}: a latent model of the autoencoder {ref['path']} (sha256 "
                                  f"{ref['sha256'][:12]}...), which is not there; pass its path with --vae")
    try:
        same = shares_latents(found, ref["sha256"])
    except VAEError as e:
        raise AutoencoderMismatch(str(e)) from None
    if not same:
        raise AutoencoderMismatch(f"{source}: trained on the latents of the autoencoder with sha256 {ref['sha256'][:12]}..., "
                                  f"but {found} is another autoencoder (neither that file nor a decoder fine-tune of it)")
    vae = load_vae(found, quiet=True)
    shape = ref.get("latent_shape")
    if shape is not None and shape[0] != vae.cfg.latent_channels:
        raise AutoencoderMismatch(f"{found}: decodes {vae.cfg.latent_channels}-channel latents, {source} makes {shape[0]}")
    return vae, found


# ---------------------------------------------------------------- the hooks dit_model/train.py calls

def training_latents(opts: dict, data, saved: dict | None) -> tuple[dict, dict]:
    """For `ditweb train --vae`: encodes the data (kept as `data.latents`, (N, 2, C, h, w)) and returns
    ({"vae_ref": reference} for the run's train_args, the model's input_size and in_channels); for a pixel run
    ({}, the images' size and 4 channels)."""
    if not opts.get("vae"):
        data.latents = None
        return {}, dict(input_size=data.size, in_channels=4)
    expect = None
    if saved is not None:
        expect = (saved.get("train_args") or {}).get("vae_ref")
        if expect is None:
            raise AutoencoderMismatch(f"--vae {opts['vae']}: the resumed run was trained on pixels, not latents")
    data.latents, ref = encode_for_training(opts["vae"], data.images, expect)
    return {"vae_ref": ref}, dict(input_size=data.latents.shape[-1], in_channels=data.latents.shape[2])


def training_inputs(data) -> torch.Tensor:
    """What make_batch draws from: the latents of a --vae run, else the uint8 images (N, S, S, 4)."""
    latents = getattr(data, "latents", None)
    return latents if latents is not None else torch.from_numpy(data.images)


@torch.no_grad()
def decode_for_grid(path, latents: torch.Tensor) -> torch.Tensor:
    """Sampled latents -> images in [-1, 1] with the run's autoencoder (training sample grids)."""
    from .vae import load_vae
    return load_vae(path, quiet=True).decode(latents.float())

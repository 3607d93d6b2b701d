"""The decode program of a latent bundle: the VAE decoder's dispatches (export/decode.py), run once after
sampling to turn the N latents into N RGB images. numpy + wgpu only (no torch).

`DecodeRunner` takes the pipelines, weight buffers, the decoder's activation buffer table and its program
(the same structures as the bundle's other programs: linear forms in N, docs/bundle-format.md) and replays it."""
from __future__ import annotations

import numpy as np

from ditformat.errors import UsageError
from ditformat.forms import evaluate

from .gpu import GPU, DeviceLimitError, refuses_gpu_errors
from .shards import check_weight_limits, upload_shards
from .verify import BundleError, check_dispatch_reach, verify_decoder


def bytes_needed(buffers: dict, N: int) -> tuple[int, int]:
    """(total bytes, largest buffer) of the activation buffers at N images."""
    sizes = [4 * max(evaluate(b["elements"], N, N), 1) for b in buffers.values() if b["kind"] == "activation"]
    return sum(sizes), max(sizes, default=0)


class DecodeRunner:
    def __init__(self, gpu: GPU, pipelines: dict, kernels: dict, weights: dict, buffers: dict, program: list,
                 latent: str, image: str, latent_shape, image_shape):
        self.gpu, self.pipelines, self.kernels, self.weights = gpu, pipelines, kernels, weights
        self.buffer_table, self.program = buffers, program
        self.latent, self.image = latent, image
        self.latent_shape, self.image_shape = tuple(latent_shape), tuple(image_shape)
        self._n = None

    def check_limits(self, N: int) -> None:
        """Refuse before allocating when one buffer exceeds the adapter's binding or buffer size."""
        total, largest = bytes_needed(self.buffer_table, N)
        cap = min(self.gpu.limit("max-storage-buffer-binding-size"), self.gpu.limit("max-buffer-size"))
        if largest > cap:
            raise DeviceLimitError(f"decoding {N} image(s) needs a {largest / 2 ** 20:.1f} MiB buffer ({total / 2 ** 20:.0f} MiB "
                                   f"of activations in all); this adapter ({self.gpu.name}) binds at most "
                                   f"{cap / 2 ** 20:.1f} MiB: decode fewer images at once")

    def _prepare(self, N: int):
        if self._n == N:
            return
        self.check_limits(N)
        gpu = self.gpu
        bufs = dict(self.weights)
        self.buffers, self.seq, self._n = None, None, None
        try:
            for name, b in self.buffer_table.items():
                if b["kind"] == "activation":
                    bufs[name] = gpu.buffer(4 * max(evaluate(b["elements"], N, N), 1), name)
        except DeviceLimitError:
            raise
        except Exception as e:      # wgpu-py reports an out-of-memory allocation as an exception
            total, _ = bytes_needed(self.buffer_table, N)
            raise DeviceLimitError(f"allocating {total / 2 ** 20:.0f} MiB of decoder activations for {N} image(s) failed "
                                   f"on {gpu.name}: {str(e).splitlines()[0][:120]}; decode fewer images at once") from None
        max_groups = gpu.limit("max-compute-workgroups-per-dimension")
        seq = []
        for d in self.program:
            pipe, bgl = self.pipelines[d["kernel"]]
            vals = [evaluate(p, N, N) for p in d["params"]]
            if any(v >= 2 ** 32 for v in vals):
                raise DeviceLimitError(f"{d['label']}: a parameter overflows u32 at N={N}; decode fewer images at once")
            raw = np.array(vals + [0] * (-len(vals) % 4), np.uint32)
            uni = gpu.buffer(raw.nbytes, f"{d['label']}.params", raw, uniform=True)
            groups = [evaluate(g, N, N) for g in d["workgroups"]]
            check_dispatch_reach(d["label"], d, self.kernels[d["kernel"]], d["workgroups"], self.buffer_table, N, N)
            if max(groups) > max_groups:
                raise DeviceLimitError(f"{d['label']}: {max(groups)} workgroups exceed this adapter's "
                                       f"maxComputeWorkgroupsPerDimension {max_groups}; decode fewer images at once")
            seq.append((pipe, gpu.bind_group(bgl, [uni] + [bufs[n] for n in d["bindings"]], d["label"]), groups))
        self.buffers, self.seq, self._n = bufs, seq, N

    @refuses_gpu_errors("decoding")
    def decode(self, latents) -> np.ndarray:
        """latents (N, L, h, w) as the DiT samples them -> images (N, 3, H, W) in about [-1, 1] (not clamped),
        decoded one after the other."""
        z = np.ascontiguousarray(latents, np.float32)
        if z.ndim != 4 or z.shape[1:] != self.latent_shape or z.shape[0] < 1:
            raise UsageError(f"latents must be (N >= 1, {', '.join(map(str, self.latent_shape))}), got {z.shape}")
        N = z.shape[0]
        if N > 1:                   # one image at a time through one image's buffers (~270 MB at 256 px)
            return np.concatenate([self.decode(z[i:i + 1]) for i in range(N)])
        self._prepare(N)
        self.gpu.write(self.buffers[self.latent], z)
        enc = self.gpu.device.create_command_encoder(label="decode")
        cp = enc.begin_compute_pass(label="decode")
        for pipe, bg, groups in self.seq:
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(*groups)
        cp.end()
        self.gpu.device.queue.submit([enc.finish()])
        out = self.gpu.read(self.buffers[self.image], np.float32, N * int(np.prod(self.image_shape)))
        return out.reshape(N, *self.image_shape)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) decoder output -> (N, H, W, 3) uint8 as dit_model.images.to_uint8: (x + 1) * 127.5 + 0.5,
    clipped to [0, 255] (the clamp to [-1, 1]), truncated."""
    a = np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return a.transpose(0, 2, 3, 1)


# ------------------------------------------------------------------ decoder/ of a bundle: load (verified first)

def check_decoder_listing(bundle_manifest: dict, m: dict) -> None:
    """The bundle's files list exactly the decoder's files (decoder/ + name) with the decoder manifest's size and
    sha256, so both manifests vouch for the same bytes (web/decode.js checkDecoderListing is the twin)."""
    listed = sorted(f[8:] for f in bundle_manifest["files"] if f.startswith("decoder/") and f != "decoder/manifest.json")
    if listed != sorted(m["files"]):
        raise BundleError(f"manifest.json: files lists decoder/ files {listed[:4]}... that differ from "
                          f"decoder/manifest.json's {sorted(m['files'])[:4]}...")
    for f, info in m["files"].items():
        other = bundle_manifest["files"][f"decoder/{f}"]
        if (other["size"], other["sha256"]) != (info["size"], info["sha256"]):
            raise BundleError(f"decoder/{f}: size or sha256 differs between manifest.json and decoder/manifest.json")


@refuses_gpu_errors("loading the decoder")
def load_decoder(bundle, max_images: int = 1):
    """The bundle's decoder (a DecodeRunner with `.manifest`), or None for a bundle without one. Weights are
    uploaded shard by shard after checking that the weights and the activations of `max_images` images fit
    the adapter's buffer limits (a one-line DeviceLimitError otherwise)."""
    root = bundle.path / "decoder"
    if "decoder/manifest.json" not in bundle.manifest["files"]:      # listed (and hash-checked) by the bundle
        return None
    m = verify_decoder(root, bundle.manifest["io"]["x_shape"])     # runtime_py/verify.py, with the bundle's checks
    check_decoder_listing(bundle.manifest, m)
    gpu = bundle.gpu
    weights = {n: b for n, b in m["buffers"].items() if b["kind"] == "weight"}
    check_weight_limits(gpu, weights, root, "decoder weights")
    cap = min(gpu.limit("max-storage-buffer-binding-size"), gpu.limit("max-buffer-size"))
    total, largest = bytes_needed(m["buffers"], max_images)
    if largest > cap:
        raise DeviceLimitError(f"{root}: decoding needs a {largest / 2 ** 20:.1f} MiB activation buffer; this adapter "
                               f"({gpu.name}) binds at most {cap / 2 ** 20:.1f} MiB per buffer")
    pipelines = {name: gpu.pipeline((root / k["file"]).read_text(), name, k["bindings"]) for name, k in m["kernels"].items()}
    buffers = upload_shards(gpu, root, weights, "decoder weights")
    wbytes = sum(b["bytes"] for b in weights.values())
    runner = DecodeRunner(gpu, pipelines, m["kernels"], buffers, m["buffers"], m["program"], m["io"]["latent"],
                          m["io"]["image"], m["latent_shape"], m["image_shape"])
    runner.manifest = m
    runner.weight_bytes = wbytes
    return runner

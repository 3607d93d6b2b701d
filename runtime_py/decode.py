"""The decode program of a latent bundle: the VAE decoder's dispatches (export/decode.py), run once after
sampling to turn the N latents into N RGB images. numpy + wgpu only (no torch).

`DecodeRunner` takes the pipelines, weight buffers, the decoder's activation buffer table and its program
(the same structures as the bundle's other programs: linear forms in N, docs/bundle-format.md) and replays it."""
from __future__ import annotations

import numpy as np

from ditformat.errors import UsageError
from ditformat.forms import evaluate

from .gpu import GPU, DeviceLimitError
from .shards import check_weight_limits, upload_shards


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
            if max(groups) > max_groups:
                raise DeviceLimitError(f"{d['label']}: {max(groups)} workgroups exceed this adapter's "
                                       f"maxComputeWorkgroupsPerDimension {max_groups}; decode fewer images at once")
            seq.append((pipe, gpu.bind_group(bgl, [uni] + [bufs[n] for n in d["bindings"]], d["label"]), groups))
        self.buffers, self.seq, self._n = bufs, seq, N

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


# ------------------------------------------------------------------ decoder/ of a bundle: verify, then load

DECODER_OPS = {"conv2d", "conv2d_q8", "groupnorm", "upsample_nearest", "bmm", "softmax_rows"}   # wgsl/ops.py (no torch)


def _schema() -> dict:
    import json

    from ditformat.schema import SCHEMA_PATH
    return json.loads((SCHEMA_PATH.parent / "decoder-schema.json").read_text())


def verify_decoder(root, latent_shape=None) -> dict:
    """decoder/manifest.json of a bundle, checked like the bundle's own manifest before any GPU call: schema,
    file sizes and sha256, the WGSL bindings and workgroup sizes against the kernel table, every dispatch's
    kernel, buffers and param count, the weight shards' headers against the buffer table. `latent_shape`:
    the DiT's x_shape, which the decoder must take. Returns the manifest (weights get `_offset`)."""
    import json
    from pathlib import Path

    from ditformat.schema import SchemaMismatch, check

    from .verify import (HashMismatchError, KernelError, ManifestError, MissingFileError, ProgramError,
                         SizeMismatchError, WeightsError, _no_constants, check_kernel_source, check_weight_buffers,
                         sha256_file)
    root = Path(root)
    w = root / "manifest.json"
    spec = _schema()
    try:
        m = json.loads(w.read_bytes().decode("utf-8"), parse_constant=_no_constants)
    except FileNotFoundError:
        raise MissingFileError(f"{w}: missing") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ManifestError(f"{w}: not JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(m, dict) or m.get("format") != spec["format"] or m.get("format_version") != spec["format_version"]:
        got = (m.get("format"), m.get("format_version")) if isinstance(m, dict) else None
        raise ManifestError(f"{w}: format {str(got)[:60]} is not {spec['format']} version {spec['format_version']}; "
                            "re-export the bundle with --vae")
    try:
        check(m, spec["manifest"], str(w))
    except SchemaMismatch as e:
        raise ManifestError(str(e)) from None
    if latent_shape is not None and m["latent_shape"] != list(latent_shape):
        raise ManifestError(f"{w}: latent_shape {m['latent_shape']} differs from the model's x_shape {list(latent_shape)}")
    for rel, info in m["files"].items():
        if rel.startswith("/") or "\\" in rel or ".." in rel.split("/") or ":" in rel or not rel:
            raise ManifestError(f"{w}.files: unsafe path {rel[:60]!r}")
        f = root / rel
        if not f.is_file():
            raise MissingFileError(f"{f}: listed in {w.name} files but absent")
        if f.stat().st_size != info["size"]:
            raise SizeMismatchError(f"{f}: {f.stat().st_size} bytes, {w.name} files says {info['size']}")
        if sha256_file(f) != info["sha256"]:
            raise HashMismatchError(f"{f}: sha256 differs from {w.name}")
    for kname, k in m["kernels"].items():
        if k["file"] not in m["files"]:
            raise KernelError(f"{w}.kernels.{kname}.file {k['file'][:60]!r} is not listed in files")
        if k["op"] not in DECODER_OPS:
            raise KernelError(f"{w}.kernels.{kname}.op {k['op'][:40]!r} is not a decoder kernel ({', '.join(sorted(DECODER_OPS))})")
        b = k["bindings"]
        if [x["binding"] for x in b] != list(range(len(b))) or not b or b[0]["type"] != "uniform" or \
                any(x["type"] == "uniform" for x in b[1:]):
            raise ManifestError(f"{w}.kernels.{kname}.bindings: must be 0, 1, ... in order, binding 0 the params uniform "
                                "and the only uniform")
        try:
            code = (root / k["file"]).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise KernelError(f"{root / k['file']}: not UTF-8 text") from None
        check_kernel_source(kname, k, code, str(root / k["file"]))
    bufs = m["buffers"]
    for key in ("latent", "image"):
        if bufs.get(m["io"][key], {}).get("kind") != "activation":
            raise ManifestError(f"{w}.io.{key}: {m['io'][key][:60]!r} names no activation buffer")
    for n, d in enumerate(m["program"]):
        where = f"{w}.program[{n}] ({d['label'][:40]})"
        k = m["kernels"].get(d["kernel"])
        if k is None:
            raise ProgramError(f"{where}: unknown kernel {d['kernel'][:60]!r}")
        if len(d["bindings"]) != len(k["bindings"]) - 1 or len(d["params"]) != len(k["params"]):
            raise ProgramError(f"{where}: {len(d['bindings'])} bindings / {len(d['params'])} params, kernel "
                               f"{d['kernel']} declares {len(k['bindings']) - 1} / {len(k['params'])}")
        for i, bname in enumerate(d["bindings"], 1):
            if bname not in bufs:
                raise ProgramError(f"{where}: binding {i} names unknown buffer {bname[:60]!r}")
            if bufs[bname]["kind"] == "weight" and k["bindings"][i]["type"] != "read-only-storage":
                raise ProgramError(f"{where}: binding {i} would write weight buffer {bname!r}")
    for name, b in bufs.items():
        if b["kind"] == "weight" and b["file"] not in m["files"]:
            raise WeightsError(f"{w}.buffers.{name}.file {b['file'][:60]!r} is not listed in files")
    check_weight_buffers(root, bufs, w.name)
    return m


def load_decoder(bundle, max_images: int = 1):
    """The bundle's decoder (a DecodeRunner with `.manifest`), or None for a bundle without one. Weights are
    uploaded shard by shard after checking that the weights and the activations of `max_images` images fit
    the adapter's buffer limits (a one-line DeviceLimitError otherwise)."""
    root = bundle.path / "decoder"
    if "decoder/manifest.json" not in bundle.manifest["files"]:      # listed (and hash-checked) by the bundle
        return None
    m = verify_decoder(root, bundle.manifest["io"]["x_shape"])
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

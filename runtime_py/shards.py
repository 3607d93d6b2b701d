"""Weight shards onto the GPU (ditformat/shards.py writes them; docs/bundle-format.md, "Weight shards"), shared by
the DiT's weights (runtime_py/bundle.py) and a latent bundle's decoder (runtime_py/decode.py). The buffers were
verified first (runtime_py/verify.py `check_weight_buffers` sets each one's `_file` and `_offset`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ditformat.packed import UnpackError, packed_shapes, unpack_q4k

from .gpu import GPU, DeviceLimitError
from .verify import WeightsError


def buffer_data(raw: bytes, b: dict) -> bytes:
    """The bytes of verified weight buffer `b` from its shard's bytes: the tensor as stored, or a packed buffer
    (encoding q4k) unpacked into its i8 values (ditformat/packed.py)."""
    if "encoding" not in b:
        return raw[b["_offset"]: b["_offset"] + b["bytes"]]
    (n, half), (_, groups) = packed_shapes(b["shape"])
    nibbles = np.frombuffer(raw, np.uint8, n * half, b["_offset"]).reshape(n, half)
    steps = np.frombuffer(raw, np.uint8, n * groups, b["_steps_offset"]).reshape(n, groups)
    return unpack_q4k(nibbles, steps, b["tensor"]).tobytes()


def check_weight_limits(gpu: GPU, weights: dict, where, what: str) -> None:
    """Before allocating: the largest weight buffer against the adapter's binding and buffer size, in one line."""
    cap = min(gpu.limit("max-storage-buffer-binding-size"), gpu.limit("max-buffer-size"))
    big = max(weights.items(), key=lambda kv: kv[1]["bytes"], default=None)
    if big is not None and -(-big[1]["bytes"] // 4) * 4 > cap:
        total = sum(b["bytes"] for b in weights.values())
        raise DeviceLimitError(f"{where}: {what} ({total / 2 ** 20:.0f} MiB) include {big[0]!r} of "
                               f"{big[1]['bytes'] / 2 ** 20:.1f} MiB; this adapter ({gpu.name}) binds at most "
                               f"{cap / 2 ** 20:.1f} MiB per buffer")


def upload_shards(gpu: GPU, root, weights: dict, what: str) -> dict:
    """{buffer name: GPU buffer}: each shard read once (one shard in memory at a time), its tensors uploaded. An
    allocation the device refuses (out of memory) becomes a one-line DeviceLimitError naming the total."""
    root = Path(root)
    out = {}
    try:
        for fname in sorted({b["_file"] for b in weights.values()}):
            raw = (root / fname).read_bytes()
            for n, b in weights.items():
                if b["_file"] == fname:
                    out[n] = gpu.buffer(b["bytes"], n, buffer_data(raw, b))
            del raw
    except DeviceLimitError:
        raise
    except UnpackError as e:                # the shard changed since it was verified
        raise WeightsError(f"{root / fname}: {e}") from None
    except Exception as e:      # wgpu-py reports an out-of-memory allocation as an exception
        total = sum(b["bytes"] for b in weights.values())
        raise DeviceLimitError(f"{root}: allocating {total / 2 ** 20:.0f} MiB of {what} failed on {gpu.name}: "
                               f"{str(e).splitlines()[0][:120]}") from None
    return out

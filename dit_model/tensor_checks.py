"""Checks on the tensors of an untrusted checkpoint before anything big is allocated: every value
finite, every tensor owning its storage (no stride-0 or overlapping views), the model within a
memory budget. Used by dit_model.checkpoint and dit_model.convert (both read files from users)."""
from __future__ import annotations

import os

import torch

from ditformat.errors import DitwebError


class CheckpointError(DitwebError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def first_nonfinite(tensors: dict, prefix: str = "") -> str | None:
    """'NAME holds N NaN / Inf values' for the first floating tensor with a NaN or an Inf, else None."""
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) and v.numel():
            finite = torch.isfinite(v)
            if not bool(finite.all()):
                bad = v[~finite]
                n_nan = int(torch.isnan(bad).sum())
                kinds = ", ".join(f"{n} {w}" for n, w in ((n_nan, "NaN"), (bad.numel() - n_nan, "Inf")) if n)
                return f"tensor {(prefix + '.' if prefix else '') + str(k)!r} holds {kinds}"
    return None


def check_finite(tensors: dict, path, what: str = "weights") -> None:
    """CheckpointError naming the first tensor with a NaN or an Inf."""
    bad = first_nonfinite(tensors)
    if bad:
        raise CheckpointError(f"{path}: non-finite {what}: {bad}; refusing to use them")


# ------------------------------------------------------------------ bounded resources

def memory_budget() -> int:
    """Bytes a model's weights may take: $DITWEB_MEMORY_BUDGET (bytes, or with a K/M/G/T suffix), else half of
    this machine's physical memory."""
    text = os.environ.get("DITWEB_MEMORY_BUDGET", "").strip()
    if text:
        import re
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
        if not m:
            raise CheckpointError(f"DITWEB_MEMORY_BUDGET={text[:40]!r}: want a size such as 8G or 500M")
        return int(float(m[1]) * 1024 ** "_KMGT".index((m[2] or "_").upper()))
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 16 * 2 ** 30


def _tensors(obj, out: list, name: str = "", depth: int = 0) -> list:
    """(name, tensor) of every tensor in nested dicts / lists (a checkpoint's object)."""
    if isinstance(obj, torch.Tensor):
        out.append((name, obj))
    elif depth < 8 and isinstance(obj, dict):
        for k, v in obj.items():
            _tensors(v, out, f"{name}.{k}" if name else str(k), depth + 1)
    elif depth < 8 and isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _tensors(v, out, f"{name}[{i}]", depth + 1)
    return out


def check_owned_storage(obj, path) -> None:
    """Every tensor in a loaded checkpoint owns the bytes it shows: no stride-0 or self-overlapping view, no two
    tensors over the same bytes, nothing outside its storage. A file can then not claim more elements than it
    holds (a 10 kB file of stride-0 views of one float would otherwise pass as gigabytes of weights and be
    materialised by load_state_dict). Checked on strides and offsets only: nothing is allocated."""
    spans: dict[int, list] = {}
    for name, t in _tensors(obj, []):
        if t.numel() == 0:
            continue
        if t.is_sparse or t.layout != torch.strided:
            raise CheckpointError(f"{path}: tensor {name!r} is not a dense tensor ({t.layout})")
        dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1)
        reach = 0                                                       # largest element offset so far
        for st, sz in dims:
            if st <= reach:                                             # stride 0, or overlapping rows
                raise CheckpointError(
                    f"{path}: tensor {name!r} (shape {list(t.shape)}, strides {list(t.stride())}) is a view that does "
                    f"not own its storage: its elements overlap; a checkpoint's tensors must be plain arrays")
            reach += st * (sz - 1)
        es = t.element_size()
        storage = t.untyped_storage()
        lo, hi = t.storage_offset() * es, (t.storage_offset() + reach + 1) * es
        if t.storage_offset() < 0 or hi > storage.nbytes():
            raise CheckpointError(f"{path}: tensor {name!r} reaches past its storage ({hi} of {storage.nbytes()} bytes)")
        spans.setdefault(storage.data_ptr(), []).append((lo, hi, name))
    for ranges in spans.values():
        ranges = sorted({(lo, hi): name for lo, hi, name in ranges}.items())   # one tensor saved twice is fine
        for ((lo0, hi0), a), ((lo1, hi1), b) in zip(ranges, ranges[1:]):      # ({"model": sd, "ema": sd})
            if lo1 < hi0:
                raise CheckpointError(f"{path}: tensors {a!r} and {b!r} share the same bytes; a checkpoint's tensors "
                                      f"must each own their storage")


def check_model_budget(cfg, path, budget: int | None = None, params: int | None = None) -> None:
    """The model `cfg` describes fits the memory budget (float32 weights), before it is allocated."""
    if params is None:
        params = sum(p.numel() for p in build_meta(cfg).parameters())
    need, budget = 4 * params, memory_budget() if budget is None else budget
    if need > budget:
        raise CheckpointError(f"{path}: its config asks for a model of {params:,} parameters ({need / 2 ** 30:.2f} GiB "
                              f"of float32 weights), over the memory budget of {budget / 2 ** 30:.2f} GiB "
                              f"(half the physical memory; set DITWEB_MEMORY_BUDGET to change it)")

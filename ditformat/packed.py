"""Packed weight encodings (bundle-schema.json `weight_encodings`; docs/bundle-format.md, "int4 bundles"): a weight
buffer whose manifest entry names an `encoding` is stored in other tensors than its dtype says, and every runtime
unpacks it at load into the buffer the kernels read. numpy only.

q4k: an i8 buffer [N, K] as 4-bit values with a step per group of `group` inputs of a row. The value at (r, c) is
q * k, q the signed nibble c of row r (-q_max..q_max, two's complement; byte c // 2 of the row, the low nibble for
even c) of the U8 tensor `tensor` [N, K / 2], k the U8 value [r, c // group] (k_min..k_max) of the U8 tensor
`tensor` + steps_suffix [N, K / group]. Unpacking is exact (|q k| <= q_max k_max = 126 fits int8), so the int8
kernels run on exactly the values an int8 bundle with these values would hold. A nibble of -8 or a step outside
k_min..k_max is refused (UnpackError, one line naming the tensor): a file a runtime would read differently from
the exporter's meaning is no bundle. web/bundle.js `unpackQ4k` is the twin (the same checks in the same order)."""
from __future__ import annotations

import numpy as np

from .schema import SCHEMA

ENCODINGS = SCHEMA["weight_encodings"]
Q4K = ENCODINGS["q4k"]
GROUP, Q_MAX, K_MIN, K_MAX = Q4K["group"], Q4K["q_max"], Q4K["k_min"], Q4K["k_max"]
STEPS_SUFFIX = Q4K["steps_suffix"]
# the bundle dtypes (manifest "dtype") whose Linears run matmul_q8: int8, and int4 on its packed weights unpacked
# to int8; their other tensors are f16
QUANTISED_DTYPES = ("int8", "int4")
assert Q_MAX * K_MAX <= 127 and GROUP % 4 == 0     # web/bundle.js unpackQ4k writes 4 values a u32


class UnpackError(ValueError):
    """A packed tensor holds a value its encoding does not allow (the message names the tensor and the place)."""


def steps_tensor(tensor: str) -> str:
    """The name of the steps tensor (k) that goes with the nibble tensor `tensor`."""
    return tensor + STEPS_SUFFIX


def packed_shapes(shape) -> tuple[list[int], list[int]] | None:
    """([N, K/2], [N, K/group]): the shapes of the nibble and step tensors of an i8 buffer of `shape`, or None when
    the encoding cannot hold it (not two dimensions, K not a multiple of the group)."""
    if len(shape) != 2 or shape[1] % GROUP or shape[1] == 0:
        return None
    return [shape[0], shape[1] // 2], [shape[0], shape[1] // GROUP]


def choose_steps(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group of GROUP consecutive values of each row of g (N, K) (real values, |g| <= 127: w / scale of the
    int8 quantiser), the step k in K_MIN..K_MAX of least squared error sum (clip(rint(g / k), -Q_MAX, Q_MAX) k - g)^2
    (the smallest such k on a tie) -> (q (N, K) int8 in -Q_MAX..Q_MAX, k (N, K / GROUP) uint8)."""
    g = np.asarray(g, np.float64)
    N, K = g.shape
    if packed_shapes(g.shape) is None:
        raise ValueError(f"q4k needs K a multiple of {GROUP}, got shape {list(g.shape)}")
    groups = g.reshape(N, K // GROUP, GROUP)
    best_err = np.full((N, K // GROUP), np.inf)
    best_q = np.zeros(groups.shape, np.int8)
    best_k = np.zeros((N, K // GROUP), np.uint8)
    for k in range(K_MIN, K_MAX + 1):
        q = np.clip(np.rint(groups / k), -Q_MAX, Q_MAX)
        err = ((q * k - groups) ** 2).sum(axis=2)
        better = err < best_err                                  # strict: the smallest k wins a tie
        best_err = np.where(better, err, best_err)
        best_q = np.where(better[..., None], q.astype(np.int8), best_q)
        best_k = np.where(better, np.uint8(k), best_k)
    return best_q.reshape(N, K), best_k


def pack_q4k(q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q (N, K) in -Q_MAX..Q_MAX, k (N, K / GROUP)) -> (nibbles uint8 (N, K / 2), k uint8): the stored tensors."""
    q = np.asarray(q)
    if q.min(initial=0) < -Q_MAX or q.max(initial=0) > Q_MAX:
        raise ValueError(f"q4k values are -{Q_MAX}..{Q_MAX}")
    k = np.asarray(k)
    if k.size and (k.min() < K_MIN or k.max() > K_MAX):
        raise ValueError(f"q4k steps are {K_MIN}..{K_MAX}")
    u = (q.astype(np.int16) & 15).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8), k.astype(np.uint8)


def unpack_q4k(nibbles: np.ndarray, k: np.ndarray, name: str) -> np.ndarray:
    """The stored tensors (nibbles uint8 (N, K / 2), k uint8 (N, K / GROUP)) -> the i8 buffer (N, K). Refuses a step
    outside K_MIN..K_MAX (all steps checked first), then a nibble of -8, naming the first in row order."""
    nibbles, k = np.asarray(nibbles, np.uint8), np.asarray(k, np.uint8)
    N, half = nibbles.shape
    K = 2 * half
    bad = (k < K_MIN) | (k > K_MAX)
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise UnpackError(f"tensor {steps_tensor(name)}: step {int(k[r, c])} at row {r}, group {c} is outside "
                          f"{K_MIN}..{K_MAX}")
    v = np.empty((N, K), np.int16)
    v[:, 0::2], v[:, 1::2] = nibbles & 15, nibbles >> 4
    bad = v == 8
    if bad.any():
        r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise UnpackError(f"tensor {name}: value -8 at row {r}, column {c} (q4k values are -{Q_MAX}..{Q_MAX})")
    v = np.where(v >= 8, v - 16, v)
    return (v.reshape(N, K // GROUP, GROUP) * k[:, :, None]).reshape(N, K).astype(np.int8)

"""op_matmul_q8 of web/ditweb-kernels.wasm (int8 weights, a scale per output channel, wasm/kernels.c), called
directly in node on random inputs and held to matmul_q8's derived error bound (wgsl/ops.py: the bound the WGSL
kernel is held to, K + 1 roundings) against its float64 reference at the dequantised weights q * scale. Shapes
with M not a multiple of 4 and N not a multiple of 8 take the kernel's edge paths; out_group / out_stride scatter
rows as the adaLN programs do. The whole-bundle forward pass of an int8 bundle: tests/test_wasm.py."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from wgsl.ops import OPS

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "_wasm_kernels_node.mjs"
ACT = {"none": 0, "gelu": 1, "silu": 2}
IN_ACT = {"none": 0, "silu": 1}
CASES = [  # M, N, K, out_group, out_stride, in_act, act
    (64, 128, 32, 64, 64, "none", "none"),
    (10, 13, 20, 10, 10, "silu", "gelu"),     # edges: 2 rows past 8, 5 columns past 8
    (6, 24, 16, 3, 5, "none", "silu"),        # rows scattered (m / 3) * 5 + m % 3
    (1, 7, 4, 1, 1, "silu", "none"),          # one row, fewer than 8 columns
    (33, 40, 128, 33, 33, "none", "gelu"),
]


def test_matmul_q8_matches_float64_within_its_bound():
    g = torch.Generator().manual_seed(8)
    calls, xs = [], []
    for M, N, K, group, stride, in_act, act in CASES:
        q = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int64)
        q[0, :] = -127                                          # the extreme value on a whole row
        scale = (torch.rand(N, generator=g, dtype=torch.float64) * 0.02 + 1e-3).float().double()
        a = torch.randn(M * K, generator=g, dtype=torch.float64).float().double()
        bias = (torch.randn(N, generator=g, dtype=torch.float64) * 0.1).float().double()
        rows_out = ((M - 1) // group) * stride + (M - 1) % group + 1
        b = (q & 0xFF).reshape(-1, 4)                           # the bundle's u32 words, low byte first
        words = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
        x = {"a": a, "wq": words.double(), "scale": scale, "bias": bias,
             "dst": torch.zeros(rows_out * N, dtype=torch.float64)}
        p = {"M": M, "N": N, "K": K, "out_group": group, "out_stride": stride}
        xs.append((x, p, {"in_act": in_act, "act": act}))
        scratch = ((M * K + 3) // 4) * 4 + 8 * K
        calls.append({"fn": "op_matmul_q8", "params": [M, N, K, group, stride],
                      "args": [{"f32": a.tolist()}, {"i8": q.reshape(-1).tolist()}, {"f32": scale.tolist()},
                               {"f32": bias.tolist()}, {"zeros": rows_out * N}, {"u32": IN_ACT[in_act]},
                               {"u32": ACT[act]}, {"zeros": scratch}],
                      "read": [4, rows_out * N]})
    r = subprocess.run(["node", str(SCRIPT)], input=json.dumps(calls), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    op = OPS["matmul_q8"]
    for (x, p, v), reply in zip(xs, json.loads(r.stdout)):
        got = np.asarray(reply["out"], np.float64)
        ref = op.reference(x, p, v, None)["dst"].numpy()
        bound = op.bound(x, p, v, None)["dst"].numpy()
        err = np.abs(got - ref)
        assert (err <= bound).all(), f"{p} {v}: error {err.max():.3g} exceeds its bound (ratio {(err / bound).max():.3g})"
        # rows the scatter skips stay untouched (zero)
        written = np.zeros(len(got), bool)
        for m in range(p["M"]):
            row = (m // p["out_group"]) * p["out_stride"] + m % p["out_group"]
            written[row * p["N"]: (row + 1) * p["N"]] = True
        assert (got[~written] == 0).all()

"""op_matmul_q8 of web/ditweb-kernels.wasm (int8 weights, a scale per output channel, wasm/kernels.c), called
directly in node on random inputs and held to matmul_q8's derived error bound (wgsl/ops.py: the bound the WGSL
kernel is held to, K + 1 roundings) against its float64 reference at the dequantised weights q * scale. Shapes
with M not a multiple of 4 and N not a multiple of 8 take the kernel's edge paths; out_group / out_stride scatter
rows as the adaLN programs do. The whole-bundle forward pass of an int8 bundle: tests/test_wasm.py. And the thread
pool's split kernels (op_<name>_part) give the whole op's bits for any number of parts (tests/test_wasm_threads.py
runs the pool itself in Chromium)."""
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


LABEL_CASES = [  # B, D, level sizes
    (1, 4, (1,)),
    (5, 8, (9,)),                             # one level: each value is q * scale alone (one rounding)
    (13, 68, (37, 11, 5, 3)),                 # a named model's four levels, null rows included
]


def test_label_embed_q8_matches_float64_within_its_bound():
    """op_label_embed_q8 (int8 bundles: the label table as signed bytes with an f32 scale per row) against
    label_embed_q8's float64 reference at the dequantised table q * scale, held to the bound the WGSL kernel is held
    to (wgsl/bounds.py bound_label_embed): each value q * scale is one rounding (q exact in f32), the L values of a
    label add L - 1 more, so y_emb is within gamma(L) sum_l |e_l| and c one rounding more. A row past the table reads
    the last row; one row is all -127 (the extreme byte), one all zeros. The table is quantised as the exporter does
    it (export/bundle.py quantize_linear)."""
    from export.bundle import quantize_linear
    g = torch.Generator().manual_seed(5)
    calls, xs = [], []
    for B, D, sizes in LABEL_CASES:
        rows, L = sum(sizes) + len(sizes), len(sizes)
        table = torch.randn(rows, D, generator=g, dtype=torch.float64) * 3.0
        table[-1] = -2.0
        table[0] = 0.0
        q, scale = quantize_linear(table.numpy().astype(np.float32))
        starts = np.cumsum([0] + [n + 1 for n in sizes[:-1]])
        y = (np.stack([np.arange(B) * (3 + l) % (n + 1) for l, n in enumerate(sizes)], 1) + starts).reshape(-1)
        y[0] = rows + 7                                         # past the table: the last row
        t_emb = torch.randn(B * D, generator=g, dtype=torch.float64).float().double()
        b = torch.from_numpy(q.astype(np.int64)).reshape(-1, 4) & 0xFF    # the bundle's u32 words, low byte first
        words = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
        x = {"y": torch.from_numpy(y.astype(np.float64)), "table": words.double(),
             "scale": torch.from_numpy(scale.astype(np.float64)), "t_emb": t_emb,
             "y_emb": torch.zeros(B * D, dtype=torch.float64), "c": torch.zeros(B * D, dtype=torch.float64)}
        p = {"count": B * D, "D": D, "rows": rows, "levels": L}
        args = [{"u32s": y.tolist()}, {"i8": q.reshape(-1).tolist()}, {"f32": scale.tolist()}, {"f32": t_emb.tolist()},
                {"zeros": B * D}, {"zeros": B * D}]
        for out in (4, 5):                                      # y_emb, then c
            calls.append({"fn": "op_label_embed_q8", "params": [B * D, D, rows, L], "args": args, "read": [out, B * D]})
        xs.append((x, p))
    r = subprocess.run(["node", str(SCRIPT)], input=json.dumps(calls), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    replies = json.loads(r.stdout)
    op = OPS["label_embed_q8"]
    for k, (x, p) in enumerate(xs):
        ref, bound = op.reference(x, p, {}, None), op.bound(x, p, {}, None)
        for name, reply in zip(("y_emb", "c"), replies[2 * k: 2 * k + 2]):
            err = np.abs(np.asarray(reply["out"], np.float64) - ref[name].numpy())
            assert (err <= bound[name].numpy()).all(), f"{p} {name}: error {err.max():.3g} exceeds its bound"
            assert np.abs(ref[name].numpy()).max() > 0


def test_split_kernels_give_the_same_bits_for_any_number_of_parts():
    """op_matmul_part, op_matmul_q8_part and op_attention_part (the thread pool's shares, web/wasm-threads.js), all
    parts run in turn, against the whole op in one call: the same bits for 1..7 parts, with M not a multiple of 4,
    fewer row blocks than parts, and attention rows (batch H T_q) not a multiple of the parts."""
    g = torch.Generator().manual_seed(3)
    rnd = lambda n: torch.randn(n, generator=g).tolist()
    M, N, K = 37, 20, 24
    q = torch.randint(-127, 128, (N * K,), generator=g).tolist()
    scratch = {"zeros": M * K + 8 * K * 8}
    mm = [{"f32": rnd(M * K)}, {"f32": rnd(K * N)}, {"f32": rnd(N)}, {"zeros": M * N}, {"u32": 1}, {"u32": 1}, scratch]
    q8 = [{"f32": rnd(M * K)}, {"i8": q}, {"f32": [0.01] * N}, {"f32": rnd(N)}, {"zeros": M * N}, {"u32": 1}, {"u32": 2}, scratch]
    # attention params: batch, H, T_q, T_kv, q_stride, q_off, kv_stride, k_off, v_off, out_stride (bundle-layout.h)
    from ditformat.layout import OP_PARAMS
    B_, H, Tq, Tkv, hd = 2, 3, 11, 300, 32            # T_kv > 256: two key blocks of the online softmax
    p = {"batch": B_, "H": H, "T_q": Tq, "T_kv": Tkv, "q_stride": H * hd, "q_off": 0, "kv_stride": 2 * H * hd,
         "k_off": 0, "v_off": H * hd, "out_stride": H * hd}
    att_params = [p[name] for name in OP_PARAMS["attention"]]
    att = [{"f32": rnd(B_ * Tq * H * hd)}, {"f32": rnd(B_ * Tkv * 2 * H * hd)}, {"zeros": B_ * Tq * H * hd}, {"u32": hd}]
    cases = [("op_matmul", [M, N, K, M, M], mm, 3, M * N), ("op_matmul_q8", [M, N, K, M, M], q8, 4, M * N),
             ("op_attention", att_params, att, 2, B_ * Tq * H * hd)]
    calls = []
    for fn, params, args, out, count in cases:
        calls.append({"fn": fn, "params": params, "args": args, "read": [out, count]})
        for parts in range(1, 8):
            calls.append({"fn": fn + "_part", "params": params, "args": args, "read": [out, count], "parts": parts})
    r = subprocess.run(["node", str(SCRIPT)], input=json.dumps(calls), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    replies = iter(json.loads(r.stdout))
    for fn, *_ in cases:
        whole = np.asarray(next(replies)["out"], np.float32)
        assert np.isfinite(whole).all() and (whole != 0).any()
        for parts in range(1, 8):
            got = np.asarray(next(replies)["out"], np.float32)
            assert (got.view(np.uint32) == whole.view(np.uint32)).all(), f"{fn}: {parts} parts differ from one call"

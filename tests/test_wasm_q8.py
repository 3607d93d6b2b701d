"""op_matmul_q8 of web/ditweb-kernels.wasm (int8 weights, a scale per output channel, wasm/kernels.c), called
directly in node on random inputs and held to its derived error bound against the float64 reference at the
dequantised weights q * scale. The kernel quantises each row of its input to int16 with its own step s_m =
max |x| / Q and sums p q exactly in int32 (i32x4.dot_i16x8_s), so its error is the activations' quantisation
(|x - s_m p| <= s_m / 2 per element) plus a few f32 roundings after the exact sum (q8_bound below). Shapes with M
not a multiple of 4, N not a multiple of 8 and K odd take the kernel's edge paths; out_group / out_stride scatter
rows as the adaLN programs do. The sums are exact, so the plain and the relaxed SIMD modules give the same bits. The
whole-bundle forward pass of an int8 bundle: tests/test_wasm.py. And the thread pool's split kernels
(op_<name>_part) give the whole op's bits for any number of parts (tests/test_wasm_threads.py runs the pool itself
in Chromium)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from wgsl.ops import OPS

from test_wasm import node_flags
from test_wasm_kernels import gelu_err_wasm

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
    (5, 16, 9, 5, 5, "none", "none"),         # K odd: the last pair of k is padded with a zero
    (9, 24, 512, 9, 9, "none", "none"),       # fc2's K: Q = floor((2^31 - 1) / (127 K)) = 33026 > 32767
    (4, 8, 2000, 4, 4, "silu", "none"),       # K large: Q = 8454 < 32767 keeps the int32 sums from overflowing
    (2, 44, 37, 2, 2, "silu", "gelu"),        # two rows (the adaLN matmuls' path, no panel): K % 16 = 5, N % 8 = 4
    (2, 16, 48, 1, 3, "none", "silu"),        # two rows scattered (m / 1) * 3
    (7, 12, 19, 7, 7, "silu", "gelu"),        # a last block of 3 rows (its own interleave), K odd
    (11, 20, 24, 11, 11, "none", "none"),     # two blocks of 4 rows and one of 3
]


def q8_quant_steps(K: int) -> int:
    """Q of wasm/kernels.c: the largest |p| such that K products p q (|q| <= 127) sum within int32."""
    return min(32767, (2 ** 31 - 1) // (127 * K))


def q8_scratch(M: int, K: int, in_act: bool, parts: int = 1) -> int:
    """op_matmul_q8's scratch in floats (wasm/kernels.c, web/wasm-runtime.js): the silu'd rows, the int16 rows
    (Kp = K rounded up to even), their steps (once per part where the parts split the columns: fewer blocks of 4 rows
    than parts), a panel of 8 Kp int16 per part; each rounded up to 4 floats."""
    r4, Kp = (lambda n: (n + 3) // 4 * 4), K + K % 2
    copies = parts if parts > 1 and (M + 3) // 4 < parts else 1
    return copies * ((r4(M * K) if in_act else 0) + r4(M * Kp // 2) + r4(M)) + 4 * Kp * parts


def q8_bound(x, p, v):
    """The bound of op_matmul_q8 against the float64 reference, derived. Row m of x = in_act(a) (f32) is quantised
    with the step s = fl(fl(max_k |x_k|) / Q), p_k = round(fl(x_k fl(Q / max))): |fl(x_k / s) - p_k| <= 1/2 and
    three roundings (of Q / max, of s, of the product) move x_k / s by under 3 u (Q + 1/2), u = 2^-24, so
    |x_k - s p_k| <= max (1/(2Q) + 2^-21) =: e_m. The sum S = sum p_k q_k is exact (int32, no overflow by the
    choice of Q), and s q_k scale[n] = s w_k, so scale[n] s S = sum_k x_k w_k - sum_k (x_k - s p_k) w_k, whose
    second term is at most E = e_m sum_k |w_k|. Then f32: S to f32, s scale[n], their product and the bias add:
    4 roundings, gamma(4) (sum |x_k w_k| + E + |bias|); dot_bound with K = 4 gives gamma(5) (sum |x_k w_k| + |bias|)
    and the input's error (silu in f32) carried through, and E (1 + gamma(5)) is added; the output activation's
    error as for matmul (ACT_ERR; GELU's: gelu_err_wasm of tests/test_wasm_kernels.py). The max over a row is taken of the float64 silu, enlarged by 2^-16 for the f32
    silu's relative error (well under 2^-16 at these inputs)."""
    from wgsl.bounds import ACT_ERR, _finish, _full, _scatter_rows, dot_bound, gamma
    from wgsl.reference import activation, matmul_weight
    M, N, K = p["M"], p["N"], p["K"]
    a, w, bias = x["a"][: M * K].reshape(M, K), matmul_weight(x, p), x["bias"][:N]
    xin = activation(a, v["in_act"])
    e = xin.abs().amax(dim=1) * (1.0 + 2.0 ** -16) * (0.5 / q8_quant_steps(K) + 2.0 ** -21)
    dz = dot_bound(M, N, 4, a, w, bias, v["in_act"], "none") + e[:, None] * w.abs().sum(1)[None, :] * (1.0 + gamma(5))
    if v["act"] == "gelu":   # the kernel's GELU (x / (1 + 2^t)), its own bound: tests/test_wasm_kernels.py
        dz = gelu_err_wasm(xin @ w.T + bias, dz)
    elif v["act"] != "none":
        dz = ACT_ERR[v["act"]](xin @ w.T + bias, dz)
    return _finish(_scatter_rows(_full(x["dst"]), dz, p["out_group"], p["out_stride"]))


def test_matmul_q8_matches_float64_within_its_bound():
    """In both modules (plain and relaxed SIMD: the same bits, the sums being exact integers), each case within
    q8_bound; one row of a is all zeros (its step 0: the outputs are the bias), and the error is checked to be the
    quantisation's size, not far below the bound (a kernel that kept f32 activations would pass the bound alone)."""
    g = torch.Generator().manual_seed(8)
    calls, xs = [], []
    for M, N, K, group, stride, in_act, act in CASES:
        q = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int64)
        q[0, :] = -127                                          # the extreme value on a whole row
        scale = (torch.rand(N, generator=g, dtype=torch.float64) * 0.02 + 1e-3).float().double()
        a = torch.randn(M * K, generator=g, dtype=torch.float64).float().double()
        if M > 2:
            a[K: 2 * K] = 0.0                                   # row 1: all zeros
        bias = (torch.randn(N, generator=g, dtype=torch.float64) * 0.1).float().double()
        rows_out = ((M - 1) // group) * stride + (M - 1) % group + 1
        b = (q & 0xFF).reshape(-1, 4)                           # the bundle's u32 words, low byte first
        words = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
        x = {"a": a, "wq": words.double(), "scale": scale, "bias": bias,
             "dst": torch.zeros(rows_out * N, dtype=torch.float64)}
        p = {"M": M, "N": N, "K": K, "out_group": group, "out_stride": stride}
        xs.append((x, p, {"in_act": in_act, "act": act}))
        for simd in ("plain", "relaxed"):
            calls.append({"fn": "op_matmul_q8", "params": [M, N, K, group, stride], "simd": simd,
                          "args": [{"f32": a.tolist()}, {"i8": q.reshape(-1).tolist()}, {"f32": scale.tolist()},
                                   {"f32": bias.tolist()}, {"zeros": rows_out * N}, {"u32": IN_ACT[in_act]},
                                   {"u32": ACT[act]}, {"zeros": q8_scratch(M, K, in_act != "none")}],
                          "read": [4, rows_out * N]})
    r = subprocess.run(["node", *node_flags(True), str(SCRIPT)], input=json.dumps(calls), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    replies = json.loads(r.stdout)
    op = OPS["matmul_q8"]
    ratios = []
    for k, (x, p, v) in enumerate(xs):
        got = np.asarray(replies[2 * k]["out"], np.float32)
        relaxed = np.asarray(replies[2 * k + 1]["out"], np.float32)
        assert (got.view(np.uint32) == relaxed.view(np.uint32)).all(), f"{p} {v}: plain and relaxed modules differ"
        got = got.astype(np.float64)
        ref = op.reference(x, p, v, None)["dst"].numpy()
        bound = q8_bound(x, p, v).numpy()
        err = np.abs(got - ref)
        assert (err <= bound).all(), f"{p} {v}: error {err.max():.3g} exceeds its bound (ratio {(err / bound).max():.3g})"
        ratios.append((err / bound).max())
        # rows the scatter skips stay untouched (zero)
        written = np.zeros(len(got), bool)
        for m in range(p["M"]):
            row = (m // p["out_group"]) * p["out_stride"] + m % p["out_group"]
            written[row * p["N"]: (row + 1) * p["N"]] = True
        assert (got[~written] == 0).all()
    print(f"\n[matmul_q8] largest error / bound per case: {[f'{r:.3f}' for r in ratios]}")
    assert max(ratios) > 0.02, f"errors at most {max(ratios):.3g} of the bound: is the input quantised at all?"


def test_matmul_q8_non_finite_rows_stay_non_finite():
    """A row of a holding an infinity or a NaN gives that row's outputs NaN (its step is NaN), as torch's would be
    non-finite; the other rows are the bits they are without it (each row is quantised on its own)."""
    M, N, K = 6, 11, 13
    g = torch.Generator().manual_seed(2)
    a = torch.randn(M * K, generator=g).tolist()
    q = torch.randint(-127, 128, (N * K,), generator=g).tolist()
    bad = list(a)
    bad[2 * K + 5], bad[4 * K + K - 1] = "Infinity", "NaN"   # rows 2 and 4 (the latter in the odd tail); JSON strings
    calls = [{"fn": "op_matmul_q8", "params": [M, N, K, M, M],
              "args": [{"f32": x}, {"i8": q}, {"f32": [0.01] * N}, {"f32": [0.5] * N}, {"zeros": M * N},
                       {"u32": 0}, {"u32": 1}, {"zeros": q8_scratch(M, K, False)}], "read": [4, M * N]}
             for x in (a, bad)]
    r = subprocess.run(["node", str(SCRIPT)], input=json.dumps(calls), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    clean, got = (np.asarray(c["out"], np.float32).reshape(M, N) for c in json.loads(r.stdout))
    assert np.isnan(got[[2, 4]]).all()
    keep = [0, 1, 3, 5]
    assert np.isfinite(clean).all() and (got[keep].view(np.uint32) == clean[keep].view(np.uint32)).all()


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
    fewer row blocks than parts (op_matmul_q8 at M 2: split by blocks of columns, more parts than blocks), and attention rows (batch H T_q) not a multiple of the parts."""
    g = torch.Generator().manual_seed(3)
    rnd = lambda n: torch.randn(n, generator=g).tolist()
    M, N, K = 37, 20, 24
    q = torch.randint(-127, 128, (N * K,), generator=g).tolist()
    # op_matmul's silu'd rows; op_matmul_q8's (M 2: one block of rows, so 2..7 parts split the 3 blocks of columns)
    scratch = {"zeros": max(M * K, q8_scratch(M, K, True, parts=7), q8_scratch(2, K, True, parts=7),
                            q8_scratch(7, K, True, parts=7))}
    mm = [{"f32": rnd(M * K)}, {"f32": rnd(K * N)}, {"f32": rnd(N)}, {"zeros": M * N}, {"u32": 1}, {"u32": 1}, scratch]
    q8 = [{"f32": rnd(M * K)}, {"i8": q}, {"f32": [0.01] * N}, {"f32": rnd(N)}, {"zeros": M * N}, {"u32": 1}, {"u32": 2}, scratch]
    # attention params: batch, H, T_q, T_kv, q_stride, q_off, kv_stride, k_off, v_off, out_stride (bundle-layout.h)
    from ditformat.layout import OP_PARAMS
    q8_small = [{"f32": rnd(2 * K)}, {"i8": q}, {"f32": [0.01] * N}, {"f32": rnd(N)}, {"zeros": 2 * N}, {"u32": 1},
                {"u32": 2}, scratch]
    # M 7: two blocks of rows (4 and a last block of 3), split by rows at 2 parts, by columns at more
    q8_seven = [{"f32": rnd(7 * K)}, *q8_small[1:4], {"zeros": 7 * N}, *q8_small[5:]]
    cases = [("op_matmul", [M, N, K, M, M], mm, 3, M * N), ("op_matmul_q8", [M, N, K, M, M], q8, 4, M * N),
             ("op_matmul_q8", [2, N, K, 2, 2], q8_small, 4, 2 * N), ("op_matmul_q8", [7, N, K, 7, 7], q8_seven, 4, 7 * N)]
    # T_kv = 300: the blocked attention (8 queries at a time: 11 rows per (batch, head) split mid-block);
    # T_kv = 600 > 512: the online softmax (3 key blocks)
    for B_, H, Tq, Tkv, hd in ((2, 3, 11, 300, 32), (2, 3, 11, 600, 32)):
        p = {"batch": B_, "H": H, "T_q": Tq, "T_kv": Tkv, "q_stride": H * hd, "q_off": 0, "kv_stride": 2 * H * hd,
             "k_off": 0, "v_off": H * hd, "out_stride": H * hd}
        att_params = [p[name] for name in OP_PARAMS["attention"]]
        att = [{"f32": rnd(B_ * Tq * H * hd)}, {"f32": rnd(B_ * Tkv * 2 * H * hd)}, {"zeros": B_ * Tq * H * hd},
               {"u32": hd}]
        cases.append(("op_attention", att_params, att, 2, B_ * Tq * H * hd))
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

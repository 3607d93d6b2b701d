"""The dispatch program of a DiT: buffers and ordered kernel calls, written in terms of the batch.

This is the only place that knows the DiT's structure; the runtimes replay what it writes.
Linear forms [b, n, c] = b*B + n*N + c: B rows of the model batch, N images being sampled."""
from __future__ import annotations

from dataclasses import dataclass

from dit_model.model import DiTConfig
from ditformat.forms import group_rule, lin
from ditformat.step import STEP_BYTES
from wgsl.ops import OPS, binding_type

FREQ_DIM = 256          # timestep sinusoid width (TimestepEmbedder.freq_dim)
LABEL_TABLE = "y_embedder.embedding_table"     # one row per label of every level (label_embed, label_embed_q8)


def candidates_of(op_name: str, variant: dict, params: dict) -> list[tuple[str, dict]]:
    """The other designs of the same work (docs/bundle-format.md, "candidates"); the runtimes time them
    on the visitor's device. matmul: register-blocked 4x4 blocks <-> 8x4 / 8x8 blocks (K % 4 == 0) <->
    workgroup-memory tiles of 32x32 or 64x64 outputs; layernorm_mod: a workgroup per row <-> an invocation per row; attention: K/V
    tiles staged in workgroup memory <-> read in place <-> 4 queries per invocation (vec4 rows: head dim, strides and
    offsets multiples of 4)."""
    acts = {"in_act": variant.get("in_act"), "act": variant.get("act")}
    if op_name == "matmul":
        wide = [(f"matmul_{t}", {**acts, "tile": t, "vec4": "vec4"}) for t in ("8x4", "8x8")] \
            if variant.get("vec4") == "vec4" else []
        return wide + [("matmul_shared", acts), ("matmul_shared64", acts)]
    if op_name == "matmul_shared":
        K = params["K"]
        return [("matmul", {**acts, "vec4": "vec4" if isinstance(K, int) and K % 4 == 0 else "scalar"}),
                ("matmul_shared64", acts)]
    if op_name == "layernorm_mod":
        return [("layernorm_rows", {})]
    if op_name == "attention":
        rows = [params[k] for k in ("q_stride", "q_off", "kv_stride", "k_off", "v_off", "out_stride")]
        q4 = [("attention_q4", {**variant, "vec4": "vec4"})] \
            if variant["head_dim"] % 4 == 0 and all(isinstance(v, int) and v % 4 == 0 for v in rows) else []
        return [("attention_direct", dict(variant))] + q4
    return []


class ProgramBuilder:
    def __init__(self, cfg: DiTConfig, wdtype: str, weights: dict, matmul: str = "matmul", candidates: bool = True,
                 q8: bool = False):
        self.cfg, self.wdtype, self.weights = cfg, wdtype, weights   # weights: name -> shape
        self.matmul = matmul                                          # op for every Linear layer
        self.q8 = q8                      # int8 bundles: every Linear is matmul_q8 (X.weight int8, X.scale f32), the
                                          # label table label_embed_q8 (int8, a scale per row)
        self.with_candidates = candidates
        self.candidates: dict[str, list[str]] = {}   # a dispatch's kernel -> the kernels that may replace it
        self.buffers: dict[str, dict] = {}
        self.kernels: dict[str, dict] = {}          # kernel name -> (op, variant) and manifest entry
        self.programs: dict[str, list] = {"forward": [], "init": [], "step_begin": [], "step_end": []}
        self.current = self.programs["forward"]

    # ------------------------------------------------------------- declarations
    def act(self, name: str, per_row: int = 0, per_image: int = 0, dtype: str = "f32") -> str:
        self.buffers[name] = {"kind": "activation", "dtype": dtype, "elements": lin(per_row, per_image, 0)}
        return name

    def weight(self, name: str) -> str:
        if name not in self.weights:
            raise KeyError(f"the program needs tensor {name!r}, which the checkpoint lacks")
        return name

    def kernel(self, op_name: str, variant: dict) -> str:
        """Declare the kernel of (op, variant) once; its name."""
        op = OPS[op_name]
        kname = op.kernel_name(variant, self.wdtype)
        if kname not in self.kernels:
            self.kernels[kname] = {
                "op": op_name, "variant": variant,
                "entry": {"file": f"kernels/{kname}.wgsl", "op": op_name, "variant": dict(variant),
                          "workgroup_size": list(op.workgroup_size),
                          "params": list(op.params), "groups": group_rule(op.groups),
                          "bindings": [{"binding": 0, "type": "uniform"}] + [
                              {"binding": i, "type": binding_type(b)} for i, b in enumerate(op.bindings, 1)]}}
        return kname

    def emit(self, op_name: str, label: str, bind: dict, params: dict, **variant) -> None:
        op = OPS[op_name]
        kname = self.kernel(op_name, variant)
        if self.with_candidates and kname not in self.candidates:
            alts = [self.kernel(o, v) for o, v in candidates_of(op_name, variant, params)]
            if alts:
                self.candidates[kname] = [kname] + alts
        forms = {k: (v if isinstance(v, list) else lin(0, 0, v)) for k, v in params.items()}
        missing = set(op.params) - set(forms)
        if missing:
            raise ValueError(f"{label}: op {op_name} needs params {sorted(missing)}")
        self.current.append({"kernel": kname, "label": label, "bindings": [bind[b.name] for b in op.bindings],
                             "params": [forms[k] for k in op.params], "workgroups": op.workgroups(forms)})

    # ------------------------------------------------------------- pieces of the DiT
    def linear(self, prefix: str, a: str, dst: str, rows: list, n_in: int, n_out: int, act="none", in_act="none",
               out_group=None, out_stride=None):
        """dst = act(in_act(a) W^T + b): rows is a linear form (tokens x B)."""
        group = out_group if out_group is not None else rows
        if self.q8:
            if n_in % 4:
                raise ValueError(f"{prefix}: int8 weights need K % 4 == 0 (4 values a u32 word), K is {n_in}")
            self.emit("matmul_q8", prefix, {"a": a, "wq": self.weight(prefix + ".weight"),
                                            "scale": self.weight(prefix + ".scale"), "bias": self.weight(prefix + ".bias"),
                                            "dst": dst},
                      {"M": rows, "N": n_out, "K": n_in, "out_group": group, "out_stride": out_stride or group},
                      in_act=in_act, act=act, vec4="vec4")
            return
        extra = {"vec4": "vec4" if n_in % 4 == 0 else "scalar"} if self.matmul == "matmul" else {}
        self.emit(self.matmul, prefix, {"a": a, "w": self.weight(prefix + ".weight"), "bias": self.weight(prefix + ".bias"),
                                     "dst": dst},
                  {"M": rows, "N": n_out, "K": n_in, "out_group": group, "out_stride": out_stride or group},
                  in_act=in_act, act=act, **extra)

    def layernorm(self, label, x, dst, tokens, tokens_in, D, mod=None, mod_stride=0, shift=0, scale=0):
        self.emit("layernorm_mod", label, {"x": x, "ada": mod or x, "dst": dst},
                  {"rows": lin(tokens), "D": D, "T": tokens, "T_in": tokens_in, "has_mod": int(mod is not None),
                   "mod_stride": mod_stride, "shift_off": shift, "scale_off": scale})

    def attention(self, label, q, kv, dst, T_q, T_kv, D, q_stride, q_off, kv_stride, k_off, v_off):
        H = self.cfg.num_heads
        self.emit("attention", label, {"q": q, "kv": kv, "dst": dst},
                  {"batch": lin(1), "T_q": T_q, "T_kv": T_kv, "H": H, "q_stride": q_stride, "q_off": q_off,
                   "kv_stride": kv_stride, "k_off": k_off, "v_off": v_off, "out_stride": D}, head_dim=D // H)

    def residual(self, label, h, y, count_tokens, D, mod=None, mod_stride=0, gate=0):
        self.emit("gated_residual", label, {"h": h, "y": y, "ada": mod or y},
                  {"count": lin(count_tokens * D), "D": D, "T": count_tokens, "has_gate": int(mod is not None),
                   "mod_stride": mod_stride, "gate_off": gate})


@dataclass(frozen=True)
class Dims:
    """The sizes the program is written in: C channels, I image side, p patch, D width, T patch tokens, Tb tokens in
    the residual stream (in-context: T + 2), Co output channels, hid MLP width, L label levels, n_mod adaLN chunks."""
    C: int
    I: int
    p: int
    D: int
    T: int
    Tb: int
    Co: int
    hid: int
    L: int
    n_mod: int | None
    kind: str

    @classmethod
    def of(cls, cfg: DiTConfig) -> "Dims":
        kind = cfg.conditioning
        return cls(C=cfg.in_channels, I=cfg.input_size, p=cfg.patch_size, D=cfg.hidden_size, T=cfg.num_patches,
                   Tb=cfg.num_patches + 2 if kind == "in-context" else cfg.num_patches, Co=cfg.out_channels,
                   hid=int(cfg.hidden_size * cfg.mlp_ratio), L=len(cfg.levels),
                   n_mod={"adaln-zero": 6, "adaln": 4}.get(kind), kind=kind)


def build(cfg: DiTConfig, wdtype: str, weights: dict, matmul: str = "matmul", candidates: bool = True,
          q8: bool = False) -> ProgramBuilder:
    """Buffers and the forward / init / step programs of a DiT in any conditioning design; with candidates,
    the other designs of its matmul / layer-norm / attention kernels. q8: every Linear layer runs matmul_q8
    (int8 weights with a scale per output channel) and the label table label_embed_q8 (int8, a scale per row); the
    other kernels' weights in wdtype."""
    pb = ProgramBuilder(cfg, wdtype, weights, matmul, candidates, q8)
    d = Dims.of(cfg)
    activations(pb, d)
    embeddings(pb, d, cfg.num_classes)
    for i in range(cfg.depth):
        block(pb, d, f"blocks.{i}")
    final_layer(pb, d)
    sampling(pb, d, cfg.learn_sigma)
    return pb


def activations(pb: ProgramBuilder, d: Dims) -> None:
    """The model's inputs, outputs and activation buffers (per batch row)."""
    C, I, p, D, T, Tb, Co, hid = d.C, d.I, d.p, d.D, d.T, d.Tb, d.Co, d.hid
    pb.act("x_in", C * I * I)
    pb.act("t_in", 1, dtype="u32")
    pb.act("y_in", d.L, dtype="u32")          # B x L table rows (L label levels)
    pb.act("out", Co * I * I)
    for name, per in [("patches", T * C * p * p), ("h", Tb * D), ("t_freq", FREQ_DIM), ("t_hid", D), ("t_emb", D),
                      ("y_emb", D), ("c", D), ("xm", Tb * D), ("qkv", Tb * 3 * D), ("attn", Tb * D), ("proj", Tb * D),
                      ("mlp_h", Tb * hid), ("mlp_o", Tb * D), ("final_mod", 2 * D), ("final_x", T * D),
                      ("final_out", T * p * p * Co)]:
        pb.act(name, per)
    if d.n_mod:
        pb.act("mod", d.n_mod * D)
    if d.kind == "cross-attn":
        pb.act("ctx", 2 * D)
        pb.act("kv", 2 * 2 * D)
        pb.act("q_c", Tb * D)


def embeddings(pb: ProgramBuilder, d: Dims, num_classes: int) -> None:
    """Sec. 3.2: patchify + linear (the Conv2d), + pos_embed; the t and y embedders; in-context tokens or the
    cross-attention context."""
    C, I, p, D, T, Tb, L = d.C, d.I, d.p, d.D, d.T, d.Tb, d.L
    pb.emit("patchify", "x_embedder.patchify", {"img": "x_in", "dst": "patches"},
            {"count": lin(C * I * I), "C": C, "I": I, "p": p})
    pb.linear("x_embedder.proj", "patches", "h", lin(T), C * p * p, D, out_group=T, out_stride=Tb)  # row m -> item m // T, token m % T
    pb.emit("pos_embed_add", "pos_embed", {"h": "h", "pos": pb.weight("pos_embed")},
            {"count": lin(T * D), "T": T, "D": D, "T_buf": Tb})
    pb.emit("timestep_embed", "t_embedder.frequencies", {"t": "t_in", "freqs": pb.weight("_ditweb.t_freqs"),
                                                         "dst": "t_freq"},
            {"count": lin(FREQ_DIM), "half": FREQ_DIM // 2})
    pb.linear("t_embedder.mlp.0", "t_freq", "t_hid", lin(1), FREQ_DIM, D, act="silu")
    pb.linear("t_embedder.mlp.2", "t_hid", "t_emb", lin(1), D, D)
    table = {"table": pb.weight(LABEL_TABLE + ".weight")}
    if pb.q8:                        # int8 bundles: the table int8 with a scale per row
        table["scale"] = pb.weight(LABEL_TABLE + ".scale")
    pb.emit("label_embed_q8" if pb.q8 else "label_embed", "y_embedder",
            {"y": "y_in", **table, "t_emb": "t_emb", "y_emb": "y_emb", "c": "c"},
            {"count": lin(D), "D": D, "rows": num_classes + L, "levels": L})
    if d.kind == "in-context":       # two extra tokens [t_emb, y_emb] after the T patches
        pb.emit("cond_tokens", "in_context_tokens", {"t_emb": "t_emb", "y_emb": "y_emb", "dst": "h"},
                {"count": lin(2 * D), "D": D, "T_dst": Tb, "tok0": T})
    if d.kind == "cross-attn":       # ctx = [t_emb, y_emb]
        pb.emit("cond_tokens", "cross_attn_ctx", {"t_emb": "t_emb", "y_emb": "y_emb", "dst": "ctx"},
                {"count": lin(2 * D), "D": D, "T_dst": 2, "tok0": 0})


def block(pb: ProgramBuilder, d: Dims, b: str) -> None:
    """One DiT block (Figure 3) in the model's conditioning design."""
    D, Tb, hid, n_mod, kind = d.D, d.Tb, d.hid, d.n_mod, d.kind
    mod = None
    if n_mod:
        pb.linear(f"{b}.adaLN_modulation.1", "c", "mod", lin(1), D, n_mod * D, in_act="silu")
        mod = "mod"
    # shift_msa, scale_msa, (gate_msa), shift_mlp, scale_mlp, (gate_mlp) chunk offsets
    offs = [k * D for k in range(6)] if kind == "adaln-zero" else [0, D, None, 2 * D, 3 * D, None]
    ms = (n_mod or 0) * D
    pb.layernorm(f"{b}.norm1", "h", "xm", Tb, Tb, D, mod, ms, offs[0], offs[1])
    pb.linear(f"{b}.attn.qkv", "xm", "qkv", lin(Tb), D, 3 * D)
    pb.attention(f"{b}.attn", "qkv", "qkv", "attn", Tb, Tb, D, 3 * D, 0, 3 * D, D, 2 * D)
    pb.linear(f"{b}.attn.proj", "attn", "proj", lin(Tb), D, D)
    gated = kind == "adaln-zero"
    pb.residual(f"{b}.residual_msa", "h", "proj", Tb, D, mod if gated else None, ms, offs[2] or 0)
    if kind == "cross-attn":
        pb.layernorm(f"{b}.norm_cross", "h", "xm", Tb, Tb, D)
        pb.linear(f"{b}.cross_attn.q", "xm", "q_c", lin(Tb), D, D)
        pb.linear(f"{b}.cross_attn.kv", "ctx", "kv", lin(2), D, 2 * D)
        pb.attention(f"{b}.cross_attn", "q_c", "kv", "attn", Tb, 2, D, D, 0, 2 * D, 0, D)
        pb.linear(f"{b}.cross_attn.proj", "attn", "proj", lin(Tb), D, D)
        pb.residual(f"{b}.residual_cross", "h", "proj", Tb, D)
    pb.layernorm(f"{b}.norm2", "h", "xm", Tb, Tb, D, mod, ms, offs[3], offs[4])
    pb.linear(f"{b}.mlp.fc1", "xm", "mlp_h", lin(Tb), D, hid, act="gelu")
    pb.linear(f"{b}.mlp.fc2", "mlp_h", "mlp_o", lin(Tb), hid, D)
    pb.residual(f"{b}.residual_mlp", "h", "mlp_o", Tb, D, mod if gated else None, ms, offs[5] or 0)


def final_layer(pb: ProgramBuilder, d: Dims) -> None:
    """adaLN (shift, scale) from c, LN over the T patch tokens, linear, unpatchify."""
    C, I, p, D, T, Tb, Co = d.C, d.I, d.p, d.D, d.T, d.Tb, d.Co
    pb.linear("final_layer.adaLN_modulation.1", "c", "final_mod", lin(1), D, 2 * D, in_act="silu")
    pb.layernorm("final_layer.norm_final", "h", "final_x", T, Tb, D, "final_mod", 2 * D, 0, D)
    pb.linear("final_layer.linear", "final_x", "final_out", lin(T), D, p * p * Co)
    pb.emit("unpatchify", "unpatchify", {"src": "final_out", "dst": "out"},
            {"count": lin(Co * I * I), "C": Co, "I": I, "p": p})


def sampling(pb: ProgramBuilder, d: Dims, learn_sigma: bool) -> None:
    """x_T (init), then per step expand (step_begin) -> forward -> guide -> sampler step (step_end)."""
    C, I, Co = d.C, d.I, d.Co
    pb.buffers["step"] = {"kind": "step", "bytes": STEP_BYTES}
    pb.act("x_sample", 0, C * I * I)
    pb.act("guided", 0, Co * I * I)
    pb.current = pb.programs["init"]
    pb.emit("rng_normal", "x_T", {"st": "step", "dst": "x_sample"},
            {"count": lin(0, C * I * I), "stream": 0, "use_step": 0})
    pb.current = pb.programs["step_begin"]
    pb.emit("expand_batch", "expand_batch", {"st": "step", "x": "x_sample", "x_in": "x_in", "t_in": "t_in"},
            {"count": lin(C * I * I), "P": C * I * I, "B": lin(1)})
    pb.current = pb.programs["step_end"]
    pb.emit("guide_combine", "guide_combine", {"st": "step", "model_out": "out", "guided": "guided"},
            {"count": lin(0, Co * I * I), "C": C, "C_out": Co, "P2": I * I})
    pb.emit("sampler_step", "sampler_step", {"st": "step", "guided": "guided", "x": "x_sample"},
            {"count": lin(0, C * I * I), "C": C, "P2": I * I, "learn_sigma": int(learn_sigma)})

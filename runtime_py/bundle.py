"""The wgpu-py runtime: load a verified bundle, create pipelines once, replay its programs.

Function for function the twin of web/webgpu-bundle.js (the sampling loop: web/sampling.js): load bundle -> create
pipelines -> step -> sample.
No model-specific code: buffers, kernels and dispatches all come from the manifest."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ditformat.cliargs import SEED_MAX
from ditformat.errors import NonFiniteError, UsageError
from ditformat.labels import Label, VocabularyError
from ditformat.forms import evaluate, workgroup_forms
from ditformat.guidance import Guide, make_plan
from ditformat.schedule import sampler_tables
from ditformat.step import MAX_BRANCHES, STEP_BYTES, pack_step, step_fields

from .gpu import GPU, DeviceLimitError, get_gpu, refuses_gpu_errors
from .shards import check_weight_limits, upload_shards
from .tune import PLAN_MODES, check_plan, load_plan_file, resolve, slot_key
from .verify import check_dispatch_reach, read_vocabulary, verify_bundle

PROGRAMS = ("forward", "init", "step_begin", "step_end")


class BatchState:
    """Activation buffers, params uniforms and bind groups for one (B, N), with the kernels of a plan
    (runtime_py/tune.py: slot -> candidate kernel; {} runs every dispatch's own kernel)."""

    def __init__(self, bundle: "Bundle", B: int, N: int, plan: dict):
        gpu, m = bundle.gpu, bundle.manifest
        self.B, self.N, self.bundle, self.plan = B, N, bundle, plan
        self.buffers = dict(bundle.weights)
        self.buffers["step"] = bundle.step_buffer
        self.max_groups = gpu.limit("max-compute-workgroups-per-dimension")
        for name, b in m["buffers"].items():
            if b["kind"] == "activation":
                self.buffers[name] = gpu.buffer(4 * max(evaluate(b["elements"], B, N), 1), name)
        self.compiled, self.dispatches, self.bound = {}, {}, {}
        for pname in PROGRAMS:
            seq, disp, bound = [], [], []
            for d in m["programs"][pname]:
                vals = [evaluate(p, B, N) for p in d["params"]]
                if any(v >= 2 ** 32 for v in vals):
                    raise DeviceLimitError(f"{d['label']}: a parameter overflows u32 at B={B}; use a smaller batch")
                raw = np.array(vals + [0] * (-len(vals) % 4), np.uint32)
                uni = gpu.buffer(raw.nbytes, f"{d['label']}.params", raw, uniform=True)
                bufs = [uni] + [self.buffers[n] for n in d["bindings"]]
                disp.append((d, vals))
                bound.append(bufs)
                kname = plan.get(slot_key(d["kernel"], vals), d["kernel"])
                pipe, bg, groups = self.run_of(d, bufs, kname)
                seq.append((pipe, bg, groups, d, m["kernels"][kname]))
            self.compiled[pname], self.dispatches[pname], self.bound[pname] = seq, disp, bound

    def run_of(self, d: dict, bufs: list, kname: str):
        """(pipeline, bind group, workgroup counts) of dispatch d run by kernel kname (its own or a candidate)."""
        k = self.bundle.manifest["kernels"][kname]
        pipe, bgl = self.bundle.pipeline(kname)
        forms = d["workgroups"] if kname == d["kernel"] else workgroup_forms(k["groups"], k["params"], d["params"])
        groups = [evaluate(g, self.B, self.N) for g in forms]
        check_dispatch_reach(f"{d['label']} [{kname}]", d, k, forms, self.bundle.manifest["buffers"], self.B, self.N)
        if max(groups) > self.max_groups:
            raise DeviceLimitError(f"{d['label']}: {max(groups)} workgroups exceed this adapter's "
                                   f"maxComputeWorkgroupsPerDimension {self.max_groups}; use a smaller batch")
        return pipe, self.bundle.gpu.bind_group(bgl, bufs, f"{d['label']} [{kname}]"), groups

    def alternative(self, pname: str, i: int, kname: str):
        """(pipeline, bind group, groups) of dispatch i of program pname run by kernel kname."""
        d, _ = self.dispatches[pname][i]
        return self.run_of(d, self.bound[pname][i], kname)


class Bundle:
    def __init__(self, path: Path, manifest: dict, gpu: GPU, plan="auto"):
        self.path, self.manifest, self.gpu = Path(path), manifest, gpu
        self.plan_mode = plan                  # "auto" | "default" | {slot: kernel} (runtime_py/tune.py)
        self.last_tune = None                  # the report of the last timing run (ditweb bench step prints it)
        self.cfg = manifest["model"]
        self.vocab = read_vocabulary(path, manifest)          # a named model's vocabulary.json (verified); else None
        self.class_names = self.vocab.flat_names() if self.vocab else manifest["class_names"]
        self.levels = tuple(self.cfg.get("label_levels") or (self.cfg["num_classes"],))
        self.starts = tuple(int(v) for v in np.cumsum((0,) + tuple(n + 1 for n in self.levels[:-1])))
        self.prediction = manifest["sampler"]["prediction"]      # what the network outputs: "eps" or "v"
        self._check_limits()
        weights = {n: b for n, b in manifest["buffers"].items() if b["kind"] == "weight"}
        check_weight_limits(gpu, weights, self.path, "the weights")     # before any allocation
        self.pipelines = self.create_pipelines()
        self.weights = self.upload_weights()
        self.step_buffer = gpu.buffer(STEP_BYTES, "step", uniform=True)
        self._states: dict[tuple[int, int], BatchState] = {}

    # ------------------------------------------------------------- load
    @classmethod
    @refuses_gpu_errors("loading the bundle")
    def load(cls, path, gpu: GPU | None = None, verbose: bool = True, plan=None) -> "Bundle":
        """plan: "auto" (time the candidates on first use of a batch size, cached per adapter), "default"
        (every dispatch's own kernel), a {slot: kernel} dict or a plan file; None: $DITWEB_PLAN, else "auto"."""
        manifest = verify_bundle(path)          # every check before the first GPU call
        plan = os.environ.get("DITWEB_PLAN", "auto") if plan is None else plan
        if isinstance(plan, (str, os.PathLike)) and str(plan) not in PLAN_MODES:
            plan = load_plan_file(plan, manifest)
        elif not isinstance(plan, str):
            plan = check_plan(plan, manifest, "plan")
        return cls(Path(path), manifest, gpu or get_gpu(verbose), plan)

    def _check_limits(self):
        need = self.manifest.get("limits", {})
        for key, limit in [("max_storage_buffer_binding_size", "max-storage-buffer-binding-size"),
                           ("max_compute_workgroup_storage_size", "max-compute-workgroup-storage-size"),
                           ("max_compute_invocations_per_workgroup", "max-compute-invocations-per-workgroup"),
                           ("max_storage_buffers_per_shader_stage", "max-storage-buffers-per-shader-stage")]:
            if key in need and int(need[key]) > self.gpu.limit(limit):
                raise DeviceLimitError(f"{self.path}: the bundle needs {key} = {need[key]}, this adapter "
                                       f"({self.gpu.name}) allows {self.gpu.limit(limit)}")

    def create_pipelines(self) -> dict:
        """Pipelines of the kernels the programs name; candidates are compiled when a plan needs them."""
        out = {}
        used = {d["kernel"] for p in PROGRAMS for d in self.manifest["programs"][p]}
        for name in sorted(used):
            k = self.manifest["kernels"][name]
            out[name] = self.gpu.pipeline((self.path / k["file"]).read_text(), name, k["bindings"])
        return out

    def pipeline(self, name: str):
        if name not in self.pipelines:
            k = self.manifest["kernels"][name]
            self.pipelines[name] = self.gpu.pipeline((self.path / k["file"]).read_text(), name, k["bindings"])
        return self.pipelines[name]

    def upload_weights(self) -> dict:
        """Every weight buffer, shard by shard (runtime_py/shards.py), after the limit check."""
        weights = {n: b for n, b in self.manifest["buffers"].items() if b["kind"] == "weight"}
        check_weight_limits(self.gpu, weights, self.path, "the weights")
        return upload_shards(self.gpu, self.path, weights, "weights")

    def state(self, B: int, N: int, plan: dict | None = None) -> BatchState:
        """The resident batch (B, N) with `plan` (None: the bundle's plan mode, tuned on first use)."""
        st = self._states.get((B, N))
        if st is not None and (plan is None or st.plan == plan):
            return st
        self._states.clear()                    # keep one batch size resident
        if plan is None:
            plan = resolve(self, B, N)
        self._states[(B, N)] = st = BatchState(self, B, N, plan)
        return st

    def max_batch(self) -> int:
        """Largest batch B (with N <= B) whose buffers and workgroup counts fit this device's limits."""
        size = self.gpu.limit("max-storage-buffer-binding-size")
        groups = self.gpu.limit("max-compute-workgroups-per-dimension")
        best = 2 ** 31
        for b in self.manifest["buffers"].values():
            if b["kind"] == "activation":
                per = 4 * (b["elements"][0] + b["elements"][1])
                if per:
                    best = min(best, (size - 4 * b["elements"][2] - 15) // per)
        for pname in PROGRAMS:
            for d in self.manifest["programs"][pname]:
                for g in d["workgroups"]:
                    if g[0] + g[1]:
                        best = min(best, (groups * g[3] - g[2]) // (g[0] + g[1]))
        return max(best, 0)

    # ------------------------------------------------------------- labels
    def resolve(self, prompt: str, style: str | None = None) -> Label:
        """A named bundle: a word or phrase (and a style) -> a Label (ditformat/labels.py Vocabulary.resolve);
        UsageError with the closest labels for an unknown or ambiguous prompt."""
        if self.vocab is None:
            raise UsageError(f"{self.path}: a one-level bundle ({self.cfg['num_classes']} classes) takes class ids, "
                             "not prompts")
        try:
            return self.vocab.resolve(prompt, style)
        except VocabularyError as e:
            raise UsageError(str(e)) from None

    def label(self, value):
        """One label as the sampler takes it: a class id (one-level bundles); a Label, a tuple of per-level ids
        (id == level size: left out) or a prompt (named bundles)."""
        if self.vocab is None:
            if isinstance(value, (Label, str, tuple, list)) or isinstance(value, bool) or not np.issubdtype(type(value), np.integer):
                raise UsageError(f"a one-level bundle takes class ids, got {value!r}")
            c = int(value)
            if not 0 <= c < self.cfg["num_classes"]:
                raise UsageError(f"class id {c} out of range [0, {self.cfg['num_classes']})")
            return c
        if isinstance(value, str):
            value = self.resolve(value)
        ids = value.ids if isinstance(value, Label) else value
        if not isinstance(ids, (tuple, list, np.ndarray)) or len(ids) != len(self.levels) or not all(
                np.issubdtype(type(i), np.integer) and not isinstance(i, bool) and 0 <= int(i) <= n
                for i, n in zip(ids, self.levels)):
            raise UsageError(f"a label of this named bundle is one id per level {list(self.levels)} (the level's size: "
                             f"left out), a Label or a prompt; got {value!r}")
        return tuple(int(i) for i in ids)

    @property
    def null_label(self):
        return tuple(self.levels) if self.vocab is not None else self.cfg["num_classes"]

    def label_rows(self, labels) -> np.ndarray:
        """Checked labels -> the label_embed table rows, L per label (level l's id + its first row)."""
        if self.vocab is None:
            return np.asarray(labels, np.uint32)
        return (np.asarray(labels, np.int64).reshape(-1, len(self.levels)) + np.asarray(self.starts)).astype(np.uint32).reshape(-1)

    # ------------------------------------------------------------- run
    def encode(self, state: BatchState, programs, label: str):
        enc = self.gpu.device.create_command_encoder(label=label)
        cp = enc.begin_compute_pass(label=label)
        for pname in programs:
            for pipe, bg, groups, _, _ in state.compiled[pname]:
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(*groups)
        cp.end()
        return enc.finish()

    @refuses_gpu_errors("the forward pass")
    def forward(self, x, t, y) -> np.ndarray:
        """x (B, C, I, I), t (B,) integer timesteps, y (B,) class ids (a named bundle: (B, L) per-level ids)
        -> model output (B, C_out, I, I)."""
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 4 or x.shape[0] < 1:
            raise UsageError(f"x must be (B >= 1, C, I, I), got shape {x.shape}")
        B = x.shape[0]
        io = self.manifest["io"]
        if tuple(x.shape[1:]) != tuple(io["x_shape"]):
            raise UsageError(f"x has shape {x.shape}, the bundle expects (B, {', '.join(map(str, io['x_shape']))})")
        t = np.broadcast_to(np.asarray(t, np.int64), (B,))
        if self.vocab is None:
            y = np.broadcast_to(np.asarray(y, np.int64), (B,))
            if (y < 0).any() or (y > self.cfg["num_classes"]).any():
                raise UsageError(f"class ids must be in [0, {self.cfg['num_classes']}] ({self.cfg['num_classes']} = null)")
        else:                   # named: (B, L) per-level ids, level size = left out
            y = np.broadcast_to(np.asarray(y, np.int64).reshape(-1, len(self.levels)), (B, len(self.levels)))
            if (y < 0).any() or (y > np.asarray(self.levels)).any():
                raise UsageError(f"labels must be (B, {len(self.levels)}) per-level ids in [0, size] (sizes {list(self.levels)})")
        if (t < 0).any() or (t > 999).any():
            raise UsageError("timesteps must be in [0, 1000)")
        cap = self.max_batch()
        if cap < 1:
            raise DeviceLimitError(f"{self.path}: even one image exceeds this adapter's buffer or dispatch limits")
        if B > cap:             # split the batch so every buffer fits maxStorageBufferBindingSize
            return np.concatenate([self.forward(x[i:i + cap], t[i:i + cap], y[i:i + cap]) for i in range(0, B, cap)])
        st = self.state(B, B)
        self.gpu.write(st.buffers[io["x"]], x)
        self.gpu.write(st.buffers[io["t"]], t.astype(np.uint32))
        self.gpu.write(st.buffers[io["y"]], self.label_rows(y))
        self.gpu.device.queue.submit([self.encode(st, ["forward"], "forward")])
        n = B * int(np.prod(io["out_shape"]))
        return self.gpu.read(st.buffers[io["out"]], np.float32, n).reshape(B, *io["out_shape"])

    def tables(self, steps: int) -> dict:
        return sampler_tables(steps, self.manifest["sampler"])      # the schedule's tables, as the page computes them

    @refuses_gpu_errors("sampling")
    def sample(self, class_id, seed: int = 0, steps: int = 50, cfg: float = 4.0, *, n: int | None = None,
               guide: Guide | None = None, negative_class=None, sampler: str = "ddim",
               eta: float = 0.0, clip_x0: bool | None = None, on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The whole denoising loop on the GPU: one command buffer per step (all K x J x N rows), one
        read-back at the end. Returns x_0 (N, C, I, I) in model space. class_id: one label or a list of N; a
        one-level bundle takes class ids, a named one Labels (Bundle.resolve), per-level id tuples or prompts (the
        guide's negative class and composed labels likewise). clip_x0 defaults to True, and to False
        for a latent bundle (one with a VAE decoder: runtime_py/decode.py), whose latents are not bounded."""
        if clip_x0 is None:
            clip_x0 = "decoder/manifest.json" not in self.manifest["files"]
        nc = self.cfg["num_classes"]
        one = isinstance(class_id, (str, Label)) or (self.vocab is not None and isinstance(class_id, tuple)
                                                    and not any(isinstance(c, (tuple, list, str, Label)) for c in class_id))
        many = isinstance(class_id, (list, tuple, np.ndarray)) and not one
        ids = [self.label(c) for c in (class_id if many else [class_id] * (n or 1))]
        if not ids:
            raise UsageError("no labels to sample")
        if sampler not in ("ddim", "ddpm"):
            raise UsageError(f"unknown sampler {sampler!r}; choose ddim or ddpm")
        if not 1 <= steps <= 1000:
            raise UsageError(f"steps must be in [1, 1000], got {steps}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
            raise UsageError(f"seed must be an integer in 0..{SEED_MAX} (the noise takes 32 bits), got {seed!r}")
        guide = guide or Guide(scale=cfg, negative_class=negative_class)
        guide = dataclasses.replace(   # every label of the guide checked (named bundles: prompts and Labels -> id tuples)
            guide, negative_class=None if guide.negative_class is None else self.label(guide.negative_class),
            compose=tuple((self.label(c), w) for c, w in guide.compose)).validate(nc)
        plan = make_plan(guide, ids, self.null_label)
        K, J, N = guide.copies, len(plan.labels), len(ids)
        if J > self.manifest.get("guidance", {}).get("max_branches", MAX_BRANCHES):
            raise UsageError(f"{J} guidance branches; the step uniform holds at most {MAX_BRANCHES}")
        B = K * J * N
        if B > self.max_batch():
            raise DeviceLimitError(f"{N} images x {J} guidance branches x {K} copies = {B} model rows exceed this "
                                   f"adapter's limits (at most {self.max_batch()} rows): sample fewer images at once")
        st = self.state(B, N)
        io = self.manifest["io"]
        y = self.label_rows([c for _ in range(K) for branch in plan.labels for c in branch])   # [k][j][n], L rows each
        self.gpu.write(st.buffers[io["y"]], y)
        tab = self.tables(steps)
        common = dict(seed=seed, K=K, J=J, N=N, var_branch=plan.var_branch, sampler=sampler, eta=eta,
                      clip_x0=clip_x0, tau=guide.batch_tau, prediction=self.prediction)
        q = self.gpu.device.queue
        # x_T = normal(seed, stream 0, step 0): the init program reads only seed, i = 0 and zero
        q.write_buffer(self.step_buffer, 0, pack_step(step_fields(tab, 0, coef=plan.coefficients(1.0), **common)))
        q.submit([self.encode(st, ["init"], "init")])
        for n_done, i in enumerate(reversed(range(steps))):
            s = guide.scale_at(n_done, steps, int(tab["t"][i]))
            q.write_buffer(self.step_buffer, 0, pack_step(step_fields(tab, i, coef=plan.coefficients(s), **common)))
            q.submit([self.encode(st, ["step_begin", "forward", "step_end"], f"step {i}")])
            if n_done + 1 in (1, steps - 1, steps) or (n_done + 1) % 10 == 0:
                self._check_finite(st, B, N, n_done + 1, steps)
            if on_step:
                on_step(n_done + 1, steps)
        C, I = self.cfg["in_channels"], self.cfg["input_size"]
        return self.gpu.read(st.buffers[io["sample"]], np.float32, N * C * I * I).reshape(N, C, I, I)

    def _check_finite(self, st, B: int, N: int, step: int, steps: int) -> None:
        """NaN / Inf never reach an image silently: every few steps the model's output and the latents x_t are
        read back (the model's output matters: WGSL's clamp of x0 may turn a NaN into -1, and DDIM then
        re-derives a finite eps from it)."""
        io = self.manifest["io"]
        for what, name, count in (("the model's output", io["out"], B * int(np.prod(io["out_shape"]))),
                                  ("the latents", io["sample"], N * self.cfg["in_channels"] * self.cfg["input_size"] ** 2)):
            x = self.gpu.read(st.buffers[name], np.float32, count)
            if not np.isfinite(x).all():
                raise NonFiniteError(f"sampling (wgpu runtime, adapter {self.gpu.name}): {what} became non-finite by "
                                     f"step {step} of {steps} ({int(np.isnan(x).sum())} NaN, {int(np.isinf(x).sum())} "
                                     f"Inf of {x.size} values): the bundle's weights or its kernels produce NaN")

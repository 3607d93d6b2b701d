"""Plans: which candidate kernel runs each step of a bundle's programs, chosen by timing on this device.

A bundle lists, beside a dispatch's kernel, the kernels that may replace it (`candidates`, docs/bundle-format.md).
A *slot* is the work of one or more dispatches: their kernel and their params evaluated at the batch
(B, N); a *plan* maps slots to kernel names (a slot it does not name runs the dispatch's own kernel: the
"default" plan maps nothing). `tune` times every candidate of every slot on the slot's real buffers
(timestamp queries where the adapter has them, else wall clock around a submitted pass), as medians of
interleaved repetitions, and picks the fastest. Plans are cached per adapter, bundle and batch in the
user's cache folder (`$XDG_CACHE_HOME/ditweb/plans.json`), so a second load times nothing.

numpy + wgpu only: the runtime's sampling path stays torch-free."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ditformat.errors import UsageError
from ditformat.forms import evaluate

PLAN_MODES = ("auto", "default")
CACHE_VERSION = 1


def slot_key(kernel: str, values: list[int]) -> str:
    return f"{kernel}|{','.join(map(str, values))}"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ditweb" / "plans.json"


def bundle_identity(m: dict) -> str:
    """What a plan depends on in a bundle: its kernels (by hash), candidates and programs."""
    kernels = {k: m["files"][v["file"]]["sha256"] for k, v in m["kernels"].items()}
    raw = json.dumps([kernels, m.get("candidates", {}), m["programs"]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def adapter_identity(gpu) -> str:
    info = gpu.adapter.info
    return " / ".join(str(info.get(k, "")) for k in ("vendor", "device", "description", "backend_type", "adapter_type"))


def cache_key(gpu, m: dict, B: int, N: int) -> str:
    return f"{adapter_identity(gpu)} | {bundle_identity(m)} | B={B} N={N}"


def check_plan(plan, m: dict, where: str) -> dict:
    """A plan read from a file (untrusted): {slot: kernel}, each kernel a candidate of the slot's kernel."""
    if not isinstance(plan, dict):
        raise UsageError(f"{where}: a plan is a JSON object {{slot: kernel}}, got {type(plan).__name__}")
    cands = m.get("candidates", {})
    for slot, k in plan.items():
        base = str(slot).split("|", 1)[0]
        if not isinstance(k, str) or k not in cands.get(base, [base]):
            raise UsageError(f"{where}: {str(k)[:60]!r} is not a candidate for slot {str(slot)[:80]!r}")
    return plan


def load_plan_file(path, m: dict) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"{path}: cannot read the plan file ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: the plan file is not JSON ({str(e).splitlines()[0][:80]})") from None
    if isinstance(data, dict) and isinstance(data.get("plan"), dict):     # `ditweb bench step --plan-out` writes {plan, ...}
        data = data["plan"]
    return check_plan(data, m, str(path))


def read_cache() -> dict:
    """The plan cache, or {} if absent or damaged (a damaged cache is only a lost speed-up: re-tuned)."""
    p = cache_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError):
        print(f"ditweb: ignoring the damaged plan cache {p}", file=sys.stderr)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("plans"), dict):
        return {}
    return data["plans"]


def write_cache(key: str, plan: dict) -> None:
    p = cache_path()
    plans = read_cache()
    plans[key] = plan
    if len(plans) > 64:                          # keep the newest 64 (dicts keep insertion order)
        plans = dict(list(plans.items())[-64:])
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "plans": plans}, indent=1))
        tmp.replace(p)
    except OSError as e:                         # a read-only home: run without the cache
        print(f"ditweb: could not write the plan cache {p} ({e.strerror or e})", file=sys.stderr)


class Timer:
    """Time of one compute pass: timestamp queries (ns) where the adapter has them, else wall clock around
    submit + wait for the queue."""

    def __init__(self, gpu):
        import wgpu
        self.gpu = gpu
        self.qs = gpu.device.create_query_set(type="timestamp", count=2) if gpu.timestamps else None
        self.qs_count = 2 if self.qs else 0
        self.fence = None
        if self.qs:
            self.resolve = gpu.device.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)

    @property
    def source(self) -> str:
        return "timestamp queries" if self.qs else "wall clock"

    def run(self, dispatches, repeat: int) -> float:
        """Seconds per repetition of `dispatches` [(pipeline, bind group, groups)], recorded `repeat` times in one pass."""
        return self.run_many([(dispatches, repeat)])[0]

    def run_many(self, items) -> list[float]:
        """Seconds per repetition of each (dispatches, repeat), one compute pass each. With timestamp queries
        all passes go in one command buffer and one read-back; on wall clock each pass is submitted and
        waited for alone."""
        dev = self.gpu.device
        if not self.qs:
            import wgpu
            if self.fence is None:      # reading a buffer back waits for all submitted work (on_submitted_work_done_sync
                                        # fails in wgpu-py 0.32)
                self.fence = dev.create_buffer(size=16, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
            out = []
            for dispatches, repeat in items:
                enc = dev.create_command_encoder()
                self._pass(enc, dispatches, repeat, {})
                dev.queue.read_buffer(self.fence)                  # idle before the clock starts
                t0 = time.perf_counter()
                dev.queue.submit([enc.finish()])
                dev.queue.read_buffer(self.fence)
                out.append((time.perf_counter() - t0) / repeat)
            return out
        import wgpu
        n = len(items)
        if self.qs_count < 2 * n:
            self.qs = dev.create_query_set(type="timestamp", count=2 * n)
            self.resolve = dev.create_buffer(size=16 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
            self.qs_count = 2 * n
        enc = dev.create_command_encoder()
        for i, (dispatches, repeat) in enumerate(items):
            self._pass(enc, dispatches, repeat, {"timestamp_writes": {
                "query_set": self.qs, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}})
        enc.resolve_query_set(self.qs, 0, 2 * n, self.resolve, 0)
        dev.queue.submit([enc.finish()])
        ts = np.frombuffer(dev.queue.read_buffer(self.resolve), np.uint64)[: 2 * n].astype(np.float64)
        return [max(ts[2 * i + 1] - ts[2 * i], 0.0) * 1e-9 / items[i][1] for i in range(n)]

    @staticmethod
    def _pass(enc, dispatches, repeat, desc):
        cp = enc.begin_compute_pass(**desc)
        for _ in range(repeat):
            for pipe, bg, groups in dispatches:
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, bg)
                cp.dispatch_workgroups(*groups)
        cp.end()


def slots_of(bundle, state) -> dict:
    """slot key -> {"entry": (program, index) of its first dispatch, "count": dispatches, "candidates": [...]}."""
    m = bundle.manifest
    cands = m.get("candidates", {})
    out: dict[str, dict] = {}
    for pname, seq in state.dispatches.items():
        for i, (d, vals) in enumerate(seq):
            names = cands.get(d["kernel"], [])
            if len(names) < 2:
                continue
            key = slot_key(d["kernel"], vals)
            s = out.setdefault(key, {"entry": (pname, i), "count": 0, "candidates": list(names)})
            s["count"] += 1
    return out


def tune(bundle, B: int, N: int, repeats: int = 3, budget_s: float = 2.0) -> tuple[dict, dict]:
    """(plan, report): the fastest candidate of every slot at batch (B, N). report: {"slots": {key:
    {kernel: median seconds}}, "pipelines_s", "timing_s", "source"}. Times each candidate up to `repeats`
    times, interleaved (round r starts at candidate r mod n), after one warm-up run each; fewer if the
    budget runs out. A candidate dropped early reports its warm-up time or the median of its runs."""
    t0 = time.perf_counter()
    state = bundle.state(B, N, plan={})                       # the default kernels' buffers and params
    slots = slots_of(bundle, state)
    for s in slots.values():
        for k in s["candidates"]:
            bundle.pipeline(k)
    t1 = time.perf_counter()
    timer = Timer(bundle.gpu)
    runs = {key: {k: state.alternative(*s["entry"], k) for k in s["candidates"]} for key, s in slots.items()}
    pairs = [(key, k) for key, alts in runs.items() for k in alts]
    # one warm-up each (first use of a pipeline), which also sizes the repetitions per measurement
    warm = timer.run_many([([runs[key][k]], 1) for key, k in pairs])
    reps = {pk: int(min(8, max(1, 2e-4 / max(t, 1e-7)))) for pk, t in zip(pairs, warm)}   # ~0.2 ms of work a sample
    times: dict[tuple[str, str], list[float]] = {pk: [] for pk in pairs}
    # a candidate 2x slower than the best in the warm-up is out at once (e.g. workgroup-memory tiles on a
    # CPU adapter); from the second round on, those 1.5x slower than the best median: only close contests
    # are timed to the end (and between two within 10% either pick is good)
    fastest = {key: min(t for (k2, _), t in zip(pairs, warm) if k2 == key) for key in runs}
    live = {key: [k for k in alts if warm[pairs.index((key, k))] <= 2.0 * fastest[key]] for key, alts in runs.items()}
    for r in range(repeats):
        batch = []
        for key, names in live.items():            # interleaved: round r starts at candidate r mod n
            batch += [(key, names[(j + r) % len(names)]) for j in range(len(names))]
        for pk, t in zip(batch, timer.run_many([([runs[key][k]], reps[(key, k)]) for key, k in batch])):
            times[pk].append(t)
        if r >= 1:
            for key, names in live.items():
                med = {k: float(np.median(times[(key, k)])) for k in names}
                live[key] = [k for k in names if med[k] <= 1.5 * min(med.values())]
            live = {key: names for key, names in live.items() if len(names) > 1}
        if time.perf_counter() - t1 > budget_s and r >= 2:
            break
    plan, report = {}, {}
    for key in runs:
        med = {k: float(np.median(times[(key, k)] or [warm[pairs.index((key, k))]])) for k in runs[key]}
        report[key] = med
        plan[key] = min(med, key=med.get)
    t2 = time.perf_counter()
    return plan, {"slots": report, "counts": {k: s["count"] for k, s in slots.items()}, "pipelines_s": t1 - t0,
                  "timing_s": t2 - t1, "source": timer.source}


def resolve(bundle, B: int, N: int) -> dict:
    """The plan of batch (B, N) under the bundle's plan mode: "default" -> {}, a dict (forced) -> itself,
    "auto" -> the cached plan of this adapter and bundle, else tune (and cache)."""
    mode = bundle.plan_mode
    if isinstance(mode, dict):
        return mode
    if mode == "default" or not bundle.manifest.get("candidates"):
        return {}
    key = cache_key(bundle.gpu, bundle.manifest, B, N)
    cached = read_cache().get(key)
    if isinstance(cached, dict):
        try:
            return check_plan(cached, bundle.manifest, "plan cache")
        except UsageError:
            pass                                  # stale or damaged entry: tune again
    plan, report = tune(bundle, B, N)
    bundle.last_tune = report
    write_cache(key, plan)
    return plan

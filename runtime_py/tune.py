"""Plans: which candidate kernel runs each step of a bundle's programs, chosen by timing on this device.

A bundle lists, beside a dispatch's kernel, the kernels that may replace it (`candidates`, docs/bundle-format.md).
A *slot* is the work of one or more dispatches: their kernel and their params evaluated at the batch
(B, N); a *plan* maps slots to kernel names (a slot it does not name runs the dispatch's own kernel: the
"default" plan maps nothing). `tune` times every candidate of every slot on the slot's real buffers
(timestamp queries where the adapter has them, else wall clock around a submitted pass) in interleaved
samples, and picks the candidate with the fastest sample. Plans are cached per adapter, bundle and batch in the
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

from .gpu import refuses_gpu_errors

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


def _threads() -> int:
    """How many workgroups a CPU adapter runs at once, at most: its thread pool is about one thread per core."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(32, n))


def part(groups, want: int) -> tuple[tuple, float]:
    """The first `want` (about) workgroups of a dispatch of `groups`, as a smaller grid, and the fraction of the
    work it holds: x shrinks first, then y, then z (the leading groups are whole tiles)."""
    g = [int(v) for v in groups]
    total = g[0] * g[1] * g[2]
    for i in range(3):
        rest = total // g[i] if g[i] else 1
        g[i] = min(g[i], max(1, -(-want // rest)))
        total = g[0] * g[1] * g[2]
    return tuple(g), total / max(1, int(np.prod(groups)))


@refuses_gpu_errors("tuning the kernel plan (compiling and timing the candidates)")
def tune(bundle, B: int, N: int, repeats: int = 3, budget_s: float = 0.3, target_s: float = 5e-4,
         partial: bool | None = None) -> tuple[dict, dict]:
    """(plan, report): the fastest candidate of every slot at batch (B, N). report: {"slots": {key: {kernel:
    seconds of one whole dispatch}}, "counts", "pipelines_s" (pipeline creation), "first_s" (the first
    dispatches), "timing_s" (the selection itself), "source", "partial", "fixed_s", "probe_s"}.

    Each slot (all the dispatches sharing a kernel and shape) is timed once. After pipeline creation every
    candidate runs one workgroup: drivers that compile a pipeline on its first dispatch (lavapipe) do it there,
    not in the timing. Where the adapter's time grows with a dispatch's workgroups (CPU adapters: a few threads
    run them in turn; checked once, `_proportional`), a sample is a part of a dispatch (its first workgroups),
    its time less the adapter's fixed time per sample scaled to the whole dispatch; elsewhere (GPUs) a sample is
    the whole dispatch, repeated up to about `target_s`. A probe of one workgroup (one dispatch) of every
    candidate drops those 2x slower than the best (workgroup-memory tiles on a CPU adapter): at once where 8x
    slower, else when a second probe agrees; never where the probe is mostly the fixed time; then up to `repeats` interleaved rounds (round r starts at
    candidate r mod n) of samples of about `target_s` (at least 8x the fixed time); from the second round on a
    candidate whose fastest sample is 1.5x the best's is out.
    The pick is the fastest sample: on a loaded machine the noise only ever adds time (a preempted sample), so
    the minimum of a few samples resists it better than their median. Rounds stop early past `budget_s`.
    `partial`: False times whole dispatches on any adapter (the reference `ditweb bench step` compares with)."""
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
    timer.run_many([([(p, bg, (1, 1, 1))], 1) for p, bg, _ in (runs[key][k] for key, k in pairs)])
    t2 = time.perf_counter()
    partial, fixed = _proportional(timer, runs) if pairs and partial is not False else (False, 0.0)
    samples = _Samples(timer, runs, partial, fixed, target_s)
    est, live = _probe(samples, pairs)
    t_probe = time.perf_counter()
    _rounds(samples, est, live, repeats, budget_s, t2)
    plan, report = {}, {}
    for key in runs:
        report[key] = {k: est[(key, k)] for k in runs[key]}
        plan[key] = min(report[key], key=report[key].get)
    t3 = time.perf_counter()
    return plan, {"slots": report, "counts": {k: s["count"] for k, s in slots.items()}, "pipelines_s": t1 - t0,
                  "first_s": t2 - t1, "timing_s": t3 - t2, "source": timer.source, "partial": partial,
                  "fixed_s": fixed, "probe_s": t_probe - t2}


class _Samples:
    """Timing samples of the candidates' dispatches (runs: {slot key: {kernel: (pipeline, bind group, groups)}};
    a pk is a (slot key, kernel) pair): where `partial`, the first workgroups of a dispatch less the adapter's
    fixed time, scaled to the whole; else the whole dispatch, repeated."""

    def __init__(self, timer, runs: dict, partial: bool, fixed: float, target_s: float):
        self.timer, self.runs, self.partial, self.fixed, self.target_s = timer, runs, partial, fixed, target_s
        self.threads = _threads()
        self.groups = {(key, k): int(np.prod(run[2])) for key, alts in runs.items() for k, run in alts.items()}

    def timed(self, items) -> list[tuple[float, float]]:
        """[(pk, n)] -> [(seconds of one whole dispatch, the same without subtracting the fixed time)]: n
        workgroups (partial) or n repetitions of the whole dispatch."""
        work = []
        for (key, k), n in items:
            p, bg, g = self.runs[key][k]
            if self.partial:
                gg, frac = part(g, n)
                work.append(([(p, bg, gg)], 1, frac))
            else:
                work.append(([(p, bg, g)], n, 1.0))
        got = self.timer.run_many([(d, reps) for d, reps, _ in work])
        return [(max(t - self.fixed, 0.05 * t) / frac, t / frac) for t, (_, _, frac) in zip(got, work)]

    def size(self, pk, est: float) -> int:
        """Workgroups (partial) or repetitions (whole) of a sample of about target_s, given an estimate of the
        whole dispatch's seconds."""
        if self.partial:
            n = max(self.target_s, 8 * self.fixed) * self.groups[pk] / max(est, 1e-9)
            return int(min(self.groups[pk], self.threads * max(1, -(-int(n) // self.threads))))
        return int(min(8, max(1, self.target_s / max(est, 1e-7))))


def _probe(samples: _Samples, pairs: list) -> tuple[dict, dict]:
    """(est: {pk: seconds of one whole dispatch}, live: {slot key: the candidates still in}) from a probe of one
    workgroup (one dispatch) of every candidate: one 2x slower (less the fixed time) than the best (with it) is
    out, at once where 8x slower, else if a second probe (in reverse order) agrees: one preempted sample drops
    nothing close; a probe mostly fixed time (a small workgroup) drops nothing."""
    runs = samples.runs
    probe = dict(zip(pairs, samples.timed([(pk, 1) for pk in pairs])))
    best = {key: min(probe[(key, k)][1] for k in runs[key]) for key in runs}
    again = [pk for pk in pairs if 2.0 * best[pk[0]] < probe[pk][0] <= 8.0 * best[pk[0]]
             and probe[pk][0] >= 0.75 * probe[pk][1]]
    for pk, (t, t_all) in zip(again[::-1], samples.timed([(pk, 1) for pk in again[::-1]])):
        probe[pk] = (min(t, probe[pk][0]), min(t_all, probe[pk][1]))
    best = {key: min(probe[(key, k)][1] for k in runs[key]) for key in runs}
    est = {pk: v[0] for pk, v in probe.items()}
    live = {}
    for key in runs:
        names = [k for k in runs[key] if est[(key, k)] <= 2.0 * best[key] or est[(key, k)] < 0.75 * probe[(key, k)][1]]
        if len(names) > 1:
            live[key] = names
    return est, live


def _rounds(samples: _Samples, est: dict, live: dict, repeats: int, budget_s: float, t_start: float) -> None:
    """Up to `repeats` interleaved rounds over the live candidates (round r starts at candidate r mod n); est
    becomes each candidate's fastest sample. From the second round on a candidate 1.5x the best's is out; rounds
    stop past `budget_s` after t_start."""
    times: dict[tuple[str, str], list[float]] = {pk: [] for pk in est}
    for r in range(repeats):
        if not live:
            break
        batch = []
        for key, names in live.items():
            batch += [(key, names[(j + r) % len(names)]) for j in range(len(names))]
        for pk, (t, _) in zip(batch, samples.timed([(pk, samples.size(pk, est[pk])) for pk in batch])):
            times[pk].append(t)
            est[pk] = min(times[pk])
        if r >= 1:
            for key, names in live.items():
                fastest = min(est[(key, k)] for k in names)
                live[key] = [k for k in names if est[(key, k)] <= 1.5 * fastest]
            live = {key: names for key, names in live.items() if len(names) > 1}
        if time.perf_counter() - t_start > budget_s and r >= 1:
            break


def _proportional(timer, runs) -> tuple[bool, float]:
    """(whether this adapter's time grows with a dispatch's workgroups, its fixed time per sample). A CPU
    adapter runs the workgroups in turn on a few threads; a GPU's time stays flat while the device fills. Timed
    on the dispatch with the most workgroups: a quarter and the whole of it, twice each (t = fixed + n x per
    workgroup)."""
    p, bg, g = max((d for alts in runs.values() for d in alts.values()), key=lambda d: int(np.prod(d[2])))
    n = int(np.prod(g))
    if n < 16:
        return False, 0.0
    q, frac = part(g, n // 4)
    t = timer.run_many([([(p, bg, q)], 1), ([(p, bg, g)], 1), ([(p, bg, q)], 1), ([(p, bg, g)], 1)])
    tq, tf = min(t[0], t[2]), min(t[1], t[3])
    if tf < 2.5 * tq:
        return False, 0.0
    per_group = (tf - tq) / (n - frac * n)
    return True, max(0.0, tq - per_group * frac * n)


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

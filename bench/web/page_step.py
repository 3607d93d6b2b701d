"""Why the WebAssembly step is slower in Chromium's page worker than in node (issue 23): one bundle's CFG step
(step_begin + forward + step_end, batch rows 2) on the page's own runtime (loadBundle, runtime "wasm", one thread,
its kernels compiled on the page and posted to the worker as a visitor's are), in a fresh headless Chromium per
variant of V8 flags. Each phase of steps is timed three ways: in the worker (the reply's kernel ms), from the page
(the message round trip included), and by the kernel's scheduler statistics of the worker's thread
(/proc/PID/task/TID/schedstat: ns on a CPU and ns runnable but waiting for one), so that a slow step can be told
apart as slower code (more CPU time per step) or a thread that waited for a core (contention). Not a test.

    .venv/bin/python bench/web/page_step.py [--bundle bundles/named-int8] [--simd relaxed]
        [--variants default,no-liftoff] [--rounds 2] [--gap-ms 40] [--out DIR]

Writes bench/results/wasm-page-step.md.

Phases, in order: the 1st-10th, 11th-20th and 21st-40th steps after the load's one-step sample (V8 runs a new
module's functions in its baseline compiler, Liftoff, and optimises each once it has run enough), then 40 steps back
to back, 40 each after an idle gap (as when another runtime takes turns with it), 40 each after a gap in which the
page's thread works through 8 MB (as onnxruntime-web's turn does), then two 25-step sample() runs as the page runs
them (the worker kept two steps ahead; the second reads x back after every step for its previews). A variant is a named set of --js-flags, for
diagnosis only (a visitor's browser runs `default`). Linux only (schedstat).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from dit_model.bench import RESULTS  # noqa: E402
from webserve.browser import CHROMIUM, CHROMIUM_ARGS, local_server  # noqa: E402

VARIANTS = {
    "default": None,
    "no-liftoff": "--no-liftoff",                           # every function optimised (TurboFan) before its first run
    "liftoff-only": "--liftoff-only",                       # never optimised: the baseline code's speed
}
PHASES = [("steps 1-10", 10, "back"), ("steps 11-20", 10, "back"), ("steps 21-40", 20, "back"),
          ("back to back", 40, "back"), ("idle gap", 40, "gap"), ("busy gap", 40, "busy"),
          ("25-step sample", 25, "sample"), ("25-step sample, previews", 25, "sample-preview")]

SETUP = """async (cfg) => {
  const { loadBundle } = await import("/web/ditweb.js");
  const { makeGuide, makePlan, samplerTables, stepUniform } = await import("/web/schedule.js");
  const now = () => performance.now();
  const t0 = now();
  const b = await loadBundle(cfg.bundle, { runtime: "wasm", threads: 1, simd: cfg.simd, useCache: false });
  const loadMs = now() - t0;
  const t1 = now();
  await b.sample({ classId: 0, seed: 1, steps: 1, cfg: 4.0, n: 1 });   // the batch, its init program and one step
  const sampleMs = now() - t1;
  const m = b.manifest;
  const guide = makeGuide({ cfg: 4.0 }, b.classNames);
  const plan = makePlan(guide, [0], m.model.num_classes);
  const record = stepUniform({ tables: samplerTables(m, 25), i: 12, nDone: 12, steps: 25, seed: 1, K: 1, J: 2, N: 1,
    plan, guide, sampler: "ddim", eta: 0, clipX0: true });
  window.pageStep = { b, record, junk: null };
  await b.call("run", { programs: [] });   // the worker's thread named in /proc from here on
  return { loadMs, sampleMs, simd: b.simd };
}"""

PHASE = """async ({ n, mode, gapMs }) => {
  const ps = window.pageStep;
  const { b, record } = ps;
  const now = () => performance.now();
  const out = [];
  if (mode.startsWith("sample")) {   // n steps of one sample() as a page runs them (the worker kept ahead); previews too
    const r = await b.sample({ classId: 0, seed: 2, steps: n, cfg: 4.0, n: 1, preview: mode === "sample-preview",
                               onStep: () => {} });
    return r.kernelMs.map((k) => [k, r.msPerStep]);
  }
  for (let i = 0; i < n; i++) {
    if (mode === "gap") await new Promise((r) => setTimeout(r, gapMs));
    if (mode === "busy") {   // the page's thread works through 8 MB for gapMs
      const junk = ps.junk || (ps.junk = new Float64Array(1 << 20));
      const s = now();
      for (let k = 0; now() - s < gapMs; k += 7) for (let j = 0; j < 4096; j++) junk[(k + j * 64) & (junk.length - 1)] += 1;
    }
    const s = now();
    const r = await b.call("run", { programs: ["step_begin", "forward", "step_end"], record });
    out.push([r.ms, now() - s]);
  }
  return out;
}"""


def threads_of(profile: str) -> dict[str, list[str]]:
    """{role: [/proc/PID/task/TID paths]} of this browser's processes (their command lines name its profile, or their
    parent's do): the page's worker thread, the other threads of the page's renderer process (the one that holds the
    worker), and every other process's threads (the browser, the GPU process, utilities, other renderers)."""
    threads = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "chromium" not in cmd or (profile not in cmd and not _child_of_profile(pid, profile)):
            continue
        for tid in os.listdir(f"/proc/{pid}/task"):
            t = f"/proc/{pid}/task/{tid}"
            try:
                threads.append((pid, tid, Path(f"{t}/comm").read_text().strip(), t, _kind(cmd)))
            except OSError:
                continue
    page = {pid for pid, _, comm, _, _ in threads if comm == "DedicatedWorker"}
    found: dict[str, list[str]] = {"worker": [], "renderer": [], "other": []}
    for pid, tid, comm, t, kind in threads:
        role = "worker" if comm == "DedicatedWorker" else "renderer" if pid in page else "other"
        found[role].append(t)
        if role != "worker":   # by name, for --threads
            found.setdefault(f"{role} {'main' if tid == pid else comm}" if role == "renderer" else f"other {kind} {comm}",
                             []).append(t)
    return found


def _kind(cmd: str) -> str:
    """A Chromium process's --type (browser where it has none)."""
    for part in cmd.split():
        if part.startswith("--type="):
            return part[7:]
    return "browser"


def _child_of_profile(pid: str, profile: str) -> bool:
    """A helper process (gpu, network, zygote) whose command line does not name the profile: its parent's does."""
    try:
        ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        cmd = Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace")
        if profile in cmd:
            return True
        pp = Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        return profile in Path(f"/proc/{pp}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def schedstat(paths: list[str]) -> tuple[float, float]:
    """(ms on a CPU, ms runnable but waiting) summed over threads."""
    run = wait = 0
    for t in paths:
        try:
            a, b, _ = Path(f"{t}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        run += int(a)
        wait += int(b)
    return run / 1e6, wait / 1e6


def run_variant(name: str, args) -> dict:
    from playwright.sync_api import sync_playwright
    flags = VARIANTS[name]
    profile = tempfile.mkdtemp(prefix="ditweb-chromium-")
    routes = {"/": REPO / "bench" / "web", "/web/": REPO / "web", "/bundle/": Path(args.bundle).resolve()}
    res: dict = {"variant": name, "phases": []}
    try:
        with sync_playwright() as p, local_server(routes) as url:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS + ([f"--js-flags={flags}"] if flags else []))
            page = ctx.new_page()
            for other in ctx.pages:   # the context's first blank tab: its renderer is one more process on the cores
                if other != page:
                    other.close()
            page.set_default_timeout(600_000)
            page.goto(url)
            res.update(page.evaluate(SETUP, {"bundle": "/bundle/", "simd": args.simd}))
            th = threads_of(profile)
            for label, n, mode in PHASES:
                before = {role: schedstat(paths) for role, paths in th.items()}
                t0 = time.perf_counter()
                times = page.evaluate(PHASE, {"n": n, "mode": mode, "gapMs": args.gap_ms})
                wall = (time.perf_counter() - t0) * 1e3
                after = {role: schedstat(paths) for role, paths in th.items()}
                d = {role: (after[role][0] - before[role][0], after[role][1] - before[role][1]) for role in th}
                res["phases"].append({"label": label, "n": n, "times": times, "wall": wall, "cpu": d,
                                      "workers": len(th["worker"])})
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return res


def node_step(bundle: Path, simd: str, reps: int) -> list[float]:
    """The same step in node (bench/web/wasm_profile.mjs: its untimed whole steps, after a rep of every dispatch
    timed on its own), ms each."""
    req = json.dumps({"bundle": str(bundle), "simd": simd, "reps": reps, "n": 1})
    flags = ["--experimental-wasm-relaxed-simd"] if simd == "relaxed" else []
    r = subprocess.run(["node", *flags, str(REPO / "bench" / "web" / "wasm_profile.mjs")], input=req,
                       capture_output=True, text=True, timeout=600, check=True)
    return json.loads(r.stdout)["stepMs"]


def rows_of(round_: int, r: dict) -> list[list]:
    rows = []
    for ph in r["phases"]:
        k = [a for a, _ in ph["times"]]
        w = [b for _, b in ph["times"]]
        n, cpu = ph["n"], ph["cpu"]
        rows.append([round_, f"Chromium, {r['variant']}", ph["label"], f"{statistics.median(k):.2f}", f"{min(k):.2f}",
                     f"{cpu['worker'][0] / n:.2f}", f"{cpu['worker'][1] / n:.2f}",
                     f"{statistics.median(w) - statistics.median(k):.2f}", f"{cpu['renderer'][0] / n:.2f}",
                     f"{cpu['other'][0] / n:.2f}"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "bundles" / "named-int8"))
    ap.add_argument("--simd", default="relaxed")
    ap.add_argument("--gap-ms", type=float, default=40)
    ap.add_argument("--variants", default="default,no-liftoff")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each every variant then node")
    ap.add_argument("--threads", action="store_true", help="also print the busiest other threads, by process and name")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    bundle = Path(args.bundle)
    load0 = os.getloadavg()
    rows, firsts = [], []
    for round_ in range(1, args.rounds + 1):
        for name in args.variants.split(","):
            r = run_variant(name, args)
            firsts.append(f"round {round_}, {name}: the bundle's load {r['loadMs']:.0f} ms, its 1-step sample "
                          f"{r['sampleMs']:.0f} ms")
            rows += rows_of(round_, r)
            print("\n".join(" | ".join(map(str, x)) for x in rows_of(round_, r)), flush=True)
            if args.threads:
                for ph in r["phases"]:
                    top = sorted(((v[0] / ph["n"], k) for k, v in ph["cpu"].items() if " " in k), reverse=True)[:5]
                    print(f"  {ph['label']}: busiest threads, CPU ms per step: " + ", ".join(f"{k} {v:.2f}" for v, k in top))
        ts = node_step(bundle, args.simd, 60)
        rows.append([round_, f"node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}",
                     "60 steps", f"{statistics.median(ts):.2f}", f"{min(ts):.2f}", "-", "-", "-", "-", "-"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    load1 = os.getloadavg()
    from dit_model.bench import publish, shown_path
    notes = (f"Bundle {shown_path(bundle)}, {args.simd} SIMD, one thread, batch rows 2 (one CFG step); headless "
             f"Chromium `{chromium_version()}`; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
             f"(2 cores).\nCommand: `.venv/bin/python bench/web/page_step.py --bundle {shown_path(bundle)} --simd "
             f"{args.simd} --variants {args.variants} --rounds {args.rounds}`\n\n"
             "kernels: the worker's own time for the step (ms, as the reply carries it); on CPU / waiting: the worker "
             "thread's scheduler statistics over the phase, per step (ms on a core; ms runnable but waiting for one); "
             "round trip: the page's median less the kernels' (the message both ways; in a sample, its ms a step less the kernels' median); page's renderer, other processes: the "
             "CPU time per step of the other threads of the page's renderer process (its main thread, ...) and of every "
             "other process of the browser (the browser process, the GPU process, utilities, other renderers). node: "
             "bench/web/wasm_profile.mjs's whole steps (median and fastest of 60) in the same round. Variants other "
             "than default set V8 flags (--js-flags) for diagnosis; a visitor's browser runs the default.\n\n"
             + "\n".join(f"- {f}" for f in firsts))
    publish("wasm-page-step", "The WebAssembly step in Chromium's page worker against node (issue 23)",
            ["round", "runtime", "phase", "kernels ms", "fastest ms", "on CPU ms", "waiting ms", "round trip ms",
             "page's renderer ms", "other processes ms"], rows, notes, Path(args.out))
    return 0


def chromium_version() -> str:
    r = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True)
    return r.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())

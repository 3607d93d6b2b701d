"""bench/gpu/run.sh --dry-run: the real-GPU benchmark's whole path (the carried Vulkan loader and wgpu
wheels unpacked into a temporary folder, the stages, the tables in $OUT) on Mesa lavapipe at tiny shapes,
so the script is known to work before it meets a GPU. Nothing here asserts on time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu" / "run.sh"


def run(tmp_path, *args):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_dry_run_writes_the_tables_with_the_carried_wgpu(tmp_path):
    """The whole script: the carried wheels unpacked, three `ditweb bench` stages in fresh processes (a minute or
    more on a 2-core CPU). Slow; by default test_the_dry_run_stages_write_their_tables runs the dry run's bench
    verbs at its shapes in this process and checks the same table rows, and the two tests below check the
    script's arguments and the carried files."""
    r = run(tmp_path, "--dry-run")
    out = tmp_path / "out"
    assert r.returncode == 0, r.stderr[-3000:] + (out / "run.log").read_text()[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "kernels.md", "run.log", "step-plans.md", "step.md"]
    env = (out / "env.txt").read_text()
    assert "wgpu 0.32.0 from " + str(tmp_path) in env and "lvp_icd" in env        # the carried wheel, lavapipe
    step = (out / "step.md").read_text()
    for row in ("plan default", "plan tuned", "plan alternatives", "a whole 25-step sample"):
        assert row in step, row
    assert step.count("<!-- stage") == 2
    plans = (out / "step-plans.md").read_text()
    assert "chosen" in plans and "(selection)" in plans and "layernorm_rows" in plans
    assert "square matmul 64" in (out / "kernels.md").read_text()
    assert "Traceback" not in (out / "run.log").read_text()
    assert not any(p.name.startswith("ditweb-gpu-bench") for p in tmp_path.iterdir())     # temporary folder removed


def test_the_dry_run_stages_write_their_tables(tmp_path):
    """The dry run's `ditweb bench kernels` and `bench step` (its stages 1 and 3, Favicon-N/2 on lavapipe), in
    this process with this checkout's wgpu: the rows that test_dry_run_writes_the_tables_with_the_carried_wgpu
    finds in the script's tables."""
    from ditweb.cli import main
    assert main(["bench", "kernels", "--preset", "Favicon-N/2", "--quick", "--no-torch", "--sizes", "64",
                 "--out", str(tmp_path / "k")]) == 0
    assert "square matmul 64" in (tmp_path / "k" / "kernels.md").read_text()
    assert main(["bench", "step", "--preset", "Favicon-N/2", "--quick", "--no-torch", "--dtypes", "f16", "--images", "1",
                 "--out", str(tmp_path / "s")]) == 0
    step = (tmp_path / "s" / "step.md").read_text()
    for row in ("plan default", "plan tuned", "plan alternatives", "a whole 25-step sample"):
        assert row in step, row
    plans = (tmp_path / "s" / "step-plans.md").read_text()
    assert "chosen" in plans and "(selection)" in plans and "layernorm_rows" in plans


def test_bad_arguments_are_one_line():
    r = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().startswith("usage:") and len(r.stderr.strip().splitlines()) == 1


def test_carried_files_are_small():
    files = list((REPO / "bench" / "gpu").rglob("*"))
    assert sum(f.stat().st_size for f in files if f.is_file()) < 8 * 2 ** 20
    names = {f.name.split("-")[0] for f in files if f.suffix == ".whl"}
    assert names == {"wgpu", "rendercanvas", "cffi", "pycparser"}

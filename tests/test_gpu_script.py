"""scripts/gpu_train.sh, dry-run on the CPU: the same flags a GPU run uses (bf16, compile, a data
pack, the small result files), a tiny preset and a few steps, on a Python that cannot import the
web and wgpu modules (a bare GPU machine has torch, numpy, pillow, safetensors and tqdm only)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _train_helpers import make_png_folder
from ditweb.cli import main

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_train.sh"

# Imported at start-up through PYTHONPATH: any import of these fails, as on a machine without them.
BLOCKER = '''
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"wgpu", "jinja2", "runtime_py", "webserve", "export", "playwright"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Absent())
'''


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    folder = make_png_folder(root / "pngs")
    assert main(["data", "--data", str(folder), "--size", "16", "--pack", str(root / "pack.npz"), "--sheet", ""]) == 0
    return root / "pack.npz"


def run_script(tmp_path, *args, **env):
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCKER)
    full = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=f"{block}{os.pathsep}{REPO}", OMP_NUM_THREADS="1",
                TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))   # compiled from scratch, never a stale cache
    full.update(dict(DEVICE="cpu", PRESET="Favicon-N/2", SIZE="16", BATCH="8", RUN_DIR=str(tmp_path / "run")), **env)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=600)


def dry_run(pack, tmp_path, **env):
    from dit_model.checkpoint import load_model
    out = tmp_path / "out"
    r = run_script(tmp_path, pack, out, "--max-steps", "3", "--sample-steps", "2", **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["ema.safetensors", "grid.png", "log.csv", "model.safetensors",
                                                     "train.log"]
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.iterdir())
    log = (out / "train.log").read_text()
    assert "bf16 (asked for), compiled" in log and "stopped (max steps) at step 3" in log
    assert "step [" not in log                                         # progress-bar noise filtered out
    model, meta = load_model(out / "ema.safetensors")
    assert meta["step"] == 3 and meta["class_names"] == ["cats", "dogs", "fish"]
    assert main(["sample", str(out / "ema.safetensors"), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s")]) == 0


def test_dry_run_writes_small_loadable_files(pack, tmp_path):
    """The script's whole path with its GPU flags (bf16, --compile), torch.compile made a no-op by torch's own
    TORCH_COMPILE_DISABLE=1: the flags, the blocked imports, the files and the log. The real inductor compile (a
    minute or two on a CPU) is test_dry_run_compiles_the_model, marked slow."""
    dry_run(pack, tmp_path, TORCH_COMPILE_DISABLE="1")


@pytest.mark.slow
def test_dry_run_compiles_the_model(pack, tmp_path):
    """The same dry run with torch.compile compiling for real (inductor from an empty cache: 1-2 minutes on a
    2-core CPU). Slow: test_dry_run_writes_small_loadable_files covers the script, its flags and files by default."""
    dry_run(pack, tmp_path)


def test_clear_errors_before_anything_starts(pack, tmp_path):
    r = run_script(tmp_path, tmp_path / "missing.npz", tmp_path / "out")
    assert r.returncode == 2 and "no data pack" in r.stderr and "Traceback" not in r.stderr
    if not torch.cuda.is_available():
        r = run_script(tmp_path, pack, tmp_path / "out", DEVICE="cuda")
        assert r.returncode == 2 and "torch sees no GPU" in r.stderr and "Traceback" not in r.stderr
    r = run_script(tmp_path, pack, tmp_path / "out", "--max-steps", "1", PRESET="Favicon-Q/9")
    both = r.stdout + r.stderr                                          # the run's own report is tee'd to stdout
    assert r.returncode == 2 and "unknown preset" in both and "Traceback" not in both

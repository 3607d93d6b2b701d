"""bench/int8_eval.py on a named model: a two-step named run (as tests/test_named.py trains one), its f16 and int8
weights through `ditweb eval` at the quickest settings, the named table with its verdict and the bundles' check
on the WebAssembly path; and --reference-json refusing a result of other settings in one line."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "int8_eval.py"


def run_script(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=env)


@pytest.fixture(scope="module")
def tiny_named(tmp_path_factory):
    from dit_model.checkpoint import load_model, save_weights
    root = tmp_path_factory.mktemp("int8-named")
    subprocess.run([sys.executable, "-m", "ditweb", "train", "Favicon-T/4", "--styles", "twemoji,noto,fluent",
                    "--init", "models/subcategories.safetensors", "--prediction", "v", "--batch-size", "4",
                    "--max-steps", "2", "--sample-every", "0", "--run-dir", str(root / "run")], cwd=ROOT, check=True,
                   capture_output=True)
    model, meta = load_model(root / "run" / "ckpt.pt")
    save_weights(model, root / "tiny-named.safetensors", meta["class_names"], meta["step"], meta["vocab"])
    return root / "tiny-named.safetensors"


@pytest.mark.slow
def test_named_table_verdict_and_bundle_check(tiny_named, tmp_path):
    """The script end to end: two `ditweb eval` runs (f16, int8) over the emoji vocabulary's evaluation list and the
    bundles on the WebAssembly path (about two and a half minutes on a 2-core CPU). Slow; by default the same parts
    are covered more cheaply: the named eval by tests/test_named.py test_eval_named_model, the int8 bundle in
    WebAssembly against torch by tests/test_wasm_q8.py and tests/test_shipped.py, the named bundle in WebAssembly by
    tests/test_named_bundle.py, and this script's argument checks by test_reference_json_of_other_settings_is_a_one_line_error."""
    quick = ["--steps", "1", "--seeds", "2", "--styles", "noto", "--hippo-seeds", "2", "--floor-pairs", "2", "--no-f32"]
    if shutil.which("node") is None:
        quick.append("--no-bundle-check")
    r = run_script("--ckpt", tiny_named, *quick, "--out", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "int8-eval-named.md").read_text()
    assert not (tmp_path / "int8-eval.md").exists()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    for row in (["f16", "4", "noto", "200"], ["int8", "4", "noto", "200"], ["int8", "4", "all"]):
        assert any(c[:len(row)] == row for c in cells), text
    assert "**Verdict: int8" in text and "of f16" in text and "binomial standard errors" in text
    assert "--ckpt tiny-named.safetensors" in text and str(tmp_path.parent) not in text   # no machine paths
    if "--no-bundle-check" not in quick:
        psnrs = [float(v) for v in re.findall(r"wasm path vs torch at its weights +\| ([0-9.]+) dB", text)]
        assert len(psnrs) == 2 and min(psnrs) > 40, text


def test_reference_json_of_other_settings_is_a_one_line_error(tmp_path):
    """The shipped named model: the script refuses before any eval, so no model is trained here. The steps are the
    first setting compared, so the line starts with them (the model's step follows: the reference is step 2's)."""
    named = ROOT / "models" / "named.safetensors"
    ref = {"meta": {"steps": 50, "seeds per request": 2, "step": 2}, "styles": ["fluent", "noto", "twemoji"],
           "floor_pairs": 20, "rows": [], "hippo": [{"cfg": 4.0, "style": "noto", "seeds": 16, "top5": 0, "top1": 0}]}
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    r = run_script("--ckpt", named, "--steps", "1", "--reference-json", tmp_path / "ref.json", "--out", tmp_path)
    assert r.returncode != 0 and "not this run's eval: steps 50 (this run: 1)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_script("--ckpt", "models/default.safetensors", "--reference-json", tmp_path / "ref.json", "--out", tmp_path)
    assert r.returncode != 0 and "is for a named model" in r.stderr

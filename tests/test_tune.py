"""Kernel plans (runtime_py/tune.py): candidates timed on this adapter, the plan cached per adapter and
bundle, forced plans, and what plans may change in the images (tests never assert on time)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from _gpu_helpers import gpu  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    from _gpu_helpers import random_model
    from dit_model.model import preset_config
    from export.bundle import export_bundle
    return export_bundle(random_model(preset_config("Favicon-N/2"), seed=3), tmp_path_factory.mktemp("tune") / "b", "f32",
                         ["a", "b", "c"])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ditweb" / "plans.json"


def all_alternatives(m: dict, plan: dict) -> dict:
    """The plan that runs every slot's other candidate."""
    return {slot: next(c for c in m["candidates"][slot.split("|")[0]] if c != slot.split("|")[0]) for slot in plan}


def psnr(a, b) -> float:
    a, b = (np.clip(a, -1, 1) + 1) / 2, (np.clip(b, -1, 1) + 1) / 2
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_auto_plan_is_timed_once_then_cached(gpu, bundle_path, cache):
    from runtime_py.bundle import Bundle
    b = Bundle.load(bundle_path, gpu=gpu, plan="auto")
    st = b.state(2, 1)
    m = b.manifest
    assert b.last_tune is not None and st.plan                # timed: one pick per slot
    for slot, k in st.plan.items():
        assert k in m["candidates"][slot.split("|")[0]]
        times = b.last_tune["slots"][slot]
        assert set(times) == set(m["candidates"][slot.split("|")[0]]) and all(t > 0 for t in times.values())
    data = json.loads(cache.read_text())
    assert list(data["plans"].values()) == [st.plan]
    again = Bundle.load(bundle_path, gpu=gpu, plan="auto")
    assert again.state(2, 1).plan == st.plan and again.last_tune is None      # from the cache, nothing timed
    assert again.state(4, 2).plan and again.last_tune is not None             # another batch: timed anew


def test_a_damaged_cache_is_only_a_lost_speed_up(gpu, bundle_path, cache, capsys):
    from runtime_py.bundle import Bundle
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    b = Bundle.load(bundle_path, gpu=gpu, plan="auto")
    assert b.state(2, 1).plan and "damaged plan cache" in capsys.readouterr().err
    assert json.loads(cache.read_text())["version"] == 1
    # an entry naming a kernel the bundle does not have is ignored and re-timed
    data = json.loads(cache.read_text())
    data["plans"] = {k: {slot: "nope" for slot in v} for k, v in data["plans"].items()}
    cache.write_text(json.dumps(data))
    b2 = Bundle.load(bundle_path, gpu=gpu, plan="auto")
    assert "nope" not in b2.state(2, 1).plan.values() and b2.last_tune is not None


def test_plans_same_bits_for_the_same_plan_and_40_db_across_plans(gpu, bundle_path, cache):
    from runtime_py.bundle import Bundle
    b = Bundle.load(bundle_path, gpu=gpu, plan="default")
    assert b.state(2, 1).plan == {}
    x_default = b.sample(1, seed=5, steps=10)
    plan = Bundle.load(bundle_path, gpu=gpu, plan="auto").state(2, 1).plan
    alt = all_alternatives(b.manifest, plan)
    forced = Bundle.load(bundle_path, gpu=gpu, plan=alt)
    assert forced.state(2, 1).plan == alt
    x_alt = forced.sample(1, seed=5, steps=10)
    assert np.array_equal(x_alt, Bundle.load(bundle_path, gpu=gpu, plan=alt).sample(1, seed=5, steps=10))
    assert psnr(x_alt, x_default) >= 40.0


def test_plan_file_and_bad_plans_are_one_line_errors(gpu, bundle_path, cache, tmp_path):
    from ditformat.errors import UsageError
    from runtime_py.bundle import Bundle
    plan = Bundle.load(bundle_path, gpu=gpu, plan="auto").state(2, 1).plan
    good = tmp_path / "plan.json"
    good.write_text(json.dumps(plan))
    assert Bundle.load(bundle_path, gpu=gpu, plan=str(good)).state(2, 1).plan == plan
    for text, msg in [("{", "not JSON"), ("[1]", "JSON object"), (json.dumps({next(iter(plan)): "gated_residual"}),
                                                                   "not a candidate")]:
        good.write_text(text)
        with pytest.raises(UsageError, match=msg):
            Bundle.load(bundle_path, gpu=gpu, plan=str(good))
    with pytest.raises(UsageError, match="cannot read"):
        Bundle.load(bundle_path, gpu=gpu, plan=str(tmp_path / "missing.json"))
    good.write_text("{")
    r = subprocess.run([sys.executable, "-m", "ditweb", "sample", str(bundle_path), "--runtime", "wgpu", "--n", "1",
                        "--steps", "2", "--plan", str(good), "--out", str(tmp_path / "s")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "not JSON" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len([line for line in r.stderr.splitlines() if "ditweb" in line and "not JSON" in line]) == 1


def test_validate_checks_every_candidate(bundle_path):
    from runtime_py.bundle import Bundle
    from runtime_py.validate import validate
    b = Bundle.load(bundle_path, plan="default")
    rows = validate(b)
    checked = {r.kernel.split("[")[-1].rstrip("]") for r in rows if "[" in r.kernel}
    offered = {c for names in b.manifest["candidates"].values() for c in names}
    assert offered <= checked and all(r.passed for r in rows)


def test_wall_clock_timing_without_timestamp_queries(gpu, bundle_path, monkeypatch):
    from runtime_py.bundle import Bundle
    from runtime_py.tune import tune
    monkeypatch.setattr(gpu, "timestamps", False)                   # an adapter without timestamp-query
    b = Bundle.load(bundle_path, gpu=gpu, plan="default")
    plan, report = tune(b, 2, 1, repeats=2)
    assert report["source"] == "wall clock" and plan
    assert all(t > 0 for times in report["slots"].values() for t in times.values())


def test_a_forced_plan_dict_is_checked(gpu, bundle_path):
    from ditformat.errors import UsageError
    from runtime_py.bundle import Bundle
    with pytest.raises(UsageError, match="not a candidate"):
        Bundle.load(bundle_path, gpu=gpu, plan={"layernorm_mod|1,2": "gated_residual"})
    with pytest.raises(UsageError, match="JSON object"):
        Bundle.load(bundle_path, gpu=gpu, plan=["matmul"])

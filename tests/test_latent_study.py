"""bench/latent_study.py (issue 20, item 4): every row gets the same training compute, a row's training stops at
each kept checkpoint and continues where it stopped, and the table and plot work on whatever rows are finished.
Training and `ditweb eval` are stood in for here (the whole pipeline on two steps a row: `latent_study.py --smoke
DIR run-all`, docs/training.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import latent_study as ls  # noqa: E402


@pytest.fixture
def study(tmp_path):
    return ls.Study(runs=tmp_path / "runs", results=tmp_path, rows=tuple(ls.ROWS))


def test_every_row_gets_the_same_compute_at_least_twice_the_recipe_rows(study):
    seen = {}
    for row in ls.ROWS:
        p = ls.plan(study, row)
        t = ls.tflop(study, p["gflops"], p["steps"])
        assert t == pytest.approx(2 * 43.0, rel=2e-3), (row, t)
        assert p["marks"] == sorted(p["marks"]) and p["marks"][-1] == p["steps"] and len(p["marks"]) == 3
        seen[row] = p
    assert seen["pixel-T4"]["tokens"] == seen["latent-T1"]["tokens"] == 64          # the same token count
    assert {seen[r]["patch"] for r in seen if ls.ROWS[r][1]} == {1, 2}
    assert seen["latent-S1"]["width"] > seen["latent-T1"]["width"] and seen["latent-S1"]["input"] == "8x8x8"
    assert seen["latent-T2"]["steps"] > seen["latent-T1"]["steps"] > seen["latent-S1"]["steps"]


def fake_training(monkeypatch, calls):
    """train_to stood in for: the run's ckpt.pt holds the step it was trained to."""
    def train_to(study, row, step):
        run = study.run(row)
        run.mkdir(parents=True, exist_ok=True)
        have = ls.ckpt_step(run / "ckpt.pt") or 0
        assert step > have, "trained again to a step it already had"
        calls.append((row, have, step))
        torch.save({"step": step}, run / "ckpt.pt")
    monkeypatch.setattr(ls, "train_to", train_to)


def test_training_keeps_each_mark_and_continues_where_it_stopped(study, monkeypatch):
    calls = []
    fake_training(monkeypatch, calls)
    row = "latent-S1"
    marks = ls.plan(study, row)["marks"]
    study.run(row).mkdir(parents=True)
    torch.save({"step": marks[0] - 7}, study.run(row) / "ckpt.pt")                 # a sitting killed before mark 1
    ls.train(study, row)
    assert calls == [(row, marks[0] - 7, marks[0]), (row, marks[0], marks[1]), (row, marks[1], marks[2])]
    assert [ls.ckpt_step(ls.snapshot(study, row, m)) for m in marks] == marks
    calls.clear()
    ls.train(study, row)                                                           # finished: nothing to do
    assert calls == []
    ls.snapshot(study, row, marks[0]).unlink()                                     # a copy lost past its step
    ls.train(study, row)
    assert calls == [] and not ls.snapshot(study, row, marks[0]).exists()


def fake_eval(study, row, step, fd):
    run = study.run(row)
    run.mkdir(parents=True, exist_ok=True)
    style = lambda s, f: {"label": "cfg 4", "style": s, "fd_over_floor": f}
    rows = [style("fluent", fd), style("noto", 2 * fd), style("twemoji", 3 * fd),
            {"label": "cfg 4", "style": "all", "top1": 1.5, "top5": 6.0, "category_balanced_accuracy": 20.0,
             "category_of_ceiling": 30.0, "diversity": 0.3}]
    ls.eval_path(study, row, step).write_text(json.dumps({"meta": {"seeds per request": 2, "steps": 50}, "rows": rows}))
    ls.seam_path(study, row, step).write_text(json.dumps({"generated": 1.1, "real": 1.0, "vs_real": 1.1, "samples": 144}))
    half = step // 2                                                   # two sittings: elapsed_s starts again
    (run / "log.csv").write_text("step,epoch,loss,mse,vlb,img_per_s,elapsed_s\n" + f"{half},1,0.1,0.1,0,10,{2 * half}\n"
                                 + f"{half + 1},1,0.1,0.1,0,10,2\n" + f"{step},1,0.1,0.1,0,10,{2 * (step - half)}\n")


def test_table_and_plot_from_the_rows_finished_so_far(study):
    end = ls.plan(study, "pixel-T4")["steps"]
    fake_eval(study, "pixel-T4", end, 10.0)
    first = ls.plan(study, "latent-T1")["marks"][0]
    fake_eval(study, "latent-T1", first, 20.0)                                    # a row a quarter of the way
    md = ls.table(study).read_text()
    lines = [l for l in md.splitlines() if l.startswith("| pixel-T4") or l.startswith("| latent-T1")]
    assert len(lines) == 2
    assert f"| {end} of {end} " in lines[0] and "| 20.00 " in lines[0] and "| 1.10 " in lines[0]   # mean FD/floor
    assert f"{first} of " in lines[1] and "| 40.00 " in lines[1]
    assert "Not finished yet: latent-T1, latent-S1, latent-T2, latent-S2" in md
    assert "/tmp" not in md and str(ROOT) not in md
    data = json.loads((study.results / "latent-study.json").read_text())
    assert data["rows"]["pixel-T4"]["points"][str(end)]["fd_over_floor_mean"] == pytest.approx(20.0)
    assert data["rows"]["pixel-T4"]["points"][str(end)]["seconds_per_step"] == pytest.approx(2.0)
    assert data["rows"]["latent-S2"]["points"] == {}
    png = ls.plot(study)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    (study.run("pixel-T4") / f"eval-{end}.json").unlink()                          # runs/ gone: the JSON keeps it
    assert f"| {end} of {end} " in ls.table(study).read_text()

"""`ditweb info` and `ditweb sample`: outputs, determinism and one-line errors with nothing written."""
import subprocess
import sys

import pytest
import torch

from ditweb.cli import main
from dit_model.checkpoint import atomic_save
from dit_model.model import DiT


def ditweb(*argv):
    return subprocess.run([sys.executable, "-m", "ditweb", *argv], capture_output=True, text=True, timeout=300)


@pytest.fixture
def ckpt(tmp_path, tiny_cfg):
    from conftest import randomize
    model = randomize(DiT(tiny_cfg), seed=5)
    path = tmp_path / "tiny.pt"
    atomic_save({"ema": model.state_dict(), "config": tiny_cfg.to_dict(), "class_names": ["hippo", "cat", "flag"],
                 "step": 7}, path)
    return path


def test_info_prints_paper_numbers(capsys):
    assert main(["info", "DiT-XL/2", "--input-size", "32", "--in-channels", "4", "--num-classes", "1000"]) == 0
    out = capsys.readouterr().out
    assert "675,129,632" in out and "118.638" in out


def test_sample_writes_grid_pngs_and_icos_deterministically(ckpt, tmp_path):
    args = ["sample", str(ckpt), "--class", "cat", "--n", "3", "--steps", "4", "--cfg", "2", "--negative-class", "flag",
            "--seed", "9"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["grid.png", "sample_000.ico", "sample_000.png", "sample_001.ico", "sample_001.png",
                     "sample_002.ico", "sample_002.png"]
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert main(args[:-1] + ["10", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "grid.png").read_bytes() != (tmp_path / "a" / "grid.png").read_bytes()


def test_sample_every_guide_option_runs(ckpt, tmp_path):
    assert main(["sample", str(ckpt), "--compose", "hippo:1,flag:-0.5", "--n", "1", "--steps", "3", "--schedule",
                 "linear", "--cfg", "3", "--cfg-end", "1", "--batch-k", "2", "--batch-tau", "0.3", "--sampler", "ddpm",
                 "--out", str(tmp_path / "o")]) == 0
    assert main(["sample", str(ckpt), "--schedule", "interval", "--interval", "100:800", "--n", "1", "--steps", "3",
                 "--out", str(tmp_path / "p")]) == 0


@pytest.mark.parametrize("argv,message", [
    (["sample", "DiT-Q/3"], "neither a checkpoint file nor a preset"),
    (["sample", "{ckpt}", "--class", "giraffe"], "unknown class 'giraffe'"),
    (["sample", "{ckpt}", "--class", "7"], "class id 7 out of range"),
    (["sample", "{ckpt}", "--negative-class", "zebra"], "unknown class 'zebra'"),
    (["sample", "{ckpt}", "--schedule", "linear"], "end scale"),
    (["sample", "{ckpt}", "--interval", "a:b"], "bad --interval"),
    (["sample", "{bad}"], "not a loadable checkpoint"),
    (["sample", "{odd}"], "matches no preset"),
    (["info", "DiT-S/8", "--input-size", "12"], "not divisible by patch size 8"),
    (["info", "DiT-Z/2"], "unknown preset"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, message, ckpt, tmp_path, capsys):
    """In this process, as `python -m ditweb` runs main (argparse's SystemExit included); the command in its own
    process: test_errors_are_one_line_and_debug_shows_the_traceback."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    odd = tmp_path / "odd.pt"
    from dit_model.model import DiTConfig
    torch.save(DiT(DiTConfig(input_size=8, patch_size=2, hidden_size=24, depth=1, num_heads=2, num_classes=2)).state_dict(), odd)
    out = tmp_path / "out"
    argv = [a.format(ckpt=ckpt, bad=bad, odd=odd) for a in argv]
    capsys.readouterr()
    try:
        code = main([*argv, *(["--out", str(out)] if argv[0] == "sample" else [])])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in err
    assert not out.exists()


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    """A DitwebError is one line (exit 2); --debug (before or after the verb) adds its traceback."""
    r = ditweb("info", "DiT-Z/2")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    for argv in (["--debug", "info", "DiT-Z/2"], ["info", "DiT-Z/2", "--debug"]):
        r = ditweb(*argv)
        assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("ditweb info: error: unknown preset")


def test_a_bug_is_not_reported_as_bad_input(monkeypatch, capsys):
    """Only the project's own errors become one line: a plain ValueError from a bug keeps its traceback."""
    import dit_model.cli as model_cli

    def buggy(args):
        raise ValueError("a bug, not bad input")
    monkeypatch.setattr(model_cli, "cmd_info", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["info"])


# ------------------------------------------------------------------ issue 24: bad command lines, counted

def _bad_command_lines(ckpt, tmp_path) -> list[list[str]]:
    """>= 100 command lines that must fail with one line and write nothing: non-finite numbers, seeds outside
    0..2^32-1, negative counts, output folders that are files, argparse errors, options refused once merged."""
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    out = str(tmp_path / "out")
    sample = ["sample", str(ckpt), "--n", "1", "--steps", "2", "--out", out]
    train = ["train", "Favicon-N/2", "--data", str(tmp_path / "no-data"), "--run-dir", str(tmp_path / "run")]
    export = ["export", str(ckpt), out]
    lines = []
    for v in ("nan", "inf", "-inf", "NaN", "1e999", "-1e999"):
        lines += [sample + [opt, v] for opt in ("--cfg", "--cfg-end", "--eta", "--batch-tau")]
        lines += [train + [opt, v] for opt in ("--lr", "--weight-decay", "--ema", "--epochs", "--sample-cfg",
                                               "--min-snr-gamma")]
        lines += [export + ["--shard-mb", v], sample + ["--compose", f"hippo={v}"]]
    for seed in ("-1", str(2 ** 32), str(2 ** 64), str(10 ** 30), "-4294967296"):
        lines += [sample + ["--seed", seed], train + ["--seed", seed], export + ["--seed", seed],
                  ["eval", str(ckpt), "--seed", seed]]
    for opt in ("--n", "--steps", "--batch-k"):
        lines.append(sample + [opt, "-1"])
    for opt in ("--max-steps", "--batch-size", "--log-every", "--ckpt-every", "--sample-every", "--sample-per-class",
                "--sample-steps", "--warmup"):
        lines.append(train + [opt, "-1"])
    lines += [train + ["--max-steps", "-5"], ["eval", str(ckpt), "--n-per-class", "-1"], ["eval", str(ckpt), "--steps", "-3"],
              ["info", "DiT-S/2", "--input-size", "-32"], ["serve", "--port", "-1"], ["validate", "x", "--batch", "-2"],
              ["data", "--per-class", "-1"]]
    for opt in ("--ckpt-every", "--log-every", "--sample-per-class", "--sample-steps", "--batch-size"):
        lines.append(train + [opt, "0"])
    lines += [train + ["--lr", "0"], train + ["--ema", "1"], train + ["--sample-steps", "5000"], train + ["--epochs", "0"]]
    for path in (str(afile), str(afile / "sub"), str(afile / "sub" / "deeper")):
        lines += [sample[:-1] + [path], ["export", str(ckpt), path], train[:-1] + [path],
                  ["eval", str(ckpt), "--out", path], ["bench", "train", "--out", path]]
    lines += [sample + ["--n", "abc"], sample + ["--seed", "1.5"], sample + ["--bogus"], ["sample"], ["export", str(ckpt)],
              train + ["--lr", "fast"], ["bench", "nothing"], sample + ["--sampler", "euler"], sample + ["--steps", "0"],
              sample + ["--steps", "1001"], sample + ["--seed", "1" * 5000]]
    return lines


def test_bad_command_lines_are_one_line_errors_and_write_nothing(ckpt, tmp_path, capsys):
    lines = _bad_command_lines(ckpt, tmp_path)
    assert len(lines) >= 100
    for argv in lines:
        try:
            code = main(argv)
        except SystemExit as e:                              # argparse's own errors: one line too
            code = e.code
        err = capsys.readouterr().err
        errors = [l for l in err.strip().splitlines() if "error:" in l]
        assert code == 2 and "Traceback" not in err and len(errors) == 1 == len(err.strip().splitlines()), (argv, err[-400:])
        assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists(), argv
    print(f"{len(lines)} bad command lines: each one line, exit 2, nothing written")


@pytest.mark.parametrize("argv,words", [
    (["sample", "{ckpt}", "--seed", str(2 ** 64)], "seeds are 0..4294967295"),
    (["sample", "{ckpt}", "--seed", "-1"], "--seed must not be negative"),
    (["train", "--max-steps", "-1"], "--max-steps must not be negative"),
    (["export", "{ckpt}", "{out}", "--shard-mb", "nan"], "--shard-mb must be a finite number"),
    (["sample", "{ckpt}", "--out", "{file}"], "is a file, not a folder"),
    (["train", "--run-dir", "{file}"], "--run-dir"),
])
def test_bad_values_are_named(argv, words, ckpt, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main([a.format(ckpt=ckpt, out=tmp_path / "o", file=f) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0 and words in err, err


def test_a_resumed_run_with_non_finite_saved_options_is_refused(tmp_path, capsys):
    from dit_model.checkpoint import atomic_save
    run = tmp_path / "run"
    atomic_save({"model": {}, "ema": {}, "opt": {}, "step": 1, "config": {}, "class_names": [],
                 "train_args": {"lr": float("nan")}}, run / "ckpt.pt")
    assert main(["train", "--resume", str(run)]) == 2
    assert "--lr must be a finite number > 0, got nan" in capsys.readouterr().err


def test_export_refuses_weights_beyond_float16(tmp_path, tiny_cfg, capsys):
    from conftest import randomize
    model = randomize(DiT(tiny_cfg), seed=5)
    with torch.no_grad():
        model.final_layer.linear.weight[0, 0] = 1e6
    path = tmp_path / "big.pt"
    atomic_save({"ema": model.state_dict(), "config": tiny_cfg.to_dict()}, path)
    assert main(["export", str(path), str(tmp_path / "b"), "--dtype", "f16"]) == 2
    err = capsys.readouterr().err
    assert "'final_layer.linear.weight' holds 1e+06, beyond float16's range" in err and not (tmp_path / "b").exists()

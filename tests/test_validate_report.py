"""`ditweb validate --json FILE --junit FILE` (docs/ci.md): every check in both reports, read back with a JUnit
parser (junitparser, a test-only dependency); exit codes 0 / 1 / 2 and the reports of each. The shipped bundles
are validated through the same command by .ci/run."""
from __future__ import annotations

import json

import pytest

from _gpu_helpers import gpu, random_model, small_cfg  # noqa: F401
from export.bundle import export_bundle

junitparser = pytest.importorskip("junitparser", reason="test dependency: pip install -e '.[dev]'")


def junit_cases(path):
    xml = junitparser.JUnitXml.fromfile(str(path))
    return [(suite, case) for suite in xml for case in suite]


def test_validate_reports_list_every_check(gpu, tmp_path, capsys):
    from ditweb.cli import main
    from runtime_py.bundle import Bundle
    from runtime_py.validate import validate_checks
    bundle = export_bundle(random_model(small_cfg(), seed=5), tmp_path / "b", "f16")
    assert main(["validate", str(bundle), "--json", str(tmp_path / "r" / "v.json"),
                 "--junit", str(tmp_path / "r" / "v.xml"), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "v.xml" in out
    expected = validate_checks(Bundle.load(bundle, plan="default"))
    names = [r.kernel for _, r in expected]
    assert any(g == "model" for g, _ in expected) and len({g for g, _ in expected}) >= 5

    report = json.loads((tmp_path / "r" / "v.json").read_text())
    assert report["result"] == "passed" and report["exit_code"] == 0 and report["dtype"] == "f16"
    assert report["checks"] == report["passed"] == len(names) and report["failed"] == 0
    assert [r["name"] for r in report["rows"]] == names
    for r in report["rows"]:
        assert r["passed"] and r["bound"] >= 0 and 0 <= r["ratio"] <= 1 and r["max_abs_error"] >= 0

    cases = junit_cases(tmp_path / "r" / "v.xml")
    assert [c.name for _, c in cases] == names                  # one test case per check, in order
    assert all(c.is_passed for _, c in cases)
    for (_, c), row in zip(cases, report["rows"]):
        props = {p.get("name"): p.get("value") for p in c._elem.iter("property")}
        assert float(props["bound"]) == pytest.approx(row["bound"], rel=1e-5)
        assert float(props["ratio"]) == pytest.approx(row["ratio"], rel=1e-5, abs=1e-12)
        assert "bound" in c.system_out and "error / bound" in c.system_out
    whole = [c for _, c in cases if c.name == "whole model forward"]
    assert len(whole) == 1 and whole[0].classname.endswith(".model")


def test_failed_check_exits_1_and_the_reports_say_which(gpu, tmp_path, capsys):
    from dit_model.checkpoint import atomic_save
    from ditweb.cli import main
    bundle = export_bundle(random_model(small_cfg(), seed=5), tmp_path / "b", "f32")
    other = random_model(small_cfg(), seed=6)                   # not the bundle's weights: the whole model fails
    atomic_save({"model": other.state_dict(), "config": other.cfg.to_dict()}, tmp_path / "other.pt")
    assert main(["validate", str(bundle), "--ckpt", str(tmp_path / "other.pt"),
                 "--json", str(tmp_path / "v.json"), "--junit", str(tmp_path / "v.xml")]) == 1
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["result"] == "failed" and report["exit_code"] == 1 and report["failed"] == 1
    failed = [c for _, c in junit_cases(tmp_path / "v.xml") if not c.is_passed]
    assert [c.name for c in failed] == ["whole model forward"]
    (result,) = failed[0].result
    assert isinstance(result, junitparser.Failure) and "over its bound" in result.message
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "v.xml"))
    assert sum(s.failures for s in xml) == 1


def test_bad_input_exits_2_with_an_errored_report(tmp_path, capsys):
    from ditweb.cli import main
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    assert main(["validate", str(tmp_path / "b"), "--json", str(tmp_path / "v.json"),
                 "--junit", str(tmp_path / "v.xml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ditweb validate: error:")
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["result"] == "error" and report["exit_code"] == 2 and report["checks"] == 0 and report["error"]
    (case,) = [c for _, c in junit_cases(tmp_path / "v.xml")]
    assert isinstance(case.result[0], junitparser.Error)
    # an unwritable report path is bad input too, found before any check runs
    assert main(["validate", str(tmp_path / "b"), "--junit", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["validate", str(tmp_path / "b"), "--json", str(tmp_path / "file" / "v.json")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_report_writes_non_finite_numbers_as_strings():
    from runtime_py.parity import Row
    from runtime_py.report import junit_xml, make_report
    rows = [("forward", Row("x [k]", {"M": 2}, 4, float("inf"), 1e-3, float("inf"), False, "dst[0]: gpu nan vs 1"))]
    report = make_report({"bundle": "b"}, rows)
    text = json.dumps(report, allow_nan=False)              # valid JSON: no Infinity / NaN tokens
    assert '"inf"' in text and report["exit_code"] == 1
    assert "dst[0]: gpu nan" in junit_xml(report)


def test_the_ci_recipe_is_valid_yaml_with_real_options():
    """docs/ci.md's workflow: valid YAML; every `ditweb ...` command in it parses with this ditweb's options."""
    import re
    import shlex
    from pathlib import Path
    yaml = pytest.importorskip("yaml")
    from ditweb.cli import build_parser
    text = (Path(__file__).resolve().parent.parent / "docs" / "ci.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    steps = yaml.safe_load(block)["jobs"]["validate"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    commands = [line.split("#")[0].strip() for r in runs for line in r.replace("\n", " ;\n").split(";")]
    commands = [c.replace("\n", " ") for c in commands if c.startswith("ditweb ") and c != "ditweb --version"]
    verbs = [shlex.split(c)[1] for c in commands]
    assert verbs == ["export", "validate"]
    parser = build_parser()
    for c in commands:
        args = parser.parse_args(shlex.split(c)[1:])
        if args.verb == "validate":
            assert args.junit == "reports/validate.xml" and args.json == "reports/validate.json"
    assert "mesa-vulkan-drivers" in block and "upload-artifact" in block and "torch==2.13.0" in block

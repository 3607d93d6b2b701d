"""Machine-readable results of `ditweb validate` for CI systems (docs/ci.md): a JSON document and a JUnit XML
report with one test case per check (every kernel dispatch, each candidate kernel, the whole model, a latent
bundle's decoder), each with its max abs error, bound and error / bound. Standard library only: a report can
be written, read and tested without torch or a GPU.

Exit codes of `ditweb validate` (the reports say the same): 0 every check passed, 1 a check failed (the reports
list which), 2 bad input (an unreadable or tampered bundle, a bad option: no check ran; the reports hold one
errored test case naming the problem)."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ditformat.atomic import write_text_atomic

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
REPORT_VERSION = 1


def _number(v):
    """JSON has no Infinity / NaN: a non-finite error or ratio is written as the string "inf" / "nan"."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")


def check_entry(group: str, row) -> dict:
    """One check (a runtime_py.parity.Row and its group: the program, "model", "decoder") as a JSON object."""
    kernel = row.kernel.split("[")[-1].rstrip("]") if "[" in row.kernel else None
    return {"name": row.kernel, "group": group, "kernel": kernel, "shape": dict(row.shape), "K": row.K,
            "max_abs_error": _number(row.max_abs), "bound": _number(row.tol), "ratio": _number(row.ratio),
            "passed": bool(row.passed), **({"failure": row.where} if row.where else {})}


def make_report(info: dict, checks: list[tuple[str, object]] | None = None, error: str | None = None) -> dict:
    """The JSON report: `info` (bundle, dtype, adapter, versions, seconds, ...), the checks, the verdict and the
    exit code. `error`: bad input stopped validation before any check (exit 2)."""
    entries = [check_entry(g, r) for g, r in (checks or [])]
    failed = sum(not e["passed"] for e in entries)
    code = EXIT_BAD_INPUT if error else EXIT_FAILED if failed else EXIT_PASSED
    return {"report": "ditweb validate", "report_version": REPORT_VERSION, **info,
            "result": {EXIT_PASSED: "passed", EXIT_FAILED: "failed", EXIT_BAD_INPUT: "error"}[code],
            "exit_code": code, "checks": len(entries), "passed": len(entries) - failed, "failed": failed,
            **({"error": error} if error else {}), "rows": entries}


def _fmt(v) -> str:
    return v if isinstance(v, str) else "" if v is None else f"{v:.6g}"


def _class_name(bundle: str, group: str) -> str:
    """JUnit class names use dots as package separators: the bundle folder's name, then the group without dots
    or spaces (forward, init, step_begin, k2_step_end, model, decoder)."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_" else "_" for c in s)
    return f"ditweb_validate.{safe(Path(bundle).name or 'bundle')}.{safe(group.replace('K=2 ', 'k2_'))}"


def junit_xml(report: dict) -> str:
    """The JSON report as JUnit XML: a <testsuite> per group, a <testcase> per check with its error, bound and
    ratio as <properties> and in <system-out>, a <failure> where it is over its bound; bad input is one test
    case with an <error>."""
    bundle = str(report.get("bundle", "bundle"))
    root = ET.Element("testsuites", name=f"ditweb validate {bundle}", tests=str(max(report["checks"], 1)),
                      failures=str(report["failed"]), errors=str(int(report["exit_code"] == EXIT_BAD_INPUT)),
                      time=_fmt(report.get("seconds", 0.0)))
    groups: dict[str, list[dict]] = {}
    for e in report["rows"]:
        groups.setdefault(e["group"], []).append(e)
    if report["exit_code"] == EXIT_BAD_INPUT:
        groups = {"load": []}
    for group, entries in groups.items():
        suite = ET.SubElement(root, "testsuite", name=f"ditweb validate {bundle}: {group}",
                              tests=str(max(len(entries), 1)), failures=str(sum(not e["passed"] for e in entries)),
                              errors=str(int(not entries)), skipped="0")
        props = ET.SubElement(suite, "properties")
        for k in ("bundle", "dtype", "adapter", "ditweb", "format_version", "ckpt"):
            if report.get(k) is not None:
                ET.SubElement(props, "property", name=k, value=str(report[k]))
        if not entries:                                     # bad input: no check ran
            case = ET.SubElement(suite, "testcase", classname=_class_name(bundle, group), name="load and verify the bundle")
            ET.SubElement(case, "error", message=report.get("error", "error"), type="bad input").text = report.get("error")
            continue
        for e in entries:
            case = ET.SubElement(suite, "testcase", classname=_class_name(bundle, group), name=e["name"], time="0")
            cprops = ET.SubElement(case, "properties")
            shape = ",".join(f"{k}={v}" for k, v in e["shape"].items())
            for k, v in (("kernel", e["kernel"]), ("shape", shape), ("K", e["K"]),
                         ("max_abs_error", _fmt(e["max_abs_error"])), ("bound", _fmt(e["bound"])),
                         ("ratio", _fmt(e["ratio"]))):
                if v is not None:
                    ET.SubElement(cprops, "property", name=k, value=str(v))
            where = shape + ("" if e["K"] is None else f", K={e['K']}")
            text = (f"max abs error {_fmt(e['max_abs_error'])}, bound {_fmt(e['bound'])}, error / bound "
                    f"{_fmt(e['ratio'])} ({where})")
            if not e["passed"]:
                ET.SubElement(case, "failure", message=f"error over its bound: {text}",
                              type="bound exceeded").text = e.get("failure") or text
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_reports(report: dict, json_path=None, junit_path=None) -> list[Path]:
    out = []
    if json_path:
        out.append(write_text_atomic(json_path, json.dumps(report, indent=1) + "\n"))
    if junit_path:
        out.append(write_text_atomic(junit_path, junit_xml(report)))
    return out

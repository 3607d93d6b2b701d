"""The import graph: every arrow points down, no cycle, and the runtime path needs no torch.

Layers, bottom to top (docs/bundle-format.md, "Layers"):
    ditformat   the format: versions, schema, step uniform, op params, sampler tables, guidance plans, linear
                forms (numpy only)
    dit_model   the model in torch (its noise is numpy, usable without torch)
    wgsl        the kernels: op table and templates
    export      checkpoint -> bundle
    runtime_py  bundle -> images on wgpu (numpy + wgpu on the sampling path, no dit_model)
    webserve    the page and the static site
    bench       benchmark tooling
    ditweb      the command shell, the only module that knows every verb
Every import (also one inside a function) of a project package is checked, parsed with `ast`."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["ditformat", "dit_model", "wgsl", "export", "runtime_py", "webserve", "bench", "ditweb"]
STDLIB = set(sys.stdlib_module_names)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything the module imports (relative imports resolved)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}       # `from . import x` may name a module
            else:
                out.add(node.module)
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(m, p) if i in mods and i != m} for m, p in mods.items()}


def layer(mod: str) -> int:
    return LAYERS.index(mod.split(".")[0])


def test_every_import_points_down():
    up = [f"{m} -> {i}" for m, deps in graph().items() for i in deps if layer(i) > layer(m)]
    assert not up, "upward imports:\n" + "\n".join(sorted(up))


def test_no_import_cycle_between_modules():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g[m]):
            if d.startswith(m + "."):          # a package importing its own submodule (lazy __init__)
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2
    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_format_module_imports_only_numpy():
    mods = modules()
    for m, p in mods.items():
        if m.split(".")[0] != "ditformat":
            continue
        outside = {i.split(".")[0] for i in imports(m, p)} - STDLIB - {"numpy", "ditformat"}
        assert not outside, f"{m} imports {outside}"


RUNTIME_SAMPLING = ["runtime_py", "runtime_py.bundle", "runtime_py.gpu", "runtime_py.verify", "runtime_py.shards",
                    "runtime_py.tune", "runtime_py.decode"]


def test_runtime_sampling_path_imports_neither_torch_nor_dit_model():
    """Walk the import graph from the modules Bundle.load + sample use: no torch, no dit_model, anywhere below."""
    mods = modules()
    seen, todo, bad = set(), list(RUNTIME_SAMPLING), []
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for i in imports(m, mods[m]):
            top = i.split(".")[0]
            if top in ("torch", "dit_model"):
                bad.append(f"{m} -> {i}")
            elif i in mods:
                todo.append(i)
    assert not bad, "\n".join(sorted(bad))


def test_runtime_samples_without_torch_and_dit_model():
    """Bundle.load + sample with both `torch` and `dit_model` unimportable (a meta-path blocker)."""
    code = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "dit_model"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Blocked())
from runtime_py import Bundle
from ditformat.guidance import Guide
bundle = Bundle.load(sys.argv[1], verbose=False)
x = bundle.sample(2, seed=0, steps=2, cfg=4.0, n=1)
assert x.shape == (1, 4, 32, 32) and x.std() > 0, x.shape
x = bundle.sample(2, seed=0, steps=2, guide=Guide(scale=3.0, negative_class=1), n=1)
assert x.shape == (1, 4, 32, 32) and x.std() > 0, x.shape
assert not any(m.split(".")[0] in ("torch", "dit_model") for m in sys.modules)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "bundles" / "default")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_runtime_samples_the_shipped_bundle_without_torch():
    """`from runtime_py import Bundle` loads and samples with numpy + wgpu: torch imports are blocked."""
    code = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, NoTorch())
from runtime_py import Bundle
bundle = Bundle.load(sys.argv[1], verbose=False)
x = bundle.sample(2, seed=0, steps=2, cfg=4.0)
assert x.shape == (1, 4, 32, 32) and x.std() > 0, x.shape
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
import dit_model                                           # the lazy package imports no torch either
assert "torch" not in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "bundles" / "default")], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_the_command_samples_a_bundle_without_torch(tmp_path):
    """`ditweb sample BUNDLE --runtime wgpu` (what a site's build runs) works where torch is not installed;
    a verb that needs torch says so in one line."""
    code = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, NoTorch())
from ditweb.cli import main
assert main(["sample", sys.argv[1], "--runtime", "wgpu", "--n", "2", "--steps", "2", "--out", sys.argv[2]]) == 0
assert main(["train", "Favicon-N/2"]) == 2
assert "torch" not in sys.modules
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "bundles" / "default"), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    assert (tmp_path / "out" / "grid.png").is_file()
    assert "`ditweb train` needs torch" in r.stderr and "Traceback" not in r.stderr


def test_public_api():
    import dit_model
    import runtime_py
    from dit_model import DiT, Diffusion                   # noqa: F401
    from runtime_py import Bundle
    assert callable(Bundle.load) and callable(Bundle.sample) and callable(Bundle.forward)
    assert {"DiT", "Diffusion"} <= set(dit_model.__all__) and "Bundle" in runtime_py.__all__


# ------------------------------------------------------------------ function length

MAX_FUNCTION_LINES = 80
SHORT_FUNCTION_DIRS = ["dit_model", "runtime_py", "web", "ditformat", "wgsl", "webserve", "export"]

JS_HEADER = re.compile(r"""
    \bfunction\b\s*\*?\s*(?P<fn>[\w$]*)\s*\(                                  # function f( / function (
  | ^\s*(?:static\s+)?(?:async\s+)?(?:get\s+|set\s+)?(?P<method>[\w$]+)\s*\(  # a class method
  | (?P<arrow>=>)\s*\{                                                        # an arrow function's body
""", re.X)
NOT_METHODS = {"if", "for", "while", "switch", "catch", "return", "function", "with"}


def _skip_quoted(text: str, i: int, quote: str) -> int:
    """Index of the quote that closes the one at text[i] (or of the "${" that interrupts a template literal)."""
    j = i + 1
    while j < len(text) and text[j] != quote and not (quote == "`" and text.startswith("${", j)):
        j += 2 if text[j] == "\\" else 1
    return j


def _skip_regex(text: str, i: int) -> int:
    j, in_class = i + 1, False
    while j < len(text) and (text[j] != "/" or in_class) and text[j] != "\n":
        if text[j] == "\\":
            j += 1
        elif text[j] in "[]":
            in_class = text[j] == "["
        j += 1
    return j


def _paren_end(text: str, i: int) -> int:
    """Index of the ')' that closes the '(' at text[i] (strings skipped)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_quoted(text, i, c)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(text)


def _js_block_end(text: str, i: int) -> int:
    """Index of the '}' that closes the '{' at text[i]: strings, template literals (with ${...}), comments and
    regular expression literals skipped."""
    depth, templates, prev = 0, [], "("     # templates: the depths at which a template's ${ opened
    while i < len(text):
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                break
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 1
        elif c in "\"'`" or (c == "}" and templates and templates[-1] == depth):
            if c == "}":
                templates.pop()
                depth -= 1
            i = _skip_quoted(text, i, "`" if c == "}" else c)
            if text.startswith("${", i):
                depth += 1
                templates.append(depth)
                i += 1
            prev = "x"
        elif c == "/" and (prev in "(,=:[!&|?{};+-*%<>~^" or re.search(r"\breturn\s*$", text[max(0, i - 12):i])):
            i = _skip_regex(text, i)
            prev = "x"
        else:
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return i
            if not c.isspace():
                prev = c
        i += 1
    raise ValueError("unbalanced braces")


def js_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of every function, method and braced arrow function of a JS file."""
    out = []
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    for lineno, start in enumerate(starts, 1):
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.lstrip().startswith(("//", "*", "/*")):
            continue
        for m in JS_HEADER.finditer(line):
            name = m.group("fn") or m.group("method") or "=>"
            if m.group("method") in NOT_METHODS:
                continue
            if m.group("arrow"):
                brace = start + m.end() - 1
            else:                           # the body follows the parameters' closing parenthesis
                brace = _paren_end(text, start + m.end() - 1) + 1
                while brace < len(text) and text[brace].isspace():
                    brace += 1
                if brace >= len(text) or text[brace] != "{":
                    continue                # a call, not a definition
            close = _js_block_end(text, brace)
            out.append((name, lineno, text.count("\n", start, close) + 1))
    return out


def py_functions(text: str) -> list[tuple[str, int, int]]:
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(dirs) -> list[str]:
    out = []
    for d in dirs:
        for f in sorted((ROOT / d).rglob("*")):
            if f.suffix not in (".py", ".js") or "node_modules" in f.parts:
                continue
            text = f.read_text()
            found = py_functions(text) if f.suffix == ".py" else js_functions(text)
            out += [f"{f.relative_to(ROOT)}:{line} {name}: {n} lines" for name, line, n in found if n > MAX_FUNCTION_LINES]
    return out


def test_the_length_checker_sees_js_functions():
    text = "export async function f(a, { b = 1 } = {}) {\n  const s = `x${ {a: 1}.a }`; // }\n  return /[}]/.test(s);\n}\n" \
           "class C {\n  m(x) {\n    if (x) { return 1; }\n    return [1].map((v) => {\n      return v;\n    });\n  }\n}\n"
    assert js_functions(text) == [("f", 1, 4), ("m", 6, 6), ("=>", 8, 3)]


def test_no_function_is_longer_than_80_lines():
    """One job per function (issue 21): no function, method or arrow body over 80 lines in these folders."""
    assert not long_functions(SHORT_FUNCTION_DIRS), "\n".join(long_functions(SHORT_FUNCTION_DIRS))

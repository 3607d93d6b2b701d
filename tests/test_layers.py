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

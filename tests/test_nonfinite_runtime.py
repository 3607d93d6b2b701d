"""NaN / Inf never reach an image silently on the wgpu runtime: a bundle whose (finite) weights overflow to Inf
fails `Bundle.sample` and `ditweb sample --runtime wgpu` with one line naming the runtime and the step, exit 2,
nothing written (WGSL's clamp of x0 would otherwise turn the NaN into -1: black, transparent favicons)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ditformat.errors import NonFiniteError
from ditweb.cli import main
from dit_model.model import DiT, DiTConfig
from export.bundle import export_bundle


@pytest.fixture(scope="module")
def overflowing_bundle(tmp_path_factory):
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        model.final_layer.linear.weight.fill_(3e38)            # finite, but x @ W overflows to Inf
    out = tmp_path_factory.mktemp("nb") / "bundle"
    export_bundle(model, out, "f32", ["a", "b", "c"], candidates=False)
    return out


def test_bundle_sample_names_the_runtime_and_the_step(overflowing_bundle):
    from runtime_py import Bundle
    bundle = Bundle.load(overflowing_bundle, plan="default")
    for steps in (1, 3):
        with pytest.raises(NonFiniteError, match=rf"sampling \(wgpu runtime, adapter .*\): the model's output became "
                                                 rf"non-finite by step 1 of {steps}"):
            bundle.sample(0, seed=0, steps=steps, cfg=2.0)


def test_ditweb_sample_wgpu_is_one_line_and_writes_nothing(overflowing_bundle, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(overflowing_bundle), "--runtime", "wgpu", "--plan", "default", "--n", "1",
                 "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if "error:" in l]
    assert len(lines) == 1 and "Traceback" not in err and "wgpu runtime" in lines[0] and "step 1 of 2" in lines[0]
    assert not out.exists()


def test_the_browser_refuses_a_non_finite_run_on_both_runtimes(overflowing_bundle):
    """The page's runtimes check the model's output after the first, every tenth and the last two steps (and x_t
    wherever it is read): the overflowing bundle fails with one NonFiniteError line naming the runtime and step 1,
    on WebGPU and on WebAssembly, instead of drawing a black, transparent favicon."""
    from webserve.browser import WEB_DIR, chromium, local_server
    with local_server({"/": WEB_DIR, "/b/": overflowing_bundle}) as url, chromium() as ctx:
        page = ctx.new_page()
        page.goto(url + "favicon.svg")
        got = page.evaluate("""async () => {
            const { loadBundle } = await import('/ditweb.js');
            const out = {};
            for (const runtime of ['webgpu', 'wasm']) {
              const b = await loadBundle('/b/', { runtime, useCache: false, plan: 'default', threads: 1 });
              try { await b.sample({ classId: 0, steps: 3, cfg: 2 }); out[runtime] = 'ran'; }
              catch (e) { out[runtime] = `${e.name}: ${e.message}`; }
              b.dispose();
            }
            return out;
        }""")
        page.close()
    for runtime in ("webgpu", "wasm"):
        msg = got[runtime]
        assert msg.startswith(f"NonFiniteError: sampling ({runtime} runtime): the model's output became non-finite by "
                              "step 1 of 3") and "\n" not in msg, msg

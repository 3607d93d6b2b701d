"""A named model (labels at four levels: emoji, subcategory, category, style) through every runtime: exported
to f32 and f16 bundles with vocabulary.json, the same prompt + style + seed sampled by torch (float64 network),
runtime_py (wgpu-py on lavapipe), and Chromium on WebGPU (SwiftShader) and on WebAssembly, >= 40 dB PSNR between
them (RGBA in [0, 1], peak 1), as tests/test_browser.py holds one-level bundles to. Also the guides' named
labels (negative label, composition), forward parity of the four-level label_embed, and `ditweb validate`.

The model is Favicon-N/2 with every weight drawn from N(0, 0.2^2) (tests/test_browser.py random_model), and the
tiny five-emoji vocabulary of tests/test_named.py: 5 emoji, 3 subcategories, 3 categories, 2 styles."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from webserve.browser import WEB_DIR, chromium, local_server, psnr, to_unit, wait_state

PROMPT, STYLE, SEED, STEPS = "hippo", "noto", 3, 6
PSNR_MIN = 40.0


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    import torch
    from test_named import tiny_set
    from dit_model.model import DiT, preset_config
    from dit_model.named import named_data
    from export.bundle import export_bundle
    vocab = named_data(tiny_set()).vocab
    cfg = preset_config("Favicon-N/2", num_classes=sum(vocab.sizes), label_levels=vocab.sizes, label_nested=vocab.nested)
    torch.manual_seed(0)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    root = tmp_path_factory.mktemp("named")
    return {"model": model, "vocab": vocab,
            **{d: export_bundle(model, root / d, d, vocab=vocab) for d in ("f32", "f16")}}


def torch_sample(model, vocab, label, guide) -> np.ndarray:
    from dit_model.sample import sample_images
    m64 = copy.deepcopy(model).double()
    cfg = model.cfg
    x = sample_images(lambda x, t, y: m64(x.double(), t, y).float(), in_channels=cfg.in_channels,
                      input_size=cfg.input_size, num_classes=cfg.num_classes, class_ids=[label], guide=guide,
                      steps=STEPS, seed=SEED, prediction=cfg.prediction, null=vocab.sizes)
    return x.numpy().reshape(-1)


@pytest.fixture(scope="module")
def py_bundles(named):
    from runtime_py.bundle import Bundle
    return {d: Bundle.load(named[d], verbose=False) for d in ("f32", "f16")}


def test_forward_matches_torch_with_four_label_levels(named, py_bundles):
    import torch
    model, vocab = named["model"], named["vocab"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 500, 999])
    y = torch.tensor([vocab.resolve("hippo", "noto").ids, vocab.resolve("fruit").ids, vocab.resolve("noto").ids,
                      vocab.null.ids])
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double(), t, y).numpy()
    got = py_bundles["f32"].forward(x.numpy(), t.numpy(), y.numpy())
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_runtime_py_takes_prompts_labels_and_named_guides(named, py_bundles):
    from ditformat.guidance import Guide
    b, vocab = py_bundles["f32"], named["vocab"]
    label = b.resolve(PROMPT, STYLE)
    assert b.vocab.sizes == (5, 3, 3, 2) and label.ids == (0, 0, 0, 1) and b.class_names == vocab.flat_names()
    a = b.sample(label, seed=SEED, steps=2)
    np.testing.assert_array_equal(a, b.sample(label.ids, seed=SEED, steps=2))
    np.testing.assert_array_equal(b.sample("hippo", seed=SEED, steps=2), b.sample(b.resolve("hippo"), seed=SEED, steps=2))
    guide = Guide(scale=3.0, negative_class=vocab.resolve("category:Food & Drink").ids)
    ref = torch_sample(named["model"], vocab, label.ids, guide)
    got = b.sample(label, seed=SEED, steps=STEPS, guide=Guide(scale=3.0, negative_class="category:Food & Drink"))
    assert psnr(to_unit(got.reshape(-1)), to_unit(ref)) >= PSNR_MIN
    comp = Guide(scale=1.0, compose=((vocab.resolve("apple").ids, 1.5), (vocab.resolve("noto").ids, -0.5)))
    ref = torch_sample(named["model"], vocab, vocab.null.ids, comp)
    got = b.sample(vocab.null.ids, seed=SEED, steps=STEPS, guide=Guide(scale=1.0, compose=(("apple", 1.5), ("noto", -0.5))))
    assert psnr(to_unit(got.reshape(-1)), to_unit(ref)) >= PSNR_MIN
    from ditformat.errors import UsageError
    for bad, msg in (("hipo", "unknown prompt 'hipo'; closest labels: 'hippopotamus'"), ((0, 0, 0), "one id per level"),
                     ((9, 0, 0, 0), "one id per level"), (3, "one id per level")):
        with pytest.raises(UsageError, match=msg.replace("(", r"\(")):
            b.sample(bad, steps=1)
    with pytest.raises(UsageError, match="unknown style 'comic'"):
        b.resolve(PROMPT, "comic")


def test_validate_passes_on_the_named_bundle(named, capsys):
    """`ditweb validate` in this process, as the other validate tests (.ci/run runs the command on the shipped
    bundles)."""
    from ditweb.cli import main
    for d in ("f32", "f16"):
        capsys.readouterr()
        code = main(["validate", str(named[d])])
        out, err = capsys.readouterr()
        assert code == 0 and "checks passed" in out, out[-2000:] + err[-2000:]


@pytest.fixture(scope="module")
def site(named):
    with local_server({"/": WEB_DIR, "/f32/": named["f32"], "/f16/": named["f16"]}) as url, chromium() as ctx:
        yield {"url": url, "ctx": ctx}


def open_page(site, query):
    page = site["ctx"].new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site["url"] + query)
    state = wait_state(page, ("ready", "no-webgpu", "no-adapter", "error", "bundle-error"), 90)
    assert state == "ready", f"page state {state}: {page.text_content('#message')} {errors}"
    return page


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("runtime", ["webgpu", "wasm"])
def test_same_image_in_torch_runtime_py_and_the_browser(named, py_bundles, site, dtype, runtime):
    from ditformat.guidance import Guide
    vocab = named["vocab"]
    page = open_page(site, f"?bundle={dtype}/&runtime={runtime}&prompt=hip&style=noto")
    js = page.evaluate("""async ([p, s, seed, steps]) => {
        const b = window.ditwebBundle;
        const r = await b.sample({ prompt: p, style: s, seed, steps, cfg: 4 });
        return { x: Array.from(r.x), runtime: r.runtime, ids: b.resolve(p, s).ids, named: b.label("category:Animals & Nature"),
                 describe: b.vocab.describe(b.resolve(p, s)), classId: b.label(5 + 3), suggest: b.vocab.suggest("do"),
                 prompt: document.querySelector("#prompt").value, hidden: document.querySelector("#class-label").hidden,
                 options: Array.from(document.querySelectorAll("#suggestions option"), (o) => o.value) };
    }""", [PROMPT, STYLE, SEED, STEPS])
    assert js["runtime"] == runtime and js["ids"] == [0, 0, 0, 1] and js["describe"] == vocab.describe(vocab.resolve(PROMPT, STYLE))
    assert js["named"] == list(vocab.resolve("category:Animals & Nature").ids) and js["classId"] == [5, 3, 0, 2]   # class id 8: category 0
    assert js["suggest"] == vocab.suggest("do") and js["prompt"] == "hip" and js["hidden"] and "hippopotamus" in js["options"]
    got = np.asarray(js["x"], np.float32)
    label = vocab.resolve(PROMPT, STYLE)
    py = py_bundles[dtype].sample(label, seed=SEED, steps=STEPS, cfg=4.0).reshape(-1)
    ref = torch_sample(named["model"], vocab, label.ids, Guide(scale=4.0))
    vs_py, vs_torch, py_torch = psnr(to_unit(got), to_unit(py)), psnr(to_unit(got), to_unit(ref)), psnr(to_unit(py), to_unit(ref))
    print(f"\n[named {dtype}, {runtime}] PSNR browser vs runtime_py {vs_py:.1f} dB, browser vs torch {vs_torch:.1f} dB, "
          f"runtime_py vs torch {py_torch:.1f} dB")
    assert vs_py >= PSNR_MIN and py_torch >= (PSNR_MIN if dtype == "f32" else 25.0)
    if dtype == "f32":
        assert vs_torch >= PSNR_MIN
    bad = page.evaluate("""async () => {
        const out = [];
        for (const o of [{ prompt: "hipo" }, { prompt: "hippo", style: "comic" }, {}, { classIds: [[9, 0, 0, 0]] }]) {
            try { await window.ditwebBundle.sample({ ...o, steps: 1 }); out.push("ok"); } catch (e) { out.push(e.message); }
        }
        return out;
    }""")
    from ditformat.labels import VocabularyError
    with pytest.raises(VocabularyError) as e:
        vocab.resolve("hipo")
    assert bad[0] == str(e.value) and "unknown style 'comic'" in bad[1] and "needs a prompt" in bad[2] and "does not fit" in bad[3]
    page.close()
    if dtype != "f32":                 # the form below is the page's, whatever the weights: once per runtime (f32)
        return
    # the page's negative label for a named bundle: a prompt box (the vocabulary has thousands of names), ?negative= presets it
    page = open_page(site, f"?bundle={dtype}/&runtime={runtime}&prompt=hippo&negative=dog&steps=2")
    page.click("#go")
    state = wait_state(page, ("done", "error"), 90)
    form = page.evaluate("""() => ({ box: document.querySelector("#negative-prompt").value,
        boxHidden: document.querySelector("#negative-prompt-label").hidden, selectHidden: document.querySelector("#negative-label").hidden,
        options: document.querySelectorAll("#negative option").length })""")
    assert state == "done", page.text_content("#message")
    assert form == {"box": "dog", "boxHidden": False, "selectHidden": True, "options": 1}, form
    page.close()

"""The format module (ditformat): numpy only, and the same numbers as the torch side."""
import struct

import numpy as np
import pytest

from ditformat.schedule import SCHEDULE, portable_log, sampler_tables
from ditformat.step import FLAG_V, STEP_BYTES, pack_step, step_fields


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 50, 250, 1000])
def test_tables_are_bit_identical_to_diffusion(steps):
    from dit_model.diffusion import Diffusion
    d, tab = Diffusion(steps), sampler_tables(steps)
    assert tab["t"] == [int(v) for v in d.timestep_map]
    for key, ref in [("sqrt_abar", d.sqrt_abar), ("sqrt_1m_abar", d.sqrt_1m_abar), ("coef1", d.coef1),
                     ("coef2", d.coef2), ("abar", d.abar), ("abar_prev", d.abar_prev)]:
        assert np.array_equal(np.array(tab[key]), ref), key
    # the logarithms: ditformat's portable_log vs the torch side's np.log, a few ulp apart in float64 and
    # equal in the f32 the step uniform holds
    for key, ref in [("log_beta", d.log_betas), ("log_post_var", d.posterior_log_variance_clipped)]:
        a = np.array(tab[key])
        assert np.all(np.abs(a - ref) <= 4 * np.spacing(np.abs(ref))), key
        assert np.array_equal(a.astype(np.float32), ref.astype(np.float32)), key


def test_tables_f32_equal_to_diffusion_at_every_step_count():
    from dit_model.diffusion import Diffusion
    for steps in range(1, 1001):
        d, tab = Diffusion(steps), sampler_tables(steps)
        for key, ref in [("log_beta", d.log_betas), ("log_post_var", d.posterior_log_variance_clipped)]:
            assert np.array_equal(np.array(tab[key], np.float32), ref.astype(np.float32)), (steps, key)


def test_portable_log_is_within_two_ulp():
    x = np.exp(np.random.default_rng(0).uniform(-46, 5, 200_000))
    ref = np.log(x)
    assert np.all(np.abs(portable_log(x) - ref) <= 2 * np.spacing(np.abs(ref)))
    assert portable_log(np.array([1.0]))[0] == 0.0


TABLE_KEYS = ("t", "sqrt_abar", "sqrt_1m_abar", "coef1", "coef2", "log_beta", "log_post_var", "abar", "abar_prev")


def test_page_tables_are_bit_identical_at_every_step_count(tmp_path):
    """web/schedule.js computes the exporter's float64 tables bit for bit, for every step count 1..1000
    (so a manifest carries the schedule, not tables)."""
    import json
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    py = np.concatenate([np.asarray(sampler_tables(s)[k], np.float64) for s in range(1, 1001) for k in TABLE_KEYS])
    py.tofile(tmp_path / "py.bin")
    script = tmp_path / "tables.mjs"
    script.write_text(f"""
import {{ samplerTables }} from "{root / 'web' / 'schedule.js'}";
import fs from "fs";
const keys = {json.dumps(TABLE_KEYS)};
const py = new Float64Array(fs.readFileSync("{tmp_path / 'py.bin'}").buffer.slice(0));
let at = 0, bad = 0, first = "";
for (let s = 1; s <= 1000; s++) {{
  const tab = samplerTables({{ sampler: {json.dumps(SCHEDULE)} }}, s);
  for (const k of keys) for (const v of tab[k]) {{
    if (!Object.is(v, py[at])) {{ bad++; if (!first) first = `${{k}} at ${{s}} steps: ${{v}} vs ${{py[at]}}`; }}
    at++;
  }}
}}
console.log(JSON.stringify({{ bad, at, first }}));
""")
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["at"] == len(py) and out["bad"] == 0, out


def test_step_uniform_layout():
    tab = sampler_tables(10)
    f = step_fields(tab, 3, seed=7, K=2, J=3, N=4, var_branch=1, coef=(1.0, -3.0, 4.0), prediction="v")
    raw = pack_step(f)
    assert len(raw) == STEP_BYTES
    u = struct.unpack("<12I", raw[:48])
    assert u[:9] == (tab["t"][3], 3, 7, 0, 2, 3, 4, 1, 1 | FLAG_V)
    assert struct.unpack("<f", raw[48:52])[0] == np.float32(tab["sqrt_abar"][3])
    assert struct.unpack("<3f", raw[96:108]) == (1.0, -3.0, 4.0)


def test_generated_files_are_fresh():
    """web/bundle-schema.js, web/bundle-layout.js and wasm/bundle-layout.h equal what `python -m ditformat` writes."""
    from pathlib import Path
    from ditformat.generate import generated_files
    root = Path(__file__).resolve().parent.parent
    for rel, text in generated_files().items():
        assert (root / rel).read_text() == text, f"{rel} is stale: run python -m ditformat"


def test_step_record_and_op_params_are_declared_once():
    """The layout declaration drives every copy: the WGSL struct, the op table's params, no hand-written record
    or positional param access in kernels.c, schedule.js or wasm-runtime.js."""
    import re
    from pathlib import Path
    from ditformat.layout import OP_PARAMS, STEP_FIELDS, wgsl_step_struct
    from wgsl.ops import ALL_OPS, STEP_STRUCT
    root = Path(__file__).resolve().parent.parent
    assert STEP_STRUCT == wgsl_step_struct()
    assert set(ALL_OPS) == set(OP_PARAMS) and all(op.params == OP_PARAMS[n] for n, op in ALL_OPS.items())
    assert sum(c for _, _, c in STEP_FIELDS) * 4 == STEP_BYTES
    c = (root / "wasm" / "kernels.c").read_text()
    assert '#include "bundle-layout.h"' in c
    assert not re.search(r"\bP\[\d\]|typedef struct \{\s*u32 t, i|1664525|0x5F3759DF|0\.6931472f", c)
    for js in ("schedule.js", "wasm-runtime.js"):
        text = (root / "web" / js).read_text()
        assert "bundle-layout.js" in text and not re.search(r"\b[uf]\[\d+|f\[24|params\[\d\]", text), js


def test_versions_have_one_source():
    """The exporter version in the schema is the package version; the page reads the same schema."""
    import re
    from pathlib import Path
    from ditformat import EXPORTER_VERSION
    root = Path(__file__).resolve().parent.parent
    assert re.search(rf'^version = "{re.escape(EXPORTER_VERSION)}"$', (root / "pyproject.toml").read_text(), re.M)


def test_page_packs_the_same_step_uniform(tmp_path):
    """web/schedule.js stepUniform == ditformat.step.pack_step byte for byte (eps and v, DDIM with eta, DDPM)."""
    import json
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    cases = [dict(prediction=p, sampler=s, eta=e, i=i) for p in ("eps", "v") for s, e in (("ddim", 0.0), ("ddim", 0.5),
                                                                                             ("ddpm", 0.0)) for i in (0, 7)]
    tab = sampler_tables(20)
    script = tmp_path / "pack.mjs"
    script.write_text(f"""
import {{ samplerTables, stepUniform }} from "{root / 'web' / 'schedule.js'}";
const cases = {json.dumps(cases)};
const manifest = {{ sampler: {json.dumps(SCHEDULE)} }};
const tables = samplerTables(manifest, 20);
const guide = {{ schedule: "constant", scale: 3.0, batchTau: 0.25 }};
const plan = {{ base: [1.0, 0.0], slope: [-1.0, 1.0], varBranch: 1 }};
const out = cases.map((c) => Buffer.from(stepUniform({{ tables, i: c.i, nDone: 19 - c.i, steps: 20, seed: 12345, K: 2, J: 2,
  N: 3, plan, guide, sampler: c.sampler, eta: c.eta, clipX0: true, prediction: c.prediction }})).toString("hex"));
console.log(JSON.stringify(out));
""")
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for c, js in zip(cases, json.loads(r.stdout)):
        f = step_fields(tab, c["i"], seed=12345, K=2, J=2, N=3, var_branch=1, coef=(1.0 - 3.0, 3.0), sampler=c["sampler"],
                        eta=c["eta"], clip_x0=True, tau=0.25, prediction=c["prediction"])
        assert pack_step(f).hex() == js, c

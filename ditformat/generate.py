"""The files generated from the format's declarations (`python -m ditformat` writes them; tests/test_format.py
fails when a committed one differs):
  web/bundle-schema.js    ditformat/bundle-schema.json as an ES module (the page's verifier, web/bundle.js)
  web/bundle-layout.js    the step record, its flags, each op's params, packStep (ditformat/layout.py)
  wasm/bundle-layout.h    the same for wasm/kernels.c, with the noise constants of ditformat/noise.py"""
from __future__ import annotations

import json
from pathlib import Path

from . import noise
from .layout import OP_PARAMS, STEP_BYTES, STEP_FIELDS, STEP_FLAGS, STEP_WORDS
from .jsonfmt import compact_json
from .schema import js_module

ROOT = Path(__file__).resolve().parents[1]
_HEADER = "Generated from ditformat/{src} by `python -m ditformat`; do not edit."


def js_layout() -> str:
    fields = {n: {"word": w, "type": ty, **({"count": c} if c > 1 else {})}
              for n, (w, ty, c) in STEP_WORDS.items() if not n.startswith("_")}
    return f"""// {_HEADER.format(src="layout.py")}
// The 128-byte step record (docs/bundle-format.md, "The step uniform") and each op's params, by name.

export const STEP_BYTES = {STEP_BYTES};
/** @type {{Record<string, {{word: number, type: string, count?: number}}>}} */
export const STEP_FIELDS = {compact_json(fields)};
/** @type {{Record<string, number>}} */
export const STEP_FLAGS = {json.dumps(STEP_FLAGS)};
/** @type {{Record<string, string[]>}} */
export const OP_PARAMS = {compact_json({k: list(v) for k, v in OP_PARAMS.items()})};

/**
 * The step record holding `fields` (name -> number, or an array for `coef`); fields not given are 0.
 * Floats are rounded to f32 here, as the format says.
 * @param {{Record<string, number | number[]>}} fields
 * @returns {{ArrayBuffer}}
 */
export function packStep(fields) {{
  const buf = new ArrayBuffer(STEP_BYTES);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  for (const [name, value] of Object.entries(fields)) {{
    const spec = STEP_FIELDS[name];
    if (!spec) throw new RangeError(`the step record has no field ${{name}}`);
    const view = spec.type === "u32" ? u : f;
    const values = Array.isArray(value) ? value : [value];
    if (values.length > (spec.count || 1)) throw new RangeError(`step field ${{name}} holds ${{spec.count || 1}} values, got ${{values.length}}`);
    values.forEach((v, j) => {{ view[spec.word + j] = v; }});
  }}
  return buf;
}}
"""


def _c_float(text: str) -> str:
    return text + ("f" if any(ch in text for ch in ".eE") else ".0f")


def c_layout() -> str:
    ctype = {"u32": "u32", "f32": "f32"}
    lines = [f"// {_HEADER.format(src='layout.py and ditformat/noise.py')}",
             "// Needs u32 and f32 (uint32_t, float) declared before it.",
             "#ifndef DITWEB_BUNDLE_LAYOUT_H", "#define DITWEB_BUNDLE_LAYOUT_H", "",
             f"// the step record ({STEP_BYTES} bytes, docs/bundle-format.md)", "typedef struct {"]
    for name, ty, count in STEP_FIELDS:
        lines.append(f"  {ctype[ty]} {name}{f'[{count}]' if count > 1 else ''};")
    lines += ["} Step;", ""]
    lines += [f"#define STEP_FLAG_{k.upper()} {v}u" for k, v in STEP_FLAGS.items()]
    lines += ["", "// each op's params: a struct, and PARAMS_<op>(ptr) declaring one const u32 local per param"]
    first = {}                           # params -> the first op that takes them: later ones are aliases
    for op, params in OP_PARAMS.items():
        same = first.setdefault(tuple(params), op)
        if same != op:
            lines.append(f"typedef {same}_params {op}_params;")
            lines.append(f"#define PARAMS_{op}(ptr) PARAMS_{same}(ptr)")
            continue
        lines.append(f"typedef struct {{ u32 {', '.join(params)}; }} {op}_params;")
        lines.append(f"#define PARAMS_{op}(ptr) const u32 "
                     + ", ".join(f"{p} = (ptr)[{i}]" for i, p in enumerate(params)))
    lines += ["", "// the counter-based noise (ditformat/noise.py)",
              f"#define NOISE_PCG_MUL {noise.PCG_MUL}u", f"#define NOISE_PCG_INC {noise.PCG_INC}u",
              f"#define NOISE_RSQRT_MAGIC 0x{noise.RSQRT_MAGIC:X}u",
              f"#define NOISE_LN2 {_c_float(noise.LN2)}", f"#define NOISE_SQRT2 {_c_float(noise.SQRT2)}",
              f"#define NOISE_STREAM_INIT {noise.STREAM_INIT}u", f"#define NOISE_STREAM_STEP {noise.STREAM_STEP}u",
              f"#define NOISE_STREAM_PERTURB {noise.STREAM_PERTURB}u"]
    for name in ("LOG1P", "COS_Q", "SIN_Q"):
        values = getattr(noise, name)
        lines.append(f"#define NOISE_{name}_TERMS {len(values)}")
        lines.append(f"static const f32 NOISE_{name}[] = {{{', '.join(_c_float(v) for v in values)}}};")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def generated_files() -> dict[str, str]:
    """Repository path -> the text it must hold."""
    return {"web/bundle-schema.js": js_module(), "web/bundle-layout.js": js_layout(), "wasm/bundle-layout.h": c_layout()}


def write_all(root: Path = ROOT) -> list[Path]:
    out = []
    for rel, text in generated_files().items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        out.append(path)
    return out

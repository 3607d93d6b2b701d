"""`python -m ditformat`: write web/bundle-schema.js from ditformat/bundle-schema.json (the page's copy)."""
from pathlib import Path

from .schema import js_module

out = Path(__file__).resolve().parents[1] / "web" / "bundle-schema.js"
out.write_text(js_module())
print(f"wrote {out}")

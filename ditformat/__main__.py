"""`python -m ditformat`: write the files generated from the format's declarations (ditformat/generate.py):
web/bundle-schema.js, web/bundle-layout.js and wasm/bundle-layout.h."""
from .generate import write_all

for path in write_all():
    print(f"wrote {path}")

#!/usr/bin/env bash
# How the shipped default model was made from a training run (reproducible; not part of set-up):
#   scripts/ship_default.sh runs/favicon-t4/ckpt.pt
# writes models/default.safetensors (EMA weights + config + class names), bundles/default/ (f16
# bundle, what `ditweb serve` and the page use), validates the bundle, samples one grid per class
# into docs/samples/ and evaluates it into bench/results/eval.md and the model card (models/default.card.json, the
# bundle's README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: scripts/ship_default.sh RUN/ckpt.pt}
PY=.venv/bin/python
DITWEB=.venv/bin/ditweb
mkdir -p docs/samples
scripts/ship_bundle.sh default "$CKPT"
$PY - <<'PYEOF'
# one committed grid per class: 16 samples, 50 DDIM steps, CFG 4, seed 0
import re
from dit_model.checkpoint import load_model
from ditformat.guidance import Guide
from dit_model.images import grid, to_uint8
from dit_model.sample import sample_images
model, meta = load_model("models/default.safetensors")
cfg = meta["config"]
for c, name in enumerate(meta["class_names"]):
    x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                      class_ids=[c] * 16, guide=Guide(scale=4.0), steps=50, sampler="ddim", seed=0,
                      prediction=cfg.prediction)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    grid(to_uint8(x), cols=8, scale=2).save(f"docs/samples/{slug}.png")
    print(f"docs/samples/{slug}.png  {name}")
PYEOF
$DITWEB eval models/default.safetensors --steps 50 --scales 1,2,2.5,3,4,6 --card   # the table into models/default.card.json
$DITWEB export models/default.safetensors bundles/default --dtype f16                # ... and into the bundle's README.md card

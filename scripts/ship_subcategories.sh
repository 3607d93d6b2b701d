#!/usr/bin/env bash
# How the second shipped model, one class per Twemoji subcategory (98), was made from a training run that was
# warm-started from the default model (not part of set-up):
#   ditweb train Favicon-T/4 --subcategories --init models/default.safetensors --prediction v \
#       --loss-weighting min-snr --t-sampling logit-normal --ema 0.999 --lr 3e-4 --batch-size 64 --run-dir runs/sub98
#   scripts/ship_subcategories.sh runs/sub98/ckpt.pt
# writes models/subcategories.safetensors (EMA weights + config + the 98 class names), bundles/subcategories/ (f16
# bundle: the page's model picker offers it under `ditweb serve`), validates the bundle and samples one grid of
# twelve subcategories into docs/samples/subcategories.png (rows in the order of ROWS below).
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: scripts/ship_subcategories.sh RUN/ckpt.pt}
PY=.venv/bin/python
mkdir -p docs/samples
scripts/ship_bundle.sh subcategories "$CKPT"
$PY - <<'PYEOF'
# one row of 8 samples per subcategory below: 50 DDIM steps, CFG 4, seed 0
import numpy as np
from dit_model.checkpoint import load_model
from ditformat.guidance import Guide
from dit_model.images import grid, to_uint8
from dit_model.sample import sample_images
ROWS = ["face-smiling", "heart", "cat-face", "animal-mammal", "animal-bird", "plant-flower", "food-fruit",
        "transport-ground", "sky & weather", "time", "keycap", "country-flag"]
model, meta = load_model("models/subcategories.safetensors")
cfg = meta["config"]
ids = [meta["class_names"].index(r) for r in ROWS]
x = sample_images(model, in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                  class_ids=[c for c in ids for _ in range(8)], guide=Guide(scale=4.0), steps=50, sampler="ddim",
                  seed=0, prediction=cfg.prediction)
grid(to_uint8(x), cols=8, scale=2).save("docs/samples/subcategories.png")
print("docs/samples/subcategories.png, rows:", ", ".join(ROWS))
PYEOF

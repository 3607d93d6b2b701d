#!/usr/bin/env bash
# How the shipped named model (any emoji by name, three styles; the page's and `make run`'s default) is made from
# its training run (reproducible; not part of set-up):
#   ditweb train Favicon-T/4 --styles twemoji,noto,fluent --repeat "Animals & Nature:10" \
#       --init models/subcategories.safetensors --prediction v --loss-weighting min-snr --t-sampling logit-normal \
#       --ema 0.999 --lr 3e-4 --batch-size 64 --run-dir runs/named
#   scripts/ship_named.sh runs/named/ckpt.pt
# writes models/named.safetensors, bundles/named/ (f16), bundles/named-int8/ and bundles/named-int4/ and validates them (scripts/ship_bundle.sh); records the
# step and the images seen in the model card models/named.card.json (its other fields are written by hand);
# evaluates the weights at the card's guidance scale with the identity judges into bench/results/eval-named.md and
# the card; re-exports, so that the bundle's README.md card carries the table; draws the README grid
# docs/samples/named.png.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: scripts/ship_named.sh RUN/ckpt.pt}
PY=.venv/bin/python
DITWEB=.venv/bin/ditweb
scripts/ship_bundle.sh named "$CKPT"
SCALE=$($PY - <<'PYEOF'
import json
from dit_model.checkpoint import load_model
_, meta = load_model("models/named.safetensors")
path = "models/named.card.json"
card = json.load(open(path, encoding="utf-8"))
card["steps"] = meta["step"]
card["images_seen"] = meta["step"] * card["recipe"]["batch_size"]
card["eval"] = []                                     # this step's table replaces the last one
with open(path, "w", encoding="utf-8") as f:
    json.dump(card, f, indent=1, ensure_ascii=False)
print(card["guidance_scale"])
PYEOF
)
$DITWEB eval models/named.safetensors --scales "$SCALE" --seeds 2 --card --json bench/results/eval-named.json
VAE=$($PY -c "import sys; from dit_model.latent import read_reference; r = read_reference(sys.argv[1]); print(r['path'] if r else '')" models/named.safetensors)
$DITWEB export models/named.safetensors bundles/named --dtype f16 ${VAE:+--vae "$VAE"}
# the int8 bundle, and the int4 one (the block weights stored in 4 bits, unpacked to the same int8 kernels at load): the
# page's, `ditweb serve`'s and `make run`'s default (bench/int8_eval.py --ckpt models/named.safetensors --dtypes int8,int4
# --reference-json bench/results/eval-named.json measures what each costs)
$DITWEB export models/named.safetensors bundles/named-int8 --dtype int8 ${VAE:+--vae "$VAE"}
$DITWEB validate bundles/named-int8 --ckpt models/named.safetensors --summary 2>/dev/null > bench/results/validate-named-int8.md
$DITWEB export models/named.safetensors bundles/named-int4 --dtype int4 ${VAE:+--vae "$VAE"}
$DITWEB validate bundles/named-int4 --ckpt models/named.safetensors --summary 2>/dev/null > bench/results/validate-named-int4.md
$PY scripts/named_grid.py models/named.safetensors --cfg "$SCALE"

#!/usr/bin/env bash
# The part every shipped model shares (scripts/ship_default.sh, scripts/ship_subcategories.sh):
#   scripts/ship_bundle.sh NAME RUN/ckpt.pt
# writes models/NAME.safetensors (the run's EMA weights + config + class names + step + model card record), exports
# its f16 bundle bundles/NAME/ (its README.md card from that record and models/NAME.card.json, where there is one:
# what the run could not record, e.g. its eval tables from `ditweb eval --card`) and validates it against those
# weights into bench/results/validate-NAME-f16.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: scripts/ship_bundle.sh NAME RUN/ckpt.pt}
CKPT=${2:?usage: scripts/ship_bundle.sh NAME RUN/ckpt.pt}
PY=.venv/bin/python
DITWEB=.venv/bin/ditweb
mkdir -p models
$PY - "$CKPT" "models/$NAME.safetensors" <<'PYEOF'
import sys
from dit_model.checkpoint import load_model, save_weights
model, meta = load_model(sys.argv[1])              # the EMA weights
save_weights(model, sys.argv[2], meta["class_names"], meta["step"], meta.get("vocab"),   # a named model keeps its vocabulary
             card=meta.get("card"))                  # the run's model card record (dit_model/card.py)
print(f"{sys.argv[2]}: {meta['config']}, step {meta['step']}, {len(meta['class_names'])} classes")
PYEOF
$DITWEB export "models/$NAME.safetensors" "bundles/$NAME" --dtype f16
du -sh "bundles/$NAME"
$DITWEB validate "bundles/$NAME" --ckpt "models/$NAME.safetensors" --summary | tee "bench/results/validate-$NAME-f16.md"

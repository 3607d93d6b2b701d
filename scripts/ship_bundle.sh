#!/usr/bin/env bash
# The part every shipped model shares (scripts/ship_default.sh, scripts/ship_subcategories.sh):
#   scripts/ship_bundle.sh NAME RUN/ckpt.pt
# writes models/NAME.safetensors (the run's EMA weights + config + class names + step + model card record), exports
# its f16 bundle bundles/NAME/ (its README.md card from that record and models/NAME.card.json, where there is one:
# what the run could not record, e.g. its eval tables from `ditweb eval --card`) and validates it against those
# weights into bench/results/validate-NAME-f16.md. A latent model keeps its autoencoder reference, and its bundle the
# autoencoder's decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: scripts/ship_bundle.sh NAME RUN/ckpt.pt}
CKPT=${2:?usage: scripts/ship_bundle.sh NAME RUN/ckpt.pt}
PY=.venv/bin/python
DITWEB=.venv/bin/ditweb
mkdir -p models
$PY - "$CKPT" "models/$NAME.safetensors" <<'PYEOF'
import json
import sys
from dit_model.checkpoint import load_model, save_weights
from dit_model.latent import read_reference
model, meta = load_model(sys.argv[1])              # the EMA weights
ref = read_reference(sys.argv[1])                    # a latent model: the autoencoder it belongs to, kept in the file
save_weights(model, sys.argv[2], meta["class_names"], meta["step"], meta.get("vocab"),   # a named model keeps its vocabulary
             extra={"autoencoder": json.dumps(ref)} if ref else None,
             card=meta.get("card"))                  # the run's model card record (dit_model/card.py)
print(f"{sys.argv[2]}: {meta['config']}, step {meta['step']}, {len(meta['class_names'])} classes")
PYEOF
# a latent model's bundles carry its autoencoder's decoder (export --vae); VAE is empty for a pixel model
VAE=$($PY -c "import sys; from dit_model.latent import read_reference; r = read_reference(sys.argv[1]); print(r['path'] if r else '')" "models/$NAME.safetensors")
$DITWEB export "models/$NAME.safetensors" "bundles/$NAME" --dtype f16 ${VAE:+--vae "$VAE"}
du -sh "bundles/$NAME"
$DITWEB validate "bundles/$NAME" --ckpt "models/$NAME.safetensors" --summary | tee "bench/results/validate-$NAME-f16.md"

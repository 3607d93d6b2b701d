#!/usr/bin/env bash
# Train a favicon DiT on one NVIDIA GPU from a data pack in about five minutes, and leave the
# result as files of at most 16 MiB each:
#
#   scripts/gpu_train.sh PACK OUT_DIR [more `ditweb train` options, which win over the defaults]
#
#   OUT_DIR/ema.safetensors     EMA weights (float32 if under 16 MiB, else bfloat16): `ditweb sample`,
#                               `ditweb export`, `ditweb eval` and `ditweb train --init` load it
#   OUT_DIR/model.safetensors   the raw weights, the same way
#   OUT_DIR/log.csv, train.log  the loss curve and the run's own report
#   OUT_DIR/grid.png            EMA samples, one row per class
#
# PACK comes from `ditweb data --pack PACK` (see docs/training.md). Needs python3 with torch,
# numpy, pillow, safetensors and tqdm, nothing else: it runs `python3 -m dit_model.train`, which is
# `ditweb train` without the web and wgpu modules. The environment sets the recipe; the defaults are
# the GPU recipe of docs/training.md:
#   PRESET=Favicon-S/2 BATCH=512 LR=5e-4 WARMUP=300 EMA=0.999 TIME_LIMIT=4m DEVICE=cuda PRECISION=bf16
#   COMPILE=1 SIZE=32 PYTHON=python3 RUN_DIR=<a fresh temporary folder>
# CPU dry run (what tests/test_gpu_script.py does): DEVICE=cpu PRESET=Favicon-N/2 ... --max-steps 3
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 PACK OUT_DIR [ditweb train options]" >&2
    exit 2
fi
PACK=$1
OUT_DIR=$2
shift 2
PY=${PYTHON:-python3}
PRESET=${PRESET:-Favicon-S/2}
DEVICE=${DEVICE:-cuda}
RUN_DIR=${RUN_DIR:-$(mktemp -d)/run}
cd "$(dirname "$0")/.."

if [ ! -f "$PACK" ]; then
    echo "$0: no data pack at $PACK; make one with: ditweb data --pack $PACK (see docs/training.md)" >&2
    exit 2
fi
# Fail in one line before anything starts, not with a traceback half-way.
"$PY" - "$DEVICE" <<'PY' || exit 2
import importlib, sys
missing = [m for m in ("torch", "numpy", "PIL", "safetensors", "tqdm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_train.sh: python lacks {', '.join(missing)}; carry them as wheels (docs/training.md)")
import torch
if sys.argv[1].startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_train.sh: DEVICE=cuda but torch sees no GPU (torch " + torch.__version__ + "); DEVICE=cpu for a dry run")
PY

mkdir -p "$OUT_DIR"
compile=()
[ "${COMPILE:-1}" = 1 ] && compile=(--compile)
start=$(date +%s)
set +e
PYTHONUNBUFFERED=1 "$PY" -m dit_model.train "$PRESET" --data "$PACK" --size "${SIZE:-32}" --run-dir "$RUN_DIR" \
    --device "$DEVICE" --precision "${PRECISION:-bf16}" "${compile[@]}" \
    --batch-size "${BATCH:-512}" --lr "${LR:-5e-4}" --warmup "${WARMUP:-300}" --ema "${EMA:-0.999}" \
    --time-limit "${TIME_LIMIT:-4m}" --log-every 100 --ckpt-every 1000000000 --sample-every 1000000000 \
    "$@" 2>&1 | tr '\r' '\n' | grep -v -E '^ *[0-9]+(it|step)|[0-9]+%\|' | tee "$OUT_DIR/train.log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "$0: training failed (exit $status); see $OUT_DIR/train.log" >&2; exit "$status"; }

"$PY" - "$RUN_DIR" "$OUT_DIR" <<'PY'
import sys
from dit_model.trainer import export_weights
for path in export_weights(sys.argv[1], sys.argv[2]):
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
PY
cp "$RUN_DIR/log.csv" "$OUT_DIR/log.csv"
grid=$(ls "$RUN_DIR"/samples/*.png 2>/dev/null | tail -n 1 || true)
[ -n "$grid" ] && cp "$grid" "$OUT_DIR/grid.png"
echo "done in $(( $(date +%s) - start )) s: $OUT_DIR (run folder with the full checkpoint: $RUN_DIR)"

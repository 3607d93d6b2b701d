#!/usr/bin/env bash
# The WebGPU benchmarks on a bare machine with an NVIDIA GPU, in about five minutes:
#
#   OUT=results/ bench/gpu/run.sh            # tables into $OUT (default: bench/results/gpu/)
#   OUT=/tmp/dry bench/gpu/run.sh --dry-run  # the same path on Mesa lavapipe at tiny shapes (CI runs it)
#
# The machine needs python3 (3.11 or 3.12) with numpy, torch, jinja2, safetensors and tqdm, and the
# NVIDIA driver; nothing is installed on it and nothing is fetched. From the tree:
#   bench/gpu/debs/libvulkan1_*.deb   the Vulkan loader (Debian 12), unpacked into a temporary folder
#   bench/gpu/wheels/*.whl            wgpu-py and its pure-Python / cp312 needs, installed into a
#                                     temporary folder put first on PYTHONPATH
# The NVIDIA ICD file is the driver's own (VK_DRIVER_FILES, or the usual icd.d folders), else one
# written here that names libGLX_nvidia.so.0.
# It runs, in order of value, each under its own time limit (a stage that does not fit is skipped and
# says so): `ditweb bench kernels` (the shipped preset's dispatches and square f32 matmuls up to
# 4096^3), `ditweb bench step` with the autotuner (each candidate's time, the plan chosen, the
# default / tuned / alternatives plans, a 25-step sample with its one read-back) at the favicon
# presets, then at the DiT-B/2 and DiT-XL/2 shapes (f16, random weights, no ONNX, no torch rows).
# $OUT gets kernels.md, step.md, step-plans.md (every stage's table, one after the other), env.txt
# and run.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ $# -gt 1 ] || { [ $# -eq 1 ] && [ $DRY -eq 0 ]; }; then
    echo "usage: [OUT=DIR] $0 [--dry-run]" >&2
    exit 2
fi
OUT=${OUT:-$REPO/bench/results/gpu}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-285}                       # seconds for all stages together
START=$(date +%s)
mkdir -p "$OUT" || { echo "run.sh: cannot create $OUT" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ditweb-gpu-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LOG=$OUT/run.log
: > "$LOG"
say() { echo "run.sh: $*" | tee -a "$LOG" >&2; }

# ---- python and what it must already have
"$PY" - <<'PYEOF' || exit 2
import importlib.util, sys
missing = [m for m in ("numpy", "torch", "jinja2", "safetensors", "tqdm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"run.sh: {sys.executable} lacks {', '.join(missing)} (the benchmark exports random-weight bundles with torch)")
if sys.version_info < (3, 11):
    sys.exit(f"run.sh: python {sys.version.split()[0]} is too old (3.11 or newer)")
PYEOF

# ---- the Vulkan loader, from the carried .deb
DEB=$(ls bench/gpu/debs/libvulkan1_*_amd64.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { say "no bench/gpu/debs/libvulkan1_*_amd64.deb in the tree"; exit 2; }
mkdir -p "$TMP/vk"
if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$DEB" "$TMP/vk"
else                                          # a .deb is an ar archive holding data.tar.*
    "$PY" - "$DEB" "$TMP/vk" <<'PYEOF' || exit 2
import io, sys, tarfile
raw = open(sys.argv[1], "rb").read()
assert raw[:8] == b"!<arch>\n", "not a .deb"
pos = 8
while pos < len(raw):
    name, size = raw[pos:pos + 16].decode().strip().rstrip("/"), int(raw[pos + 48:pos + 58])
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(raw[pos + 60:pos + 60 + size])).extractall(sys.argv[2])
    pos += 60 + size + (size & 1)
PYEOF
fi
export LD_LIBRARY_PATH="$TMP/vk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- the Vulkan driver: NVIDIA (or lavapipe for the dry run)
if [ $DRY -eq 1 ]; then
    ICD=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -1)
    [ -n "$ICD" ] || { say "--dry-run needs Mesa lavapipe (apt-get install mesa-vulkan-drivers)"; exit 2; }
else
    ICD=${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-}}
    if [ -z "$ICD" ]; then
        for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
            [ -f "$d/nvidia_icd.json" ] && { ICD=$d/nvidia_icd.json; break; }
        done
    fi
    if [ -z "$ICD" ]; then
        LIB=$( (ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0/{print $NF; exit}') )
        for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
            [ -z "$LIB" ] && [ -f "$d/libGLX_nvidia.so.0" ] && LIB=$d/libGLX_nvidia.so.0
        done
        [ -n "$LIB" ] || { say "no NVIDIA Vulkan driver: no nvidia_icd.json and no libGLX_nvidia.so.0 found"; exit 2; }
        ICD=$TMP/nvidia_icd.json
        printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$LIB" > "$ICD"
    fi
fi
export VK_DRIVER_FILES=$ICD VK_ICD_FILENAMES=$ICD
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$TMP}
export XDG_CACHE_HOME=$TMP/cache              # plans are timed afresh, never taken from an old cache

# ---- wgpu-py from the carried wheels (cffi only where this python lacks it)
WHEELS=(bench/gpu/wheels/wgpu-*.whl bench/gpu/wheels/rendercanvas-*.whl)
if ! "$PY" -c "import cffi" 2>/dev/null; then
    TAG=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    CFFI=$(ls bench/gpu/wheels/cffi-*-"$TAG"-*.whl 2>/dev/null | head -1)
    [ -n "$CFFI" ] || { say "python lacks cffi and bench/gpu/wheels has no cffi wheel for $TAG"; exit 2; }
    WHEELS+=("$CFFI" bench/gpu/wheels/pycparser-*.whl)
fi
"$PY" - "$TMP/site" "${WHEELS[@]}" <<'PYEOF' || exit 2
import sys, zipfile
for whl in sys.argv[2:]:                      # a wheel is a zip of its site-packages files: no pip needed
    zipfile.ZipFile(whl).extractall(sys.argv[1])
PYEOF
export PYTHONPATH="$TMP/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# ---- the adapter we got
"$PY" - "$DRY" > "$OUT/env.txt" 2>>"$LOG" <<'PYEOF' || { cat "$OUT/env.txt" >&2; say "no WebGPU adapter (see $OUT/env.txt and run.log)"; exit 2; }
import os, platform, sys
import wgpu
from runtime_py.gpu import describe, pick_adapter
a = pick_adapter()
print(f"adapter: {describe(a)}")
for k, v in sorted(a.info.items()):
    print(f"  {k}: {v}")
print(f"timestamp-query: {'timestamp-query' in a.features}")
print(f"python {platform.python_version()}, wgpu {wgpu.__version__} from {os.path.dirname(wgpu.__file__)}")
print(f"VK_DRIVER_FILES={os.environ.get('VK_DRIVER_FILES')}")
if sys.argv[1] == "0" and str(a.info.get("adapter_type", "")).lower() == "cpu":
    sys.exit("the adapter is a CPU one: the NVIDIA Vulkan driver did not load")
PYEOF
cat "$OUT/env.txt" | tee -a "$LOG" >&2

# ---- the stages: name | seconds at most | ditweb command line
if [ $DRY -eq 1 ]; then
    STAGES=(
        "kernels favicon|120|bench kernels --preset Favicon-N/2 --quick --no-torch --sizes 64"
        "step favicon|120|bench step --preset Favicon-N/2 --quick --no-torch --dtypes f32,f16 --images 1,2"
        "step DiT-B/2 shape (dry run: Favicon-N/2)|60|bench step --preset Favicon-N/2 --quick --no-torch --dtypes f16 --images 1"
    )
else
    STAGES=(
        "kernels Favicon-T/4|50|bench kernels --preset Favicon-T/4 --no-torch --sizes 1024,2048,4096"
        "step Favicon-T/4|50|bench step --preset Favicon-T/4 --no-torch --dtypes f32,f16 --images 1,4"
        "step Favicon-S/2|45|bench step --preset Favicon-S/2 --no-torch --dtypes f16 --images 1,4"
        "kernels DiT-B/2|40|bench kernels --preset DiT-B/2 --no-torch --quick"
        "step DiT-B/2|45|bench step --preset DiT-B/2 --no-torch --dtypes f16 --images 1,4 --quick"
        "step DiT-XL/2|70|bench step --preset DiT-XL/2 --no-torch --dtypes f16 --images 1 --quick"
    )
fi
: > "$OUT/kernels.md"; : > "$OUT/step.md"; : > "$OUT/step-plans.md"
n=0
for stage in "${STAGES[@]}"; do
    IFS='|' read -r name limit cmd <<< "$stage"
    n=$((n + 1))
    left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        say "skipped: $name (no time left in the ${BUDGET} s budget)"
        continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "stage $n: $name (at most $limit s): ditweb $cmd"
    res=$TMP/res/$n
    mkdir -p "$res"
    # shellcheck disable=SC2086
    timeout --kill-after=5 "$limit" "$PY" -m ditweb $cmd --out "$res" >> "$LOG" 2>&1
    rc=$?
    [ $rc -eq 0 ] || say "stage $n ($name) ended with status $rc$([ $rc -eq 124 ] && echo ': out of time')"
    for t in kernels step step-plans; do
        if [ -f "$res/$t.md" ]; then
            { echo "<!-- stage $n: $name -->"; cat "$res/$t.md"; echo; } >> "$OUT/$t.md"
        fi
    done
done
say "done in $(($(date +%s) - START)) s; tables in $OUT"
ls -la "$OUT" >> "$LOG"

#!/usr/bin/env bash
# Build web/ditweb-kernels.wasm from wasm/kernels.c with Debian's clang + lld (scripts/setup.sh installs
# them). Deterministic: no debug info, no build paths, a fixed flag set; tests/test_wasm_build.py
# rebuilds and compares the committed binary byte for byte.
#   wasm/build.sh [OUT]      (default web/ditweb-kernels.wasm)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-web/ditweb-kernels.wasm}"
CLANG="${CLANG:-clang}"
# -ffp-contract=off: products stay rounded before adds (the noise must match numpy bit for bit);
# -fno-builtin: no calls to a libc that does not exist here; stack 64 KiB (attention's scratch).
"$CLANG" --target=wasm32-unknown-unknown -O3 -msimd128 -ffp-contract=off -fno-builtin -nostdlib \
  -ffile-prefix-map="$PWD"=. -Wall -Werror \
  -Wl,--no-entry -Wl,--strip-all -Wl,--export=__heap_base -Wl,-z,stack-size=65536 \
  -o "$OUT" wasm/kernels.c
echo "$OUT: $(wc -c < "$OUT") bytes"

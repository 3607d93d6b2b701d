#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh machine: system packages, .venv, Python deps,
# the Twemoji data set (npm, into an ignored folder). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
# clang + lld: wasm/build.sh rebuilds web/ditweb-kernels.wasm (tests/test_wasm.py checks the committed one)
for pkg in clang lld; do dpkg -s $pkg >/dev/null 2>&1 || need_apt+=($pkg); done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
# torch first and pinned: a bare 'torch' requirement could pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0 2> >(grep -v "^WARNING: Location" >&2)
# torch is an extra (the runtime needs numpy + wgpu only); the pinned wheel above satisfies it.
.venv/bin/pip install -q -e ".[torch,dev]" 2> >(grep -v "^WARNING: Location" >&2)

if [ ! -f data/npm/node_modules/emoji-datasource-twitter/emoji.json ]; then
  echo "[setup] npm install emoji-datasource-twitter@16.0.0 (Twemoji, CC-BY 4.0) -> data/npm"
  mkdir -p data/npm
  (cd data/npm && [ -f package.json ] || echo '{"name":"ditweb-data","private":true}' > package.json)
  npm install --prefix data/npm --no-audit --no-fund --silent emoji-datasource-twitter@16.0.0
fi
# onnxruntime-web for the browser benchmark (bench/web), its own ignored folder: served as static files, never bundled.
if [ ! -f data/npm-ort/node_modules/onnxruntime-web/dist/ort.webgpu.min.mjs ]; then
  echo "[setup] npm install onnxruntime-web@1.30.0 -> data/npm-ort"
  mkdir -p data/npm-ort
  (cd data/npm-ort && [ -f package.json ] || echo '{"name":"ditweb-ort","private":true}' > package.json)
  npm install --prefix data/npm-ort --no-audit --no-fund --silent onnxruntime-web@1.30.0
fi
# typescript + the WebGPU typings: tsc --checkJs checks web/'s JSDoc types (tests/test_wasm.py), no build step
if [ ! -f data/npm-ts/node_modules/@webgpu/types/package.json ] || [ ! -x data/npm-ts/node_modules/.bin/tsc ]; then
  echo "[setup] npm install typescript@5.9.3 @webgpu/types@0.1.69 -> data/npm-ts"
  mkdir -p data/npm-ts
  (cd data/npm-ts && [ -f package.json ] || echo '{"name":"ditweb-ts","private":true}' > package.json)
  npm install --prefix data/npm-ts --no-audit --no-fund --silent typescript@5.9.3 @webgpu/types@0.1.69
fi
echo "[setup] done"

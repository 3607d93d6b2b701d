#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh machine: system packages, .venv, Python deps,
# the emoji data sets (npm, into an ignored folder). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
# clang + lld: wasm/build.sh rebuilds web/ditweb-kernels.wasm (tests/test_wasm.py checks the committed one)
for pkg in clang lld; do dpkg -s $pkg >/dev/null 2>&1 || need_apt+=($pkg); done
# clang-19 + lld-19, pinned: wasm/build.sh builds the relaxed SIMD kernels with them (clang 14 emits only the
# pre-standard relaxed SIMD opcodes); the committed web/ditweb-kernels*-relaxed.wasm are this version's output
LLVM_RELAXED=1:19.1.7-3~deb12u1
for pkg in clang-19 lld-19; do
  [ "$(dpkg-query -W -f='${Version}' $pkg 2>/dev/null)" = "$LLVM_RELAXED" ] || need_apt+=("$pkg=$LLVM_RELAXED")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; then
    # the pinned clang-19 gone from the archive (a point release replaced it): the current one, and a warning
    echo "[setup] warning: clang-19/lld-19 $LLVM_RELAXED not found; installing the archive's (the relaxed kernels may not rebuild byte for byte)" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]%%=*}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
# torch first and pinned: a bare 'torch' requirement could pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0 2> >(grep -v "^WARNING: Location" >&2)
# torch is an extra (the runtime needs numpy + wgpu only); the pinned wheel above satisfies it.
.venv/bin/pip install -q -e ".[torch,dev]" 2> >(grep -v "^WARNING: Location" >&2)

# The emoji data sets (dit_model/data.py, dit_model/emoji.py; licences and attribution: docs/data.md):
# Twemoji (CC-BY 4.0), Noto (Apache-2.0), Fluent Emoji Flat (MIT), emojibase names + keywords (MIT).
# OpenMoji (CC BY-SA 4.0) is opt-in and deliberately not installed here.
EMOJI_NPM=(
  "emoji-datasource-twitter@16.0.0:emoji-datasource-twitter/emoji.json"
  "emoji-datasource-google@16.0.0:emoji-datasource-google/emoji.json"
  "@iconify-json/fluent-emoji-flat@1.2.6:@iconify-json/fluent-emoji-flat/icons.json"
  "emojibase-data@17.0.0:emojibase-data/en/data.json"
)
need_npm=()
for item in "${EMOJI_NPM[@]}"; do
  pkg="${item%%:*}"; file="${item#*:}"
  name="${pkg%@*}"; want="${pkg##*@}"
  have=$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "data/npm/node_modules/$name/package.json" 2>/dev/null | head -1 || true)
  if [ ! -f "data/npm/node_modules/$file" ] || [ "$have" != "$want" ]; then need_npm+=("$pkg"); fi
done
if [ ${#need_npm[@]} -gt 0 ]; then
  echo "[setup] npm install ${need_npm[*]} -> data/npm"
  mkdir -p data/npm
  (cd data/npm && [ -f package.json ] || echo '{"name":"ditweb-data","private":true}' > package.json)
  npm install --prefix data/npm --no-audit --no-fund --silent --save-exact "${need_npm[@]}"
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
# esbuild for the npm package's bundler test (tests/test_npm.py) and for web/app.bundle.js (`python -m webserve.pagebundle`,
# rebuilt byte for byte by tests/test_site.py): pinned, its own ignored folder
if [ ! -x data/npm-esbuild/node_modules/.bin/esbuild ]; then
  echo "[setup] npm install esbuild@0.28.2 -> data/npm-esbuild"
  mkdir -p data/npm-esbuild
  (cd data/npm-esbuild && [ -f package.json ] || echo '{"name":"ditweb-esbuild","private":true}' > package.json)
  npm install --prefix data/npm-esbuild --no-audit --no-fund --silent --save-exact esbuild@0.28.2
fi
echo "[setup] done"

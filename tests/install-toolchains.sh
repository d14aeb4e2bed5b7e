#!/usr/bin/env bash
# Installs what the tests need beyond Rust (idempotent; skips what is there):
# the wasm32-wasip2 target; Debian's Chromium (the browser test) and clang +
# wasi-libc (the C step); npm packages (playwright-core, the JavaScript
# SDK's componentizers); componentize-py (Python steps); schemathesis (the
# OpenAPI contract test); wit-bindgen-cli
# (the C step's bindings). Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 > /dev/null

echo "--- Debian packages: Chromium (the browser test), clang + wasi-libc (the C step)"
need=""
[ -x /usr/bin/chromium ] || need="$need chromium"
command -v clang > /dev/null || need="$need clang"
command -v wasm-ld > /dev/null || need="$need lld"
[ -d /usr/lib/wasm32-wasi ] || need="$need wasi-libc"
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a > /dev/null 2>&1 || need="$need libclang-rt-dev-wasm32"
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $need > /dev/null
fi

echo "--- npm: playwright-core (the browser test, no browser download), the JavaScript SDK's componentizers"
(cd tests/browser && npm ci --no-audit --no-fund)
(cd guest-sdk/js && npm ci --no-audit --no-fund)

echo "--- PyPI: componentize-py (Python steps), schemathesis (the OpenAPI contract test)"
pip install --quiet --disable-pip-version-check componentize-py==0.25.1 schemathesis==4.32.5

echo "--- crates.io: wit-bindgen-cli (the C step's bindings)"
if ! wit-bindgen --version 2> /dev/null | grep -q "0.63.0"; then
  cargo install --quiet --locked wit-bindgen-cli --version 0.63.0
fi

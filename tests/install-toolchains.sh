#!/usr/bin/env bash
# Installs what the tests need beyond Rust (idempotent; skips what is there):
# the wasm32-wasip2 target; Debian's Chromium (the browser test), clang +
# wasi-libc (the C step) and valgrind (the instruction budget); npm packages (playwright-core, the JavaScript
# SDK's componentizers); componentize-py (Python steps); schemathesis (the
# OpenAPI contract test); wit-bindgen-cli
# (the C step's bindings); a PostgreSQL server for the PostgreSQL tests, if
# none answers at WASAGA_TEST_POSTGRES (default 127.0.0.1:5432, database
# test: Debian's `postgresql`, a cluster started with trust auth on
# loopback). Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 > /dev/null

echo "--- Debian packages: Chromium (the browser test), clang + wasi-libc (the C step), valgrind (the instruction budget)"
need=""
command -v valgrind > /dev/null || need="$need valgrind"
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

echo "--- PostgreSQL (the journal and entity store tests on both backends, the multi-host test)"
pg_url="${WASAGA_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
pg_answers() {
  command -v psql > /dev/null && psql "$pg_url" -qAtc "SELECT 1" > /dev/null 2>&1
}
if ! pg_answers; then
  if ! ls /etc/postgresql/*/main > /dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql > /dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  config="/etc/postgresql/$version/main"
  # Trust on loopback, as on the project's machines (a throwaway test server).
  if ! grep -q "wasaga-tests" "$config/pg_hba.conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust # wasaga-tests\nhost all all ::1/128 trust # wasaga-tests\nlocal all all trust # wasaga-tests' "$config/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2> /dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  psql -h 127.0.0.1 -U postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE test"
  pg_answers || { echo "PostgreSQL does not answer at $pg_url" >&2; exit 1; }
fi

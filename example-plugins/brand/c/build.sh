#!/bin/sh
# Builds slugify_brand.c into a component: wit-bindgen's C bindings, clang
# for wasm32-wasi, and the component linker rustc ships (it carries the
# preview1 → preview2 adapter). Needs: clang lld wasi-libc (Debian),
# wit-bindgen-cli 0.63 (cargo install), rustup.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../../../target/c"
mkdir -p "$out/gen"
wit-bindgen c "$here/../../../wit" --world step --out-dir "$out/gen" > /dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
linker="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
clang --target=wasm32-wasi -O2 -Wall -mexec-model=reactor -fuse-ld="$linker" -Wl,--wasi-adapter=reactor \
  -I "$out/gen" -o "$out/slugify_brand.wasm" "$here/slugify_brand.c" "$out/gen/step.c" "$out/gen/step_component_type.o"

#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 30) from a corpus seeded with the
# repo's own manifests, inputs and journal rows, and prints each target's
# executions and corpus size. A crash, a hang (-timeout) or an allocation
# past -rss_limit_mb fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/, which becomes a regression case in
# fuzz/regressions/<target>/ (run first, every time).
#
# Only the stable toolchain exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass the nightly-only sanitizer flags to it.
#   fuzz/run.sh            # 30 s each (what CI runs)
#   fuzz/run.sh 600 cel    # ten minutes of one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest cel json journal)
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz > /dev/null || cargo install --quiet --locked cargo-fuzz --version 0.13.2
cargo fuzz build -O

seed() {
  local target="$1" corpus="fuzz/corpus/$1"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2> /dev/null || true
  case "$target" in
    manifest)
      find example-plugins tests -name '*.toml' -not -path '*/target/*' -not -path '*/node_modules/*' \
        | while read -r f; do cp -n "$f" "$corpus/$(echo "$f" | tr / _)"; done ;;
    json)
      find example-plugins tests -name '*.json' -size -64k -not -path '*/node_modules/*' -not -path '*/target/*' \
        | while read -r f; do cp -n "$f" "$corpus/$(echo "$f" | tr / _)"; done ;;
  esac
}

for target in "${targets[@]}"; do
  seed "$target"
  regressions="fuzz/regressions/$target"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    # Every input that once crashed, replayed before fuzzing.
    cargo fuzz run -O "$target" "$regressions"/* -- -runs=1 > /dev/null 2>&1 \
      || { echo "$target: a regression input fails again"; exit 1; }
  fi
  log="fuzz/$target.log"
  if ! cargo fuzz run -O "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 > "$log" 2>&1; then
    tail -40 "$log"
    echo "$target: FAILED (the input is in fuzz/artifacts/$target/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  echo "$target: $runs executions in ${seconds}s, corpus $(ls "fuzz/corpus/$target" | wc -l) inputs"
done

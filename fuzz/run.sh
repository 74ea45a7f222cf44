#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time: what `.ci/run` calls.
#
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET...]]    (default 60 s, every target)
#
# Stable Rust, no cargo-fuzz needed: this builds the targets with exactly the flags
# `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13) passes, all of them stable `-C`
# codegen options (SanitizerCoverage through LLVM's `sancov-module` pass, the
# instrumentation libFuzzer reads), so neither a nightly toolchain nor RUSTC_BOOTSTRAP
# is involved. Only a sanitizer (`-Zsanitizer=address`, cargo-fuzz's default) would need
# `-Z`; the fuzzed crates are safe Rust but for the relay's socket buffers, and their
# overflow checks and debug assertions stay on in this build. `--target` keeps the flags
# off build scripts and proc macros, as cargo-fuzz does. libfuzzer-sys compiles
# libFuzzer's C++ with the machine's g++. With cargo-fuzz installed
# (`cargo install cargo-fuzz --locked`), `cargo fuzz run --sanitizer none <target>`
# runs the same targets by hand.
#
# Targets run two at a time (CI's machine has two cores). New inputs go to a scratch
# corpus; the checked-in seeds (`fuzz/corpus/<target>/`) are only read. A crash fails
# the run and leaves its input in fuzz/artifacts/<target>/ (printed in hex): minimise it
# with `-minimize_crash=1`, turn it into a unit test in the crate that owns the code,
# fix it.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(switch_frames gateway relay_tcp relay_datagram vnet_gso portspec api_bodies dns vxlan cluster cluster_rpc)
fi
jobs="$(nproc)"
[ "$jobs" -gt 2 ] && jobs=2

triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Ccodegen-units=1"
start=$(date +%s)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
# Not --locked: fuzz/Cargo.lock pins what it has, and a dependency that the fuzzed crates
# gain later is resolved here rather than failing the build.
cargo build --release --target "$triple" "${bins[@]}"
echo "fuzz: built in $(( $(date +%s) - start )) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
run_one() {
  local t="$1"
  mkdir -p "$scratch/$t" "artifacts/$t"
  if "target/$triple/release/$t" "$scratch/$t" "corpus/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$scratch/$t.log" 2>&1; then
    echo "fuzz: $t: $(grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | awk '{print $2}') runs, no crash"
  else
    echo "fuzz: $t FAILED"
    tail -n 60 "$scratch/$t.log"
    for a in "artifacts/$t"/*; do
      [ -f "$a" ] && { echo "input $a:"; od -An -tx1 -v "$a" | head -n 40; }
    done
    return 1
  fi
}
status=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
echo "fuzz: ${#targets[@]} targets, ${secs} s each, $(( $(date +%s) - start )) s in all"
exit "$status"

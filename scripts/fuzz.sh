#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser and of the handshake responder,
# with cargo-fuzz (libFuzzer) on the stable toolchain: `-s none` builds
# without a sanitizer, which needs no nightly flags (the code under test is
# safe Rust; its crashes are panics, which libFuzzer catches).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 20)
#
# Exits non-zero if any target finds a crash; the input is kept in
# fuzz/artifacts/<target>/. Prints each target's final figures.
set -euo pipefail
secs=${1:-20}
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once per machine)..."
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -s none -O
fail=0
for t in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/$t.log"
    if ! cargo fuzz run -s none -O "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        echo "FUZZ CRASH in $t (see $log and fuzz/artifacts/$t/)"
        grep -E "panicked|SUMMARY|Test unit written" "$log" || tail -20 "$log"
        fail=1
    fi
    execs=$(grep -oE "stat::number_of_executed_units:[[:space:]]+[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    rate=$(grep -oE "stat::average_exec_per_sec:[[:space:]]+[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    cov=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | grep -oE "cov: [0-9]+" | head -1 || true)
    echo "fuzz $t: ${secs}s, $execs execs, $rate execs/s, ${cov:-cov: ?}, corpus $(ls "fuzz/corpus/$t" | wc -l)"
done
exit $fail

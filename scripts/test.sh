#!/usr/bin/env bash
# Runs every check and test of anytun on a fresh machine, installing what
# it needs. This is the README's test command and what CI runs.
#
#   scripts/test.sh            everything (about 20 minutes: the lab and Asterisk tests take most)
#   FUZZ_SECONDS=60 scripts/test.sh   longer fuzzing per target
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "tools"
if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then
    # rusqlite builds SQLite from source; cargo-fuzz builds libFuzzer (C++).
    apt-get update -qq && apt-get install -y -qq build-essential
fi
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
    # build.rs runs bindgen on include/anytun.h, which needs libclang.
    apt-get update -qq && apt-get install -y -qq libclang-dev
fi
if ! command -v faketime >/dev/null; then
    # The CLI test of a client whose clock is wrong runs it under faketime.
    apt-get update -qq && apt-get install -y -qq faketime
fi
if ! command -v bird >/dev/null || ! bird --version 2>&1 | grep -q 'version 2' \
    || ! command -v nft >/dev/null || ! command -v conntrack >/dev/null || ! command -v ip >/dev/null; then
    # The anycast lab's tests (tests/lab.rs, root) run real BIRD 2, nftables
    # and conntrack. policy-rc.d refuses to start services while installing,
    # so no host BIRD starts (it would hold port 179).
    policy=/usr/sbin/policy-rc.d
    [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; ours=1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends bird2 nftables conntrack iproute2
    [ -z "${ours:-}" ] || rm -f "$policy"
fi
cargo --version
for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

step "Asterisk 22 chroot (for tests/asterisk_module.rs; cached in /var/cache/anytun)"
scripts/asterisk-chroot.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "fuzzing (bounded: ${FUZZ_SECONDS:-20} s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

step "tests"
log=$(mktemp)
# --all-targets: unit, integration and property tests, the CLI end-to-end
# tests, and each benchmark run once as a smoke test.
cargo test --all-targets 2>&1 | tee "$log"
totals=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
passed=${totals% *}
failed=${totals#* }
rm -f "$log"
echo
echo "tests: ${passed:-0} passed, ${failed:-0} failed"

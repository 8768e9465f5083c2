#!/usr/bin/env bash
# Bounded fuzz pass over the parsers that take outside input: cookie headers and their
# signatures, VCAP_SERVICES, and the whole settings environment. Each target runs for
# FUZZ_SECONDS (default 30) with a fresh random seed; a crash prints the input and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
echo "fuzz: ${FUZZ_SECONDS}s per target"
# --release: many more inputs per second; --test-threads=1 keeps each target's budget honest
# on a 2-core machine.
cargo test --release --locked --lib -- --ignored fuzz_ --nocapture --test-threads=1

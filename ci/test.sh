#!/usr/bin/env bash
# The test command: formatting, lints, then every unit, property and integration test.
# Integration tests start their own redis-server processes on random ports, so the only
# prerequisites are redis-server and openssl on PATH (see .ci/run for installing them).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server openssl; do
  command -v "$tool" >/dev/null || { echo "ci/test.sh: $tool is required (apt-get install ${tool/redis-server/redis-server})" >&2; exit 2; }
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked

#!/usr/bin/env bash
# The test command: formatting, lints, then every unit, property and integration test.
# Integration tests start their own redis-server processes on random ports, so the only
# prerequisites are redis-server and openssl on PATH (see .ci/run for installing them).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server openssl; do
  command -v "$tool" >/dev/null || { echo "ci/test.sh: $tool is required (apt-get install ${tool/redis-server/redis-server})" >&2; exit 2; }
done

echo "== no file refers to a folder beside the repository"
# A user's clone has nothing beside it. The pattern is built in two parts so that this
# script does not match itself. Outside a git work tree (a copy of the files), grep instead.
beside='../'"shared"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  offenders=$(git grep -l -F -e "$beside" -- . || true)
else
  offenders=$(grep -rlF --exclude-dir=target --exclude-dir=node_modules -e "$beside" . | sed 's|^\./||' || true)
fi
if [ -n "$offenders" ]; then
  echo "ci/test.sh: these files refer to $beside, which a clone does not have:" >&2
  sed 's/^/  /' <<<"$offenders" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked

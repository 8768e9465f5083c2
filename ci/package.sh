#!/usr/bin/env bash
# Builds the release binary and lays out the directory that `cf push` uploads (manifest.yml's
# `path: target/cf`), for Cloud Foundry's binary_buildpack on the cflinuxfs4 stack:
#
#   target/cf/redis-sessions   the binary, built --release --locked
#   target/cf/Procfile         web: ./redis-sessions
#
#   bash ci/package.sh    (needs cargo and objdump from binutils)
#
# The droplet runs on cflinuxfs4, Ubuntu 22.04 with glibc 2.35: a binary linked against newer
# symbol versions would stage and then fail to start ("version `GLIBC_2.36' not found"), so
# this script refuses one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The glibc of cflinuxfs4 (Ubuntu 22.04 "jammy"): https://github.com/cloudfoundry/cflinuxfs4
readonly STACK_GLIBC=2.35
readonly NAME=redis-sessions

command -v cargo >/dev/null || { echo "ci/package.sh: cargo is required (https://rustup.rs)" >&2; exit 2; }
command -v objdump >/dev/null || { echo "ci/package.sh: objdump is required (apt-get install binutils)" >&2; exit 2; }

cargo build --release --locked
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/$NAME"
[[ -x "$bin" ]] || { echo "ci/package.sh: no binary at $bin after the build" >&2; exit 1; }

# Every versioned glibc symbol the binary imports, highest version last.
needed=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
[[ -n "$needed" ]] || { echo "ci/package.sh: found no GLIBC_ symbol versions in $bin; is it linked dynamically?" >&2; exit 1; }
if [[ "$(printf '%s\n%s\n' "$needed" "$STACK_GLIBC" | sort -V | tail -n 1)" != "$STACK_GLIBC" ]]; then
    echo "ci/package.sh: $bin needs GLIBC_$needed, above cflinuxfs4's $STACK_GLIBC. The symbols:" >&2
    objdump -T "$bin" | grep -F "GLIBC_$needed" >&2
    exit 1
fi
echo "glibc: the binary needs at most GLIBC_$needed; cflinuxfs4 has $STACK_GLIBC"

out="$target_dir/cf"
rm -rf "$out"
mkdir -p "$out"
cp "$bin" "$out/$NAME"
# The platform's launcher starts this in /home/vcap/app, where the package is unpacked, as
# `bash -c "<command>"`. binary_buildpack fails staging without a start command.
printf 'web: ./%s\n' "$NAME" >"$out/Procfile"
echo "packaged $out: $(du -sh "$out" | cut -f1) ($(ls "$out" | tr '\n' ' '))"

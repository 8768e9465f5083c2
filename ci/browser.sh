#!/usr/bin/env bash
# Browser check of the visit counter in headless Chromium: builds the release binary, runs it
# on the embedded memory store, and drives Chromium through chromedriver with ci/browser.py
# (Selenium, pinned in ci/browser.requirements.txt and installed into a venv under target/).
#
# Needs the Debian packages chromium, chromium-driver and python3-venv (.ci/run installs
# them), and PyPI for the first install of Selenium.
# Usage: bash ci/browser.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=ci/venv.sh
source ci/venv.sh

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVICE_BIN="$TARGET_DIR/release/redis-sessions"
SCREENSHOT_DIR="$TARGET_DIR/browser"
VENV="$TARGET_DIR/browser-venv"
REQUIREMENTS=ci/browser.requirements.txt
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
# Ports other services on a developer machine or CI runner are likely to hold.
RESERVED_PORTS=(8080 6379)

work_dir=""
service_pid=""
check_pid=""

log() {
    echo "browser.sh: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# `kill -0` also succeeds on a zombie not yet reaped, so the process state is checked instead.
is_running() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

# Each helper runs in its own process group (see start_in_group) so that chromedriver and
# Chromium, which the check spawns, go away with it. The group id is the pid we recorded.
stop_group() {
    local pid=$1 name=$2
    [[ -n $pid ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        is_running "$pid" || break
        sleep 0.1
    done
    if is_running "$pid"; then
        log "$name (pid $pid) ignored SIGTERM; killing it"
    fi
    # Chromium may outlive chromedriver; a group id is not reused while any member lives.
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

show_log_tail() {
    local name=$1 file=$2
    [[ -s $file ]] || return 0
    log "last lines of the $name log ($file):"
    tail -n 40 "$file" >&2
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_group "$check_pid" "the check"
    stop_group "$service_pid" redis-sessions
    if [[ $status -ne 0 ]]; then
        if [[ -n $work_dir ]]; then
            show_log_tail chromedriver "$work_dir/chromedriver.log"
            show_log_tail service "$work_dir/service.log"
        fi
        log "FAILED (exit status $status)"
    fi
    [[ -z $work_dir ]] || rm -rf -- "$work_dir"
    exit "$status"
}

require_tools() {
    [[ -x $CHROMIUM ]] || die "$CHROMIUM not found: install the Debian package 'chromium'"
    [[ -x $CHROMEDRIVER ]] || die "$CHROMEDRIVER not found: install the Debian package 'chromium-driver'"
    local tool
    for tool in cargo python3 curl setsid ps cmp; do
        command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH"
    done
}

# Asks the kernel for a port that is free right now; the reserved ones and any given as
# arguments are refused.
free_port() {
    python3 - "${RESERVED_PORTS[@]}" "$@" <<'EOF'
import socket, sys
avoid = {int(p) for p in sys.argv[1:]}
while True:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    if port not in avoid:
        print(port)
        break
EOF
}

# setsid makes the child lead a new process group (no fork: a background job of a
# non-interactive shell is never a group leader), so $! is both its pid and its group id.
start_in_group() {
    local log_file=$1
    shift
    setsid "$@" >"$log_file" 2>&1 </dev/null &
}

# Polls `url` until it answers 2xx, failing early if the process behind it has died.
wait_for_http() {
    local name=$1 pid=$2 url=$3
    local deadline=$((SECONDS + STARTUP_TIMEOUT))
    # --noproxy: a proxy from the environment must not intercept 127.0.0.1.
    until curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$url" 2>/dev/null; do
        is_running "$pid" || die "$name exited before answering $url"
        ((SECONDS < deadline)) || die "$name did not answer $url within ${STARTUP_TIMEOUT}s"
        sleep 0.2
    done
}

build_service() {
    log "building the release binary"
    # --locked: CI must test the committed Cargo.lock, not silently rewrite it.
    cargo build --release --locked
    [[ -x $SERVICE_BIN ]] || die "the build did not produce $SERVICE_BIN"
}

start_service() {
    local port=$1
    log "starting redis-sessions on port $port (memory store)"
    # The Redis and Cloud Foundry variables are dropped so the memory store is used and the
    # cookie is not marked Secure, which plain-HTTP Chromium would then never send back.
    start_in_group "$work_dir/service.log" \
        env -u REDIS_URL -u REDIS_SERVICE_NAME -u VCAP_SERVICES -u VCAP_APPLICATION \
        PORT="$port" METRICS_PORT=off COOKIE_SECURE=false SESSION_STORE=memory LOG_FORMAT=text \
        "$SERVICE_BIN"
    service_pid=$!
    wait_for_http redis-sessions "$service_pid" "http://127.0.0.1:$port/health"
}

install_selenium() {
    ensure_venv "$VENV" "$REQUIREMENTS" || die "could not install Selenium into $VENV"
}

run_check() {
    local service_port=$1
    mkdir -p "$SCREENSHOT_DIR"
    # Its own process group, so chromedriver and Chromium go with it on any exit. In the
    # background so that a TERM reaches the trap at once instead of after the check.
    # SE_OFFLINE: Selenium Manager, were it ever consulted, must not go to the network.
    setsid env SE_OFFLINE=true "$VENV/bin/python" ci/browser.py \
        --base-url "http://127.0.0.1:$service_port" \
        --screenshot-dir "$SCREENSHOT_DIR" \
        --chromium "$CHROMIUM" \
        --chromedriver "$CHROMEDRIVER" \
        --driver-log "$work_dir/chromedriver.log" </dev/null &
    check_pid=$!
    local status=0
    wait "$check_pid" || status=$?
    # Anything of the group still alive (a Chromium the check could not quit) goes now; then
    # the pid is forgotten, since once reaped it may belong to someone else.
    kill -KILL -- "-$check_pid" 2>/dev/null || true
    check_pid=""
    return "$status"
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    require_tools
    install_selenium
    build_service

    work_dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-sessions-browser.XXXXXX")
    # Chromium and the check put their temporary files here too, so nothing outlives the run.
    export TMPDIR="$work_dir"

    local service_port
    service_port=$(free_port)
    start_service "$service_port"

    run_check "$service_port"
    log "browser check passed"
}

main "$@"

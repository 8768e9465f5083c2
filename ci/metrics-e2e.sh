#!/usr/bin/env bash
# The operator's view, end to end: four instances as Cloud Foundry runs them, each with its
# metrics listener, scraped by a real Prometheus. After the seed's Test 1 (page loads spread
# over every instance), Prometheus's HTTP API must count exactly those page loads.
#
#   bash ci/metrics-e2e.sh    (needs cargo, redis-server, redis-cli, prometheus and python3)
#
# VCAP_SERVICES also carries the user-provided service that `cf register-metrics-endpoint`
# binds, so the run proves that Redis discovery skips it. Bash only starts and stops
# processes; ci/metrics_e2e.py drives the page loads and queries Prometheus.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly INSTANCES=4
readonly LOADS=20

log() { printf '%s\n' "$*"; }
section() { printf '\n== %s ==\n' "$*"; }

work=""
declare -a pids=()

cleanup() {
    local rc=$? pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((rc != 0)) && [[ -n "$work" ]]; then
        local f
        for f in "$work"/*.log; do
            [[ -f "$f" ]] || continue
            printf '\n--- last lines of %s ---\n' "$(basename "$f")"
            tail -n 25 "$f"
        done
    fi
    [[ -n "$work" ]] && rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "FAIL: $1 is not installed: $2" >&2
        exit 1
    }
}
need redis-server "apt-get install redis-server"
need redis-cli "apt-get install redis-tools"
need prometheus "apt-get install --no-install-recommends prometheus"
need python3 "apt-get install python3"
need cargo "install a Rust toolchain (https://rustup.rs)"

section "Build"
cargo build --release --locked
bin=$(pwd)/${CARGO_TARGET_DIR:-target}/release/redis-sessions
[[ -x "$bin" ]] || {
    echo "FAIL: no binary at $bin" >&2
    exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/redis-sessions-metrics-e2e.XXXXXX")
# Free ports, each proven bindable and all held at once so that they are distinct.
read -r -a ports <<<"$(python3 - $((2 + 2 * INSTANCES)) <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
)"
redis_port=${ports[0]}
prometheus_port=${ports[1]}
app_ports=("${ports[@]:2:INSTANCES}")
metrics_ports=("${ports[@]:2+INSTANCES:INSTANCES}")

section "Redis"
redis_password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$redis_password" \
    --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" </dev/null &
pids+=($!)
for _ in $(seq 100); do
    [[ "$(redis-cli -p "$redis_port" --no-auth-warning -a "$redis_password" ping 2>/dev/null)" == PONG ]] && break
    sleep 0.1
done
log "redis-server on 127.0.0.1:$redis_port"

section "Instances"
# The p.redis binding, and beside it the metric registrar's user-provided service, whose
# name contains "redis" (it is named after the app) and whose credentials are empty.
vcap_services=$(printf '{"p.redis":[{"label":"p.redis","plan":"cache-small","name":"redis-sessions-store","instance_name":"redis-sessions-store","binding_name":null,"provider":null,"tags":["redis","pivotal","on-demand"],"syslog_drain_url":null,"volume_mounts":[],"credentials":{"host":"127.0.0.1","port":%d,"password":"%s"}}],"user-provided":[{"label":"user-provided","name":"secure-endpoint-redis-sessions","instance_name":"secure-endpoint-redis-sessions","binding_name":null,"credentials":{},"syslog_drain_url":"secure-endpoint://:9090/metrics","tags":[],"volume_mounts":[]}]}' \
    "$redis_port" "$redis_password")
for ((i = 0; i < INSTANCES; i++)); do
    vcap_application=$(printf '{"application_name":"redis-sessions","name":"redis-sessions","instance_index":%d,"instance_id":"instance-%d","space_name":"e2e","uris":["redis-sessions.apps.example.com"]}' "$i" "$i")
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
        PORT="${app_ports[i]}" \
        METRICS_PORT="${metrics_ports[i]}" \
        CF_INSTANCE_INDEX="$i" \
        VCAP_APPLICATION="$vcap_application" \
        VCAP_SERVICES="$vcap_services" \
        COOKIE_SECURE=false \
        LOG_FORMAT=text \
        RUST_LOG="info,redis_sessions::access=warn" \
        "$bin" </dev/null >"$work/instance-$i.log" 2>&1 &
    pids+=($!)
    log "instance $i: pid $! on :${app_ports[i]}, metrics on :${metrics_ports[i]}"
done

section "Prometheus"
{
    echo "global:"
    echo "  scrape_interval: 1s"
    echo "  scrape_timeout: 1s"
    echo "scrape_configs:"
    echo "  - job_name: redis-sessions"
    echo "    static_configs:"
    for ((i = 0; i < INSTANCES; i++)); do
        echo "      - targets: ['127.0.0.1:${metrics_ports[i]}']"
        echo "        labels: {cf_instance_index: '$i'}"
    done
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" \
    </dev/null >"$work/prometheus.log" 2>&1 &
pids+=($!)
log "prometheus $(prometheus --version 2>&1 | head -n1 | awk '{print $3}') on 127.0.0.1:$prometheus_port, scraping every 1s"

section "Test 1 through Prometheus"
app_urls=()
for port in "${app_ports[@]}"; do
    app_urls+=("http://127.0.0.1:$port")
done
python3 ci/metrics_e2e.py \
    --prometheus "http://127.0.0.1:$prometheus_port" \
    --loads "$LOADS" \
    "${app_urls[@]}"

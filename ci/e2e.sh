#!/usr/bin/env bash
# End-to-end check of redis-sessions as Cloud Foundry runs it: four instances behind a
# round-robin router, sharing one Redis. A local stand-in for `cf push -i 4`.
#
#   bash ci/e2e.sh    (needs cargo, redis-server, redis-cli, haproxy and curl; python3 helps)
#
# The point it proves: a visitor's count survives being sent to a different instance on every
# request, a full restart and a rolling restart, and it does not without an external store.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly INSTANCES=4
readonly LOADS=20
# The service's default drain time, under the 10 s Cloud Foundry allows before SIGKILL.
readonly SHUTDOWN_TIMEOUT_SECONDS=8

work=""
redis_pid=""
haproxy_pid=""
client_pid=""
declare -a app_pids=()
declare -a app_ports=()

log() { printf '%s\n' "$*"; }
section() { printf '\n== %s ==\n' "$*"; }
pass() { printf 'PASS: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

show_logs() {
    local f
    [[ -n "$work" && -d "$work" ]] || return 0
    for f in "$work"/instance-*.log "$work"/haproxy.log "$work"/redis.log; do
        [[ -f "$f" ]] || continue
        printf '\n--- last 30 lines of %s ---\n' "$(basename "$f")" >&2
        tail -n 30 "$f" >&2 || true
    done
}

# Stops one of our children, bounded: cleanup must never hang on a stuck process.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + SHUTDOWN_TIMEOUT_SECONDS + 2))
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    until exited "$pid"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
}

# Whether a child has exited. It stays a zombie until reaped, and kill -0 succeeds on zombies,
# so the process state is what tells.
exited() {
    local pid=$1 stat
    if [[ -d /proc/self ]]; then
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
        stat=${stat##*) }
        [[ "$stat" == Z* ]]
    else
        stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 0
        [[ -z "$stat" || "$stat" == Z* ]]
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if ((rc != 0)); then
        show_logs
    fi
    # The client loop first, so it does not record the shutdown below as failures.
    stop_pid "$client_pid"
    local pid
    for pid in "${app_pids[@]}"; do
        stop_pid "$pid"
    done
    stop_pid "$haproxy_pid"
    stop_pid "$redis_pid"
    [[ -n "$work" ]] && rm -rf "$work"
    if ((rc == 0)); then
        printf '\nPASS: ci/e2e.sh (%ds)\n' "$SECONDS"
    else
        printf '\nFAIL: ci/e2e.sh (exit %d after %ds)\n' "$rc" "$SECONDS" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed: $2"
}

# Random ports below the kernel's ephemeral range, so no outgoing connection (curl, HAProxy,
# the Redis pools) can sit on an instance's port while it restarts. Each is proven bindable,
# and all are held at once so they are distinct. 6379 is excluded so that a developer's own
# Redis is never touched.
free_ports() {
    local n=$1
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'EOF'
import random, socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
except OSError:
    low = 32768
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    port = random.randrange(10000, low) if low > 11000 else 0
    try:
        if port == 6379:
            raise OSError
        s.bind(("", port))
    except OSError:
        s.close()
        continue
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
    else
        # Without python3: random ports that nothing answers on.
        local ports=() p
        while ((${#ports[@]} < n)); do
            p=$((15000 + RANDOM % 15000))
            [[ " ${ports[*]} " == *" $p "* ]] && continue
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
            ports+=("$p")
        done
        echo "${ports[*]}"
    fi
}

new_guid() {
    if [[ -r /proc/sys/kernel/random/uuid ]]; then
        cat /proc/sys/kernel/random/uuid
    else
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' |
            sed -E 's/(.{8})(.{4})(.{4})(.{4})(.{12})/\1-\2-\3-\4-\5/'
    fi
}

# Polls a command until it succeeds or the deadline passes.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${seconds}s waiting for $what"
        fi
        sleep 0.1
    done
}

http_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# A process that died (bad configuration, port taken) fails at once instead of timing out.
instance_ready() {
    if exited "${app_pids[$1]}"; then
        fail "instance $1 (pid ${app_pids[$1]}) exited while starting"
    fi
    [[ "$(http_code "http://127.0.0.1:${app_ports[$1]}/ready")" == 200 ]]
}

# /api/session reads without creating a session, so probing it leaves no trace in Redis.
router_reaches() {
    local want=$1 tries body
    for ((tries = 0; tries < 2 * INSTANCES; tries++)); do
        body=$(curl -s --max-time 2 "$router/api/session" 2>/dev/null) || continue
        [[ "$body" =~ \"instance_index\":([0-9]+) ]] || continue
        [[ "${BASH_REMATCH[1]}" == "$want" ]] && return 0
    done
    return 1
}

start_instance() {
    local i=$1 store=$2 guid port=${app_ports[$1]}
    guid=$(new_guid)
    local vcap_application
    vcap_application=$(printf '{"application_id":"%s","application_name":"redis-sessions","application_uris":["redis-sessions.apps.example.com"],"application_version":"%s","cf_api":"https://api.example.com","host":"0.0.0.0","instance_id":"%s","instance_index":%d,"limits":{"disk":1024,"fds":16384,"mem":256},"name":"redis-sessions","organization_name":"e2e","port":%d,"process_type":"web","space_name":"e2e","uris":["redis-sessions.apps.example.com"]}' \
        "$app_guid" "$app_version" "$guid" "$i" "$port")
    # A clean environment, as on the platform: a developer's REDIS_URL or SESSION_SECRET
    # must not leak in and hide the shared generated secret this test exercises.
    # Access lines are left to HAProxy's log: here they would be mostly health checks,
    # burying what the instance itself had to say.
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
        PORT="$port" \
        CF_INSTANCE_INDEX="$i" \
        CF_INSTANCE_GUID="$guid" \
        VCAP_APPLICATION="$vcap_application" \
        VCAP_SERVICES="$vcap_services" \
        SESSION_STORE="$store" \
        COOKIE_SECURE=false \
        SHUTDOWN_TIMEOUT_SECONDS="$SHUTDOWN_TIMEOUT_SECONDS" \
        LOG_FORMAT=text \
        RUST_LOG="info,redis_sessions::access=warn" \
        "$bin" </dev/null >>"$work/instance-$i.log" 2>&1 &
    app_pids[i]=$!
    printf '[e2e] started pid %s store=%s guid=%s\n' "${app_pids[i]}" "$store" "$guid" >>"$work/instance-$i.log"
}

# SIGTERM is how the platform stops an instance; it must drain and exit 0 within the grace
# period. Past that the platform would SIGKILL it, and so do we, rather than hang CI.
reap_instance() {
    local i=$1 pid=${app_pids[$1]} rc=0
    local deadline=$((SECONDS + SHUTDOWN_TIMEOUT_SECONDS + 4))
    until exited "$pid"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$pid" || rc=$?
    app_pids[i]=""
    ((rc == 0)) || fail "instance $i (pid $pid) exited with status $rc after SIGTERM (137: killed after the grace period)"
}

stop_instance() {
    kill -TERM "${app_pids[$1]}" 2>/dev/null || true
    reap_instance "$1"
}

stop_all() {
    local i
    for ((i = 0; i < INSTANCES; i++)); do
        kill -TERM "${app_pids[i]}" 2>/dev/null || true
    done
    for ((i = 0; i < INSTANCES; i++)); do
        reap_instance "$i"
    done
}

start_all() {
    local store=$1 i
    for ((i = 0; i < INSTANCES; i++)); do
        start_instance "$i" "$store"
    done
    for ((i = 0; i < INSTANCES; i++)); do
        wait_for "instance $i /ready" 20 instance_ready "$i"
    done
    for ((i = 0; i < INSTANCES; i++)); do
        wait_for "HAProxy to route to instance $i" 10 router_reaches "$i"
    done
}

# One page load: prints "<instance> <visits>".
load_page() {
    local jar=$1 body
    body=$(curl --fail -sS --max-time 5 -b "$jar" -c "$jar" "$router/") || return 1
    if ! [[ "$body" =~ id=\"visits\"\>([0-9]+)\< ]]; then
        echo "the page shows no visit count" >&2
        return 1
    fi
    local visits=${BASH_REMATCH[1]}
    if ! [[ "$body" =~ id=\"instance\"\>([0-9]+)\< ]]; then
        echo "the page shows no instance index" >&2
        return 1
    fi
    printf '%s %s\n' "${BASH_REMATCH[1]}" "$visits"
}

# --- prerequisites ---------------------------------------------------------------------
need haproxy "install it (Debian/Ubuntu: apt-get install haproxy)"
need redis-server "install it (Debian/Ubuntu: apt-get install redis-server)"
need redis-cli "install it (Debian/Ubuntu: apt-get install redis-tools)"
need curl "install it (Debian/Ubuntu: apt-get install curl)"
need cargo "install a Rust toolchain (https://rustup.rs)"

section "Build"
if [[ -f Cargo.lock ]]; then
    cargo build --release --locked
else
    cargo build --release
fi
bin="${CARGO_TARGET_DIR:-target}/release/redis-sessions"
[[ -x "$bin" ]] || fail "no binary at $bin after the build"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d "${TMPDIR:-/tmp}/redis-sessions-e2e.XXXXXX")
read -r redis_port haproxy_port p0 p1 p2 p3 <<<"$(free_ports $((2 + INSTANCES)))"
app_ports=("$p0" "$p1" "$p2" "$p3")
router="http://127.0.0.1:$haproxy_port"
app_guid=$(new_guid)
app_version=$(new_guid)

section "Redis"
redis_password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
# Neither snapshots nor an AOF: nothing of this run may outlive it.
redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$redis_password" \
    --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" </dev/null &
redis_pid=$!
redis_ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" --no-auth-warning -a "$redis_password" ping 2>/dev/null)" == PONG ]]
}
wait_for "redis-server on port $redis_port" 10 redis_ping
log "redis-server pid $redis_pid on 127.0.0.1:$redis_port (password required)"

vcap_services=$(printf '{"p.redis":[{"label":"p.redis","plan":"cache-small","name":"redis-sessions","tags":["redis","pivotal","on-demand"],"instance_name":"redis-sessions","binding_name":null,"provider":null,"syslog_drain_url":null,"volume_mounts":[],"credentials":{"host":"127.0.0.1","port":%d,"password":"%s"}}]}' \
    "$redis_port" "$redis_password")

section "Router (HAProxy)"
cat >"$work/haproxy.cfg" <<EOF
global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout check 1s
    # An instance that stops accepting mid-test must cost a retry elsewhere, not an error:
    # a draining server answers every request it read, so replaying is safe here.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend web
    bind 127.0.0.1:$haproxy_port
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 300ms fall 1 rise 1
    server app0 127.0.0.1:${app_ports[0]} check
    server app1 127.0.0.1:${app_ports[1]} check
    server app2 127.0.0.1:${app_ports[2]} check
    server app3 127.0.0.1:${app_ports[3]} check
EOF
haproxy -c -q -f "$work/haproxy.cfg" || fail "HAProxy refused the generated configuration"
haproxy -db -f "$work/haproxy.cfg" </dev/null >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
log "haproxy pid $haproxy_pid on $router -> ports ${app_ports[*]}"

section "Start $INSTANCES instances (Redis from VCAP_SERVICES, generated shared secret)"
start_all auto
log "instances up: pids ${app_pids[*]}"

# --- Test 1 ----------------------------------------------------------------------------
section "Test 1: $LOADS page loads through the router"
jar="$work/cookies.txt"
declare -a counts=() seen=()
for ((n = 1; n <= LOADS; n++)); do
    line=$(load_page "$jar") || fail "page load $n failed"
    read -r inst visits <<<"$line"
    counts+=("$visits")
    seen[inst]=1
done
expected=$(seq -s ' ' 1 "$LOADS")
[[ "${counts[*]}" == "$expected" ]] || fail "Test 1: counts were '${counts[*]}', expected '$expected'"
((${#seen[@]} == INSTANCES)) || fail "Test 1: responses came from instances ${!seen[*]} only, expected all $INSTANCES"
pass "Test 1: visits 1..$LOADS in order, served by instances ${!seen[*]}"

# --- Test 2 ----------------------------------------------------------------------------
section "Test 2: stop all instances (SIGTERM) and start them again"
stop_all
pass "Test 2: all $INSTANCES instances exited 0 after SIGTERM"
start_all auto
line=$(load_page "$jar") || fail "Test 2: page load after the restart failed"
read -r inst visits <<<"$line"
((visits == LOADS + 1)) || fail "Test 2: the first load after the restart showed $visits (instance $inst), expected $((LOADS + 1))"
pass "Test 2: the count survived the restart: $visits (instance $inst)"
last=$visits

# --- Rolling restart -------------------------------------------------------------------
section "Rolling restart under load"
counts_file="$work/rolling-counts.txt"
failures_file="$work/rolling-failures.txt"
stop_file="$work/rolling-stop"
: >"$counts_file"
: >"$failures_file"
(
    while [[ ! -e "$stop_file" ]]; do
        if line=$(load_page "$jar" 2>"$work/client-error.txt"); then
            printf '%s\n' "$line" >>"$counts_file"
        else
            printf '%s request failed: %s\n' "$(date +%T.%N)" \
                "$(tr '\n' ' ' <"$work/client-error.txt")" >>"$failures_file"
        fi
    done
) </dev/null &
client_pid=$!
haproxy_log_before=$(wc -l <"$work/haproxy.log")
# Some requests must land before the first stop, or the test proves nothing.
wait_for "the client to make requests" 10 test -s "$counts_file"
# The restarted instance must serve the client's existing session: that is what shows it
# found the shared secret in Redis rather than making up its own.
client_served_by() {
    tail -n "+$(($2 + 1))" "$counts_file" | awk -v i="$1" '$1 == i { found = 1 } END { exit !found }'
}
for ((i = 0; i < INSTANCES; i++)); do
    before=$(wc -l <"$counts_file")
    stop_instance "$i"
    start_instance "$i" auto
    wait_for "instance $i /ready after its restart" 20 instance_ready "$i"
    wait_for "HAProxy to route to instance $i again" 10 router_reaches "$i"
    wait_for "the client to be served by the restarted instance $i" 10 client_served_by "$i" "$before"
    log "instance $i restarted (pid ${app_pids[i]}) and served the client; $(wc -l <"$counts_file") requests so far"
done
touch "$stop_file"
wait "$client_pid" || true
client_pid=""

requests=$(wc -l <"$counts_file")
failed=$(wc -l <"$failures_file")
# The retry count (last of httplog's five connection counters) shows whether the router had
# to hide a stopping instance; zero just means every stop fell between two requests.
retried=$(tail -n "+$((haproxy_log_before + 1))" "$work/haproxy.log" |
    grep -cE ' [0-9]+/[0-9]+/[0-9]+/[0-9]+/\+?[1-9][0-9]* [0-9]+/[0-9]+ "' || true)
log "requests during the rolling restart: $requests ($failed failed, $retried retried by HAProxy on another instance)"
if ((failed > 0)); then
    head -n 20 "$failures_file" >&2
    fail "Rolling restart: $failed requests failed during the rolling restart"
fi
bad=$(awk -v prev="$last" '{ if ($2 != prev + 1) { printf "after %d came %d (instance %d) at request %d\n", prev, $2, $1, NR } prev = $2 }' "$counts_file")
if [[ -n "$bad" ]]; then
    printf '%s\n' "$bad" | head -n 20 >&2
    fail "Rolling restart: counts were not consecutive (a count was lost or repeated)"
fi
last=$(tail -n 1 "$counts_file" | cut -d' ' -f2)
rolling_instances=$(cut -d' ' -f1 "$counts_file" | sort -u | tr '\n' ' ')
pass "Rolling restart: $requests requests, none failed, counts $((LOADS + 2))..$last consecutive (instances seen: ${rolling_instances% })"

# --- Negative case ---------------------------------------------------------------------
section "Negative case: SESSION_STORE=memory, no Redis"
stop_all
# Stopping Redis shows the memory store needs none, and that nothing below can reach it.
stop_pid "$redis_pid"
redis_pid=""
start_all memory
jar="$work/cookies-memory.txt"
pairs=()
max=0
for ((n = 1; n <= LOADS; n++)); do
    line=$(load_page "$jar") || fail "Negative case: page load $n failed"
    read -r inst visits <<<"$line"
    pairs+=("($inst,$visits)")
    if ((visits > max)); then max=$visits; fi
done
log "(instance,count): ${pairs[*]}"
((max < LOADS)) || fail "Negative case: with per-instance sessions the count still reached $max"
pass "Negative case: without a shared store the count scatters (highest $max of $LOADS loads)"

stop_all

#!/usr/bin/env bash
# A local stand-in for Cloud Foundry's Diego, driven by manifest.yml: it runs the pushed
# package (not the repository) the way the platform does, behind HAProxy as the router,
# with one shared Redis bound as the manifest's service.
#
#   bash ci/cf-local.sh                  root; needs cargo, objdump, redis-server, redis-cli,
#                                        haproxy, curl, wrk and python3 with PyYAML (.ci/run
#                                        installs them)
#   CF_LOCAL_MANIFEST=other.yml          runs another manifest
#   CF_LOCAL_KEEP=1                      keeps the work directory (logs, instance copies)
#
# What it does as the platform would:
# - reads instances, memory, env, services, path, health-check type/endpoint/invocation
#   timeout, readiness check and start timeout from the manifest (ci/cf_local.py), and
#   refuses unknown keys, a path that is not there and a start command the package lacks;
# - per start, copies the package into a fresh instance directory, cds into it and starts
#   `bash -c "<Procfile web command>"` with PORT, VCAP_APPLICATION, VCAP_SERVICES,
#   CF_INSTANCE_INDEX, CF_INSTANCE_GUID, HOME and TMPDIR set and nothing else inherited;
# - runs each instance in a memory cgroup limited to `memory:` (cgroup v1 or v2);
# - polls liveness with the manifest's invocation timeout and restarts an instance that fails
#   it (every second here, where Diego's default interval is 30 s), and HAProxy polls
#   readiness so an unready instance leaves the pool;
# - stops an instance with SIGTERM to every process in its cgroup, then SIGKILL after 10 s.
#
# What it proves: Test 1 (20 loads count 1..20 over all instances), Test 2 (a restart of all,
# the count goes on), a rolling restart under load with no failed request or lost count,
# `wrk` at 256 connections for 30 s with no error and no OOM kill, a hung instance replaced,
# every instance leaving the router's pool while Redis is paused and rejoining without a
# restart, an idle keep-alive connection reused after 91 s (longer than the router's 90 s), and the
# demo's negative case (SESSION_STORE=memory scatters the counts). It ends with peak memory
# and log volume per instance.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MANIFEST=${CF_LOCAL_MANIFEST:-manifest.yml}
readonly LOADS=20
# Diego sends SIGKILL this long after SIGTERM.
readonly STOP_GRACE_SECONDS=10
# Liveness poll interval once an instance runs. Diego's default is 30 s; faster here, so that
# a hung instance is replaced within the test.
readonly CHECK_INTERVAL=1
# Consecutive crashes before the stand-in gives up on an instance (Diego backs off instead).
readonly MAX_CRASHES=3
# Just past the gorouter's 90 s idle timeout for back-end connections.
readonly KEEPALIVE_IDLE=91
readonly WRK_SECONDS=30
readonly WRK_CONNECTIONS=256

work=""
cgroot=""
redis_pid=""
haproxy_pid=""
client_pid=""
keepalive_pid=""
declare -a sup_pids=() app_ports=()

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
    for f in "$work"/instance-*/stdout.log "$work"/instance-*/events "$work"/haproxy.log "$work"/redis.log "$work"/keepalive.txt; do
        [[ -f "$f" ]] || continue
        printf '\n--- last 20 lines of %s ---\n' "${f#"$work"/}" >&2
        tail -n 20 "$f" >&2 || true
    done
}

# Whether a process has exited. A child stays a zombie until reaped, and kill -0 succeeds on
# zombies, so the process state is what tells.
exited() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ "$stat" == Z* ]]
}

# Stops one of our helper processes, bounded: cleanup must never hang.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + STOP_GRACE_SECONDS + 3))
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

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    ((rc == 0)) || show_logs
    stop_pid "$client_pid"
    stop_pid "$keepalive_pid"
    local pid
    # All supervisors at once: each stops its instance within the 10 s grace.
    for pid in "${sup_pids[@]}"; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${sup_pids[@]}"; do
        stop_pid "$pid"
    done
    stop_pid "$haproxy_pid"
    stop_pid "$redis_pid"
    if [[ -n "$cgroot" && -d "$cgroot" ]]; then
        rmdir "$cgroot"/instance-* "$cgroot" 2>/dev/null || log "cf-local: could not remove the cgroup $cgroot"
    fi
    [[ -n "$work" && -z "${CF_LOCAL_KEEP:-}" ]] && rm -rf "$work"
    if ((rc == 0)); then
        printf '\nPASS: ci/cf-local.sh (%ds)\n' "$SECONDS"
    else
        printf '\nFAIL: ci/cf-local.sh (exit %d after %ds)\n' "$rc" "$SECONDS" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed: $2"
}

# Random ports below the kernel's ephemeral range, so no outgoing connection can sit on an
# instance's port while it restarts. Each is proven bindable, and all are held at once so they
# are distinct. 6379 is excluded so that a developer's own Redis is never touched.
free_ports() {
    "$py" - "$1" <<'PY'
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
PY
}

new_guid() { cat /proc/sys/kernel/random/uuid; }

# Polls a command until it succeeds or the deadline passes.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after ${seconds}s waiting for $what"
        sleep 0.1
    done
}

# --- the platform side: cgroups, instances, supervisors ---------------------------------

# A memory cgroup per instance, under one parent for this run. cgroup v1: nested in this
# script's own memory cgroup; v2: at the root, the only place a v2 cgroup with processes of
# its own may delegate the memory controller.
setup_cgroups() {
    local own mount
    if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
        cgversion=1
        own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
        cgroot="/sys/fs/cgroup/memory${own%/}/cf-local.$$"
    else
        for mount in /sys/fs/cgroup /sys/fs/cgroup/unified; do
            if grep -qw memory "$mount/cgroup.controllers" 2>/dev/null; then
                cgversion=2
                cgroot="$mount/cf-local.$$"
                grep -qw memory "$mount/cgroup.subtree_control" ||
                    echo +memory >"$mount/cgroup.subtree_control" 2>/dev/null ||
                    fail "cannot enable the memory controller in $mount/cgroup.subtree_control"
                break
            fi
        done
    fi
    [[ -n "$cgroot" ]] || fail "no memory cgroup controller: neither cgroup v1 (/sys/fs/cgroup/memory) nor v2 with memory in cgroup.controllers. Each instance must run under the manifest's memory limit"
    if ! mkdir "$cgroot" 2>/dev/null; then
        local wanted=$cgroot
        cgroot=""
        fail "cannot create the memory cgroup $wanted; run as root on a writable cgroup filesystem (v1 memory controller, or v2 with memory enabled)"
    fi
    if ((cgversion == 2)); then
        echo +memory >"$cgroot/cgroup.subtree_control" || fail "cannot enable memory for the children of $cgroot"
    fi
    log "memory cgroups (v$cgversion) under $cgroot, limit $m_memory_mb MiB each"
}

# Makes instance i's cgroup and sets its limit to the manifest's memory, without swap as on
# the platform.
make_cgroup() {
    local cg="$cgroot/instance-$1" got
    mkdir "$cg" || fail "cannot create the cgroup $cg"
    if ((cgversion == 1)); then
        echo "$m_memory_bytes" >"$cg/memory.limit_in_bytes" || fail "cannot set $cg/memory.limit_in_bytes"
        [[ -f "$cg/memory.memsw.limit_in_bytes" ]] && echo "$m_memory_bytes" >"$cg/memory.memsw.limit_in_bytes"
        got=$(cat "$cg/memory.limit_in_bytes")
    else
        echo "$m_memory_bytes" >"$cg/memory.max" || fail "cannot set $cg/memory.max"
        [[ -f "$cg/memory.swap.max" ]] && echo 0 >"$cg/memory.swap.max"
        got=$(cat "$cg/memory.max")
    fi
    ((got == m_memory_bytes)) || fail "the cgroup $cg took limit $got, not $m_memory_bytes"
    printf '%s\n' "$cg" >"$work/instance-$1/cgroup.path"
}

cg_procs() { cat "$1/cgroup.procs" 2>/dev/null; }

# The platform's liveness check, with the manifest's type, endpoint and invocation timeout.
live() {
    local port=$1 pid=$2
    exited "$pid" && return 1
    case $m_liveness_type in
    http) [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time "$m_liveness_timeout" \
        "http://127.0.0.1:$port$m_liveness_endpoint" 2>/dev/null)" == 200 ]] ;;
    port) timeout "$m_liveness_timeout" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null ;;
    process) true ;;
    esac
}

# Diego's part for one instance: start the container, health-check it, replace it when it
# crashes or fails liveness, and stop it (SIGTERM, SIGKILL after 10 s) when told to with
# SIGTERM. Extra arguments are environment variables for this instance (`cf set-env`).
# Files in the instance directory: pid, state (starting|running|stopped|crashed), exits (one
# exit status per stop) and events.
supervise() {
    set +e
    local i=$1
    shift
    local dir="$work/instance-$i" port=${app_ports[$i]}
    local cg stopping="" signalled="" app_pid="" reason crashes=0 state deadline rc guid
    cg=$(cat "$dir/cgroup.path")
    trap 'stopping=1 signalled=1' TERM
    while :; do
        # A fresh copy of the package per start, as Diego unpacks the droplet per container.
        rm -rf "$dir/app" "$dir/tmp"
        mkdir -p "$dir/app" "$dir/tmp"
        cp -a "$m_app_path/." "$dir/app/"
        guid=$(new_guid)
        local vcap_application
        vcap_application=$("$py" ci/cf_local.py vcap-application "$m_name" "$i" "$guid" "$port" "$m_memory_mb" "$m_disk_mb")
        # The pipe's reader (cat) is forked before the subshell joins the cgroup, so the log
        # is written from outside it, as the platform's log agent reads a container's stdout.
        # Diego gives each container a network namespace of its own, where every instance can
        # bind the metrics' default 9090; here they share one, so the listener is off and
        # ci/metrics-e2e.sh covers the metrics.
        (
            echo "$BASHPID" >"$cg/cgroup.procs" || exit 125
            cd "$dir/app" || exit 126
            exec env -i \
                PATH=/usr/local/bin:/usr/bin:/bin \
                HOME="$dir" TMPDIR="$dir/tmp" LANG=en_US.UTF-8 \
                PORT="$port" METRICS_PORT=off \
                VCAP_APPLICATION="$vcap_application" \
                VCAP_SERVICES="$vcap_services" \
                CF_INSTANCE_INDEX="$i" CF_INSTANCE_GUID="$guid" \
                CF_INSTANCE_IP=127.0.0.1 CF_INSTANCE_PORT="$port" CF_INSTANCE_ADDR="127.0.0.1:$port" \
                INSTANCE_INDEX="$i" INSTANCE_GUID="$guid" MEMORY_LIMIT="${m_memory_mb}m" \
                "${m_env[@]}" "$@" \
                bash -c "$m_web_command"
        ) </dev/null > >(exec cat >>"$dir/stdout.log") 2>&1 &
        app_pid=$!
        echo "$app_pid" >"$dir/pid"
        echo starting >"$dir/state"
        printf '%s start pid %s guid %s %s\n' "$(date +%T)" "$app_pid" "$guid" "$*" >>"$dir/events"
        state=starting
        deadline=$((SECONDS + m_start_timeout))
        reason=""
        while [[ -z "$stopping" ]]; do
            if live "$port" "$app_pid"; then
                if [[ $state == starting ]]; then
                    state=running
                    echo running >"$dir/state"
                    crashes=0
                fi
            elif exited "$app_pid"; then
                reason="exited"
                break
            elif [[ $state == running ]]; then
                reason="failed its liveness check"
                break
            elif ((SECONDS >= deadline)); then
                reason="did not pass its liveness check within ${m_start_timeout}s"
                break
            fi
            # `wait` returns at once when SIGTERM arrives; `sleep` alone would finish first.
            if [[ $state == running ]]; then sleep "$CHECK_INTERVAL" & else sleep 0.2 & fi
            wait $!
        done
        # Peak resident set of this run, beside the cgroup's figure (which leaves out the
        # binary's file pages: the copy was made from outside the cgroup).
        sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$app_pid/status" >>"$dir/hwm" 2>/dev/null
        # Stop the container: SIGTERM to every process in it, SIGKILL after the grace period.
        kill -TERM $(cg_procs "$cg") 2>/dev/null
        local until_us=$((${EPOCHREALTIME/./} + STOP_GRACE_SECONDS * 1000000))
        while [[ -n "$(cg_procs "$cg")" ]] && ((${EPOCHREALTIME/./} < until_us)); do
            sleep 0.05
        done
        if [[ -n "$(cg_procs "$cg")" ]]; then
            printf '%s SIGKILL after %ss: %s\n' "$(date +%T)" "$STOP_GRACE_SECONDS" "$(cg_procs "$cg" | tr '\n' ' ')" >>"$dir/events"
            kill -KILL $(cg_procs "$cg") 2>/dev/null
        fi
        # A SIGTERM for this supervisor interrupts `wait` with 143 before the instance's own
        # status is in; asking again gets it (bash keeps the status of a reaped child).
        while :; do
            signalled=""
            wait "$app_pid"
            rc=$?
            if [[ -z "$signalled" ]] || ((rc <= 128)); then break; fi
        done
        echo "$rc" >>"$dir/exits"
        if [[ -n "$stopping" ]]; then
            printf '%s stopped, exit %s\n' "$(date +%T)" "$rc" >>"$dir/events"
            echo stopped >"$dir/state"
            exit 0
        fi
        crashes=$((crashes + 1))
        printf '%s crashed: %s (exit %s), crash %d\n' "$(date +%T)" "$reason" "$rc" "$crashes" >>"$dir/events"
        if ((crashes >= MAX_CRASHES)); then
            echo crashed >"$dir/state"
            exit 1
        fi
    done
}

start_instance() {
    local i=$1
    shift
    mkdir -p "$work/instance-$i"
    [[ -f "$work/instance-$i/cgroup.path" ]] || make_cgroup "$i"
    : >"$work/instance-$i/state"
    # The supervisor's own stderr (bash job notices such as "Killed") goes to the events.
    supervise "$i" "$@" 2>>"$work/instance-$i/events" &
    sup_pids[i]=$!
}

# SIGTERM to the supervisor stops the instance, once: a second one could cut short the
# supervisor's own wait for the instance's exit status.
signal_instance() { kill -TERM "${sup_pids[$1]}" 2>/dev/null || true; }

# Draining must end in exit 0 within the grace period (137 would mean it needed SIGKILL).
reap_instance() {
    local i=$1 rc
    wait "${sup_pids[$i]}" || fail "the supervisor of instance $i failed"
    sup_pids[i]=""
    rc=$(tail -n 1 "$work/instance-$i/exits")
    ((rc == 0)) || fail "instance $i exited with status $rc after SIGTERM (137: killed after the grace period)"
}

instance_state() { cat "$work/instance-$1/state" 2>/dev/null; }

# Running (liveness passed) and ready; an instance that crashed for good fails at once.
instance_ready() {
    local state
    state=$(instance_state "$1")
    [[ $state != crashed ]] || fail "instance $1 crashed $MAX_CRASHES times in a row: $(tail -n 3 "$work/instance-$1/events")"
    [[ $state == running ]] || return 1
    [[ $m_readiness_type != http ]] && return 0
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time "$m_readiness_timeout" "http://127.0.0.1:${app_ports[$1]}$m_readiness_endpoint" 2>/dev/null)" == 200 ]]
}

# /api/session reads without creating a session, so probing it leaves no trace in Redis.
router_reaches() {
    local want=$1 tries body
    for ((tries = 0; tries < 2 * m_instances; tries++)); do
        body=$(curl -s --max-time 2 "$router/api/session" 2>/dev/null) || continue
        [[ "$body" =~ \"instance_index\":([0-9]+) ]] || continue
        [[ "${BASH_REMATCH[1]}" == "$want" ]] && return 0
    done
    return 1
}

stop_instance() {
    signal_instance "$1"
    reap_instance "$1"
}

stop_all() {
    local i
    for ((i = 0; i < m_instances; i++)); do
        signal_instance "$i"
    done
    for ((i = 0; i < m_instances; i++)); do
        reap_instance "$i"
    done
}

start_all() {
    local i
    for ((i = 0; i < m_instances; i++)); do
        start_instance "$i" "$@"
    done
    for ((i = 0; i < m_instances; i++)); do
        wait_for "instance $i to be running and ready" $((m_start_timeout + 5)) instance_ready "$i"
    done
    for ((i = 0; i < m_instances; i++)); do
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
need wrk "install it (Debian/Ubuntu: apt-get install wrk)"
py=""
for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import yaml' 2>/dev/null; then
        py=$candidate
        break
    fi
done
[[ -n "$py" ]] || fail "python3 with PyYAML is required (Debian/Ubuntu: apt-get install python3-yaml)"
work=$(mktemp -d "${TMPDIR:-/tmp}/cf-local.XXXXXX")

# --- the manifest checks must be able to fail --------------------------------------------
section "Manifest self-checks"
# Expects the parser to refuse a manifest, with a message naming the problem.
refuses() {
    local what=$1 manifest=$2 expected=$3 out
    if out=$("$py" ci/cf_local.py manifest "$manifest" 2>&1); then
        fail "the manifest check accepted $what"
    fi
    [[ "$out" == *"$expected"* ]] || fail "the manifest check refused $what, but said: $out"
    pass "refused $what: ${out#*: }"
}
mkdir "$work/self-check"
sed 's/^\( *\)health-check-type:/\1health-check-typo:/' "$MANIFEST" >"$work/self-check/typo.yml"
refuses "a misspelt key" "$work/self-check/typo.yml" "health-check-typo"
sed 's|^\( *path:\).*|\1 target/no-such-package|' "$MANIFEST" >"$work/self-check/path.yml"
refuses "a path: that does not exist" "$work/self-check/path.yml" "no-such-package"
# A package whose Procfile names a program that is not in it.
mkdir "$work/self-check/package"
printf 'web: ./redis-sessions\n' >"$work/self-check/package/Procfile"
sed "s|^\( *path:\).*|\1 $work/self-check/package|" "$MANIFEST" >"$work/self-check/command.yml"
refuses "a Procfile command missing from the package" "$work/self-check/command.yml" "not an executable file"
if [[ -f manifest-cnb.yml ]]; then
    "$py" ci/cf_local.py manifest --check-only manifest-cnb.yml >/dev/null || fail "manifest-cnb.yml has errors"
    pass "manifest-cnb.yml: keys and values check out (its package is built on the platform)"
fi

section "Package (ci/package.sh)"
bash ci/package.sh

section "Manifest $MANIFEST"
spec=$("$py" ci/cf_local.py manifest "$MANIFEST") || fail "$MANIFEST cannot be run as written"
eval "$spec"
log "app $m_name: $m_instances instances of $m_memory_mb MiB from $m_app_path (stack $m_stack, buildpacks $m_buildpacks)"
log "web: $m_web_command"
log "liveness: $m_liveness_type $m_liveness_endpoint (timeout ${m_liveness_timeout}s, start timeout ${m_start_timeout}s); readiness: $m_readiness_type $m_readiness_endpoint (timeout ${m_readiness_timeout}s)"
log "env: ${m_env[*]:-none}; services: ${m_services[*]:-none}; log-rate-limit-per-second: $m_log_rate_limit B"
((m_instances >= 2)) || fail "Test 1 needs at least 2 instances to show sessions crossing instances"

setup_cgroups

# The instances of the pool, then one more outside it: the keep-alive probe's. The pool is
# restarted several times below, which would close any connection held to one of its members.
probe=$m_instances
read -r -a ports <<<"$(free_ports $((m_instances + 3)))"
redis_port=${ports[0]}
haproxy_port=${ports[1]}
app_ports=("${ports[@]:2}")
router="http://127.0.0.1:$haproxy_port"

section "Redis (the manifest's services: ${m_services[*]})"
redis_password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
# Neither snapshots nor an AOF: nothing of this run may outlive it.
redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$redis_password" \
    --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" </dev/null &
redis_pid=$!
redis_ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" --no-auth-warning -a "$redis_password" ping 2>/dev/null)" == PONG ]]
}
wait_for "redis-server on port $redis_port" 10 redis_ping
vcap_services=$("$py" ci/cf_local.py vcap-services 127.0.0.1 "$redis_port" "$redis_password" "${m_services[@]}")
log "redis-server pid $redis_pid on 127.0.0.1:$redis_port, bound as ${m_services[*]}"

section "Router (HAProxy, readiness checks on $m_readiness_endpoint)"
{
    cat <<CFG
global
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    # Only requests with an error, a retry or a redispatch: the wrk load would log millions.
    option dontlog-normal
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout check ${m_readiness_timeout}s
    # Like the gorouter, a connection refused by a stopping instance is retried on another.
    # A draining instance answers every request it read, so replaying is safe here.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend web
    bind 127.0.0.1:$haproxy_port
    # One id per request, kept when the request is replayed on another instance, as the
    # gorouter's X-Vcap-Request-Id; the app logs it on its access line.
    unique-id-format %[uuid()]
    http-request set-header X-Vcap-Request-Id %[unique-id]
    default_backend app

backend app
    balance roundrobin
CFG
    if [[ $m_readiness_type == http ]]; then
        printf '    option httpchk GET %s\n    http-check expect status 200\n' "$m_readiness_endpoint"
    fi
    printf '    default-server inter 300ms fall 1 rise 1\n'
    for ((i = 0; i < m_instances; i++)); do
        printf '    server app%d 127.0.0.1:%d check\n' "$i" "${app_ports[i]}"
    done
} >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg" || fail "HAProxy refused the generated configuration"
haproxy -db -f "$work/haproxy.cfg" </dev/null >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
log "haproxy pid $haproxy_pid on $router -> ports ${app_ports[*]:0:m_instances}"

section "Start $m_instances instances, and the keep-alive probe's instance $probe outside the pool"
start_instance "$probe"
start_all
wait_for "instance $probe to be running and ready" $((m_start_timeout + 5)) instance_ready "$probe"
log "instances running: supervisors ${sup_pids[*]}"

# Runs in the background while everything below happens, so it costs no wall time.
"$py" ci/cf_local.py keepalive 127.0.0.1 "${app_ports[probe]}" "$KEEPALIVE_IDLE" >"$work/keepalive.txt" 2>&1 &
keepalive_pid=$!
log "keep-alive probe (pid $keepalive_pid) holds an idle connection to instance $probe for ${KEEPALIVE_IDLE}s"

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
((${#seen[@]} == m_instances)) || fail "Test 1: responses came from instances ${!seen[*]} only, expected all $m_instances"
pass "Test 1: visits 1..$LOADS in order, served by instances ${!seen[*]}"

# --- Test 2 ----------------------------------------------------------------------------
section "Test 2: stop all instances (SIGTERM) and start them again"
stop_all
pass "Test 2: all $m_instances instances exited 0 after SIGTERM"
start_all
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
for ((i = 0; i < m_instances; i++)); do
    before=$(wc -l <"$counts_file")
    stop_instance "$i"
    start_instance "$i"
    wait_for "instance $i to be running and ready after its restart" $((m_start_timeout + 5)) instance_ready "$i"
    wait_for "HAProxy to route to instance $i again" 10 router_reaches "$i"
    wait_for "the client to be served by the restarted instance $i" 10 client_served_by "$i" "$before"
    log "instance $i restarted and served the client; $(wc -l <"$counts_file") requests so far"
done
touch "$stop_file"
wait "$client_pid" || true
client_pid=""

requests=$(wc -l <"$counts_file")
failed=$(wc -l <"$failures_file")
# With dontlog-normal, HAProxy logs only requests it had to retry or redispatch.
retried=$(tail -n "+$((haproxy_log_before + 1))" "$work/haproxy.log" | grep -c '"GET ' || true)
log "requests during the rolling restart: $requests ($failed failed, $retried retried by HAProxy on another instance)"
if ((failed > 0)); then
    head -n 20 "$failures_file" >&2
    fail "Rolling restart: $failed requests failed during the rolling restart"
fi
bad=$(awk -v prev="$last" '{ if ($2 != prev + 1) { printf "after %d came %d (instance %d) at request %d\n", prev, $2, $1, NR } prev = $2 }' "$counts_file")
if [[ -n "$bad" ]]; then
    printf '%s\n' "$bad" | head -n 20 >&2
    echo "requests that reached more than one instance (router replays):" >&2
    "$py" ci/cf_local.py replays "$work"/instance-* >&2
    fail "Rolling restart: counts were not consecutive (a count was lost or repeated)"
fi
last=$(tail -n 1 "$counts_file" | cut -d' ' -f2)
rolling_instances=$(cut -d' ' -f1 "$counts_file" | sort -u | tr '\n' ' ')
pass "Rolling restart: $requests requests, none failed, counts $((LOADS + 2))..$last consecutive (instances seen: ${rolling_instances% })"

# --- Load ------------------------------------------------------------------------------
section "Load: wrk, $WRK_CONNECTIONS connections for ${WRK_SECONDS}s on / with one session"
cookie=$(awk 'NF >= 7 { c = $6 "=" $7 } END { print c }' "$jar")
[[ -n "$cookie" ]] || fail "no session cookie in the jar"
cat >"$work/summary.lua" <<'LUA'
-- One line for the script: completed requests, non-2xx answers, socket errors, p99 in ms.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk-summary %d %d %d %.2f\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(99) / 1000))
end
LUA
load_start=$EPOCHREALTIME
wrk -t1 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" --timeout 10s -H "Cookie: $cookie" \
    -s "$work/summary.lua" "$router/" >"$work/wrk.txt" 2>&1 || { cat "$work/wrk.txt"; fail "wrk failed"; }
load_end=$EPOCHREALTIME
read -r _ wrk_requests wrk_non2xx wrk_errors wrk_p99 < <(grep '^wrk-summary ' "$work/wrk.txt")
grep -E 'Requests/sec|Latency' "$work/wrk.txt"
((wrk_non2xx == 0 && wrk_errors == 0)) || fail "Load: $wrk_non2xx non-2xx answers and $wrk_errors socket errors out of $wrk_requests"
line=$(load_page "$jar") || fail "the page load after the load failed"
read -r inst visits <<<"$line"
# wrk counts completed responses; requests still in flight at its deadline may have counted
# too, at most one per connection.
counted=$((visits - 1 - last))
((counted >= wrk_requests && counted <= wrk_requests + WRK_CONNECTIONS)) ||
    fail "Load: the count went up by $counted for $wrk_requests answered requests"
pass "Load: $wrk_requests requests, none failed, p99 $wrk_p99 ms; the count went up by $counted"
last=$visits
for ((i = 0; i <= m_instances; i++)); do
    [[ $(instance_state "$i") == running ]] || fail "instance $i is $(instance_state "$i") after the load"
done

# --- Liveness --------------------------------------------------------------------------
hung=$((m_instances - 1))
section "Liveness: instance $hung hangs (SIGSTOP) and is replaced"
old_pid=$(cat "$work/instance-$hung/pid")
kill -STOP "$old_pid"
replaced() { [[ "$(cat "$work/instance-$hung/pid")" != "$old_pid" ]]; }
wait_for "the supervisor to replace the hung instance $hung" $((CHECK_INTERVAL + m_liveness_timeout + STOP_GRACE_SECONDS + 10)) replaced
wait_for "instance $hung to be running and ready again" $((m_start_timeout + 5)) instance_ready "$hung"
wait_for "HAProxy to route to instance $hung again" 10 router_reaches "$hung"
rc=$(tail -n 1 "$work/instance-$hung/exits")
((rc == 137)) || fail "Liveness: the hung instance ended with status $rc, expected 137 (SIGKILL after the grace period)"
pass "Liveness: $(grep crashed "$work/instance-$hung/events" | tail -n 1 | cut -d' ' -f2-); SIGKILL after ${STOP_GRACE_SECONDS}s, restarted"

# --- Readiness -------------------------------------------------------------------------
section "Readiness: Redis pauses (SIGSTOP), every instance leaves the pool, then returns"
declare -a pids_before=()
for ((i = 0; i < m_instances; i++)); do
    pids_before[i]=$(cat "$work/instance-$i/pid")
done
kill -STOP "$redis_pid"
# /health never touches Redis: while any instance is in the pool it answers 200, so a 503
# here is the router's own answer for a route with no back end left.
router_has_none() {
    [[ "$(curl -s -o "$work/outage.html" -w '%{http_code}' --max-time 5 "$router/health")" == 503 ]] &&
        ! grep -q '"status"' "$work/outage.html"
}
wait_for "HAProxy to take every unready instance out of the pool" 15 router_has_none
outage_page=$(sed 's/<[^>]*>//g' "$work/outage.html" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
kill -CONT "$redis_pid"
for ((i = 0; i < m_instances; i++)); do
    wait_for "instance $i to be ready again" 15 instance_ready "$i"
    wait_for "HAProxy to route to instance $i again" 10 router_reaches "$i"
    [[ "$(cat "$work/instance-$i/pid")" == "${pids_before[i]}" ]] || fail "Readiness: instance $i was restarted during the Redis outage"
done
line=$(load_page "$jar") || fail "the page load after the Redis outage failed"
read -r inst visits <<<"$line"
((visits == last + 1)) || fail "Readiness: the count after the outage was $visits, expected $((last + 1))"
last=$visits
pass "Readiness: with Redis paused the router answered itself (\"$outage_page\"); after it resumed all $m_instances instances rejoined without a restart and the count went on ($visits)"

# --- Negative case ---------------------------------------------------------------------
section "Negative case: SESSION_STORE=memory, no Redis"
stop_all
# Stopping Redis shows the memory store needs none, and that nothing below can reach it.
stop_pid "$redis_pid"
redis_pid=""
start_all SESSION_STORE=memory
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

# --- Keep-alive ------------------------------------------------------------------------
section "Keep-alive past the router's idle timeout"
wait "$keepalive_pid" || {
    keepalive_pid=""
    cat "$work/keepalive.txt" >&2
    fail "Keep-alive: the idle connection was not reusable after ${KEEPALIVE_IDLE}s"
}
keepalive_pid=""
cat "$work/keepalive.txt"
stop_instance "$probe"

# --- Report ----------------------------------------------------------------------------
section "Memory and logs per instance (cgroup limit = manifest memory: $m_memory_mb MiB)"
dirs=()
for ((i = 0; i <= m_instances; i++)); do
    dirs+=("$work/instance-$i")
done
"$py" ci/cf_local.py report --limit "$m_log_rate_limit" \
    --window "${load_start}" "${load_end}" "${dirs[@]}" || fail "an instance went over its memory limit"
log "(instance $probe is the keep-alive probe's, outside the router's pool; 'log B/s under load' is the wrk window)"

#!/usr/bin/env bash
# Benchmarks redis-sessions side by side with two peers that do the same job (a visit counter
# in a Redis-backed session): Express + express-session + connect-redis, and actix-session's
# RedisSessionStore. The peers are ours, under ci/bench/peers/ (see its README); this script
# installs and builds them from their lock files. Everything runs on this machine against a
# Redis started here.
#
# Usage: ci/bench.sh [-h]          (about 11 minutes with the defaults)
#
# Environment (all optional):
#   BENCH_DURATION     wrk duration of each run, whole seconds: 10s (default), 10 or 1m
#   BENCH_ROUNDS       rounds over all servers, interleaved; medians are reported (default 2)
#   BENCH_CONNECTIONS  wrk connection counts (default "32 256")
#   BENCH_TAIL         seconds at the end of each run in which no request starts (default 1)
#   BENCH_SCALING      sessions pre-loaded into Redis for the scaling runs
#                      (default "1000 100000 1000000")
#   BENCH_SERVERS      servers to run (default "ours ours-nometrics ours-cluster express1
#                      express2 actix-pool actix-manager"); ours serves Prometheus metrics on a
#                      METRICS_PORT of its own, ours-nometrics is the same binary with
#                      METRICS_PORT=off, so the report can state what the metrics cost, and
#                      ours-cluster is ours on a Redis Cluster of 3 primaries and 3 replicas
#                      started here (REDIS_MODE=cluster)
#   BENCH_REV          a commit to measure instead of the working tree (e.g. HEAD); it is
#                      exported with git archive and built under target/bench/rev/
#   BENCH_MAX_OTHER    other processes' CPU use, in % of a core, above which the machine counts
#                      as busy: runs wait for it to calm down, and a run disturbed anyway is
#                      repeated, up to twice (default 12)
#   BENCH_QUIET_WAIT   longest wait, in seconds, for a busy machine to calm down before one run
#                      (default 120); after 900 s of waiting in all, runs no longer wait
#
# Prints a Markdown report and writes it to target/bench/results.md, with a chart of req/s and
# p99 beside it (results.svg); ci/bench/report.py does the parsing, statistics, report and
# chart, in a venv under target/bench/ (matplotlib, pinned in ci/bench/requirements.txt). Raw
# data (one TSV row per wrk run, wrk outputs, server logs) stays under target/bench/. Exit status: 0 when the
# benchmark ran, whatever the targets say (it informs people, it does not gate CI);
# non-zero when it could not run.
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/ci/bench
OUT=$ROOT/target/bench
RUNS=$OUT/runs
LOGS=$OUT/logs
TSV=$OUT/runs.tsv
RESULTS=$OUT/results.md
LUA=$BENCH_DIR/counter.lua
PEERS_SRC=$BENCH_DIR/peers
PEERS=$OUT/peers

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32 256}
TAIL=${BENCH_TAIL:-1}
SCALING=${BENCH_SCALING:-1000 100000 1000000}
SERVERS=${BENCH_SERVERS:-ours ours-nometrics ours-cluster express1 express2 actix-pool actix-manager}
# Undisturbed runs here show 0-8% (kernel threads and softirqs the load itself causes, more at
# 256 connections); a run at 15% served a quarter fewer requests than its repeat, and with two
# rounds one such run moves a median halfway.
MAX_OTHER=${BENCH_MAX_OTHER:-12}
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}
QUIET_BUDGET=900
# Large enough that per-key overhead dominates the dictionary's fixed cost, small enough to
# create in seconds even through the slowest peer.
MEMORY_SESSIONS=10000

die() { echo "bench.sh: $*" >&2; exit 1; }
note() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

case "$DURATION" in
  *[!0-9smh]* | "") die "BENCH_DURATION must look like 10s, 10 or 1m, not '$DURATION'" ;;
  *m) DUR_S=$(( ${DURATION%m} * 60 )) ;;
  *h) DUR_S=$(( ${DURATION%h} * 3600 )) ;;
  *s) DUR_S=${DURATION%s} ;;
  *) DUR_S=$DURATION ;;
esac
[[ $DUR_S =~ ^[0-9]+$ && $DUR_S -ge 2 ]] || die "BENCH_DURATION must be at least 2 seconds"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
awk -v t="$TAIL" -v d="$DUR_S" 'BEGIN { exit !(t + 0 > 0 && t + 0 < d / 2) }' \
  || die "BENCH_TAIL must be above 0 and below half of BENCH_DURATION"
[[ $MAX_OTHER =~ ^[0-9]+$ ]] || die "BENCH_MAX_OTHER must be a whole percentage"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a whole number of seconds"
for c in $CONNECTIONS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "bad connection count '$c'"; done
for n in $SCALING; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "bad BENCH_SCALING entry '$n'"; done
for s in $SERVERS; do
  case "$s" in ours | ours-nometrics | ours-cluster | express1 | express2 | actix-pool | actix-manager) ;; *) die "unknown server '$s'" ;; esac
done

# --- Tools --------------------------------------------------------------------------------
need() {
  command -v "$1" >/dev/null || die "$1 not found: $2"
}
need wrk "install it (Debian/Ubuntu: apt-get install wrk)"
need redis-server "install Redis (Debian/Ubuntu: apt-get install redis-server)"
need redis-cli "install Redis (Debian/Ubuntu: apt-get install redis-tools)"
need redis-benchmark "install Redis (Debian/Ubuntu: apt-get install redis-tools)"
need curl "install curl"
need cargo "install a Rust toolchain"
need sha1sum "install coreutils"
if [[ " $SERVERS " == *" express"* ]]; then
  need node "install Node.js 20 or newer"
  need npm "install npm"
fi
# The tail works by parking connections, which needs wrk's Lua API (wrk 4).
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)
[[ $WRK_VERSION == *" "*4.* ]] || die "wrk 4.x is needed (found: '$WRK_VERSION')"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT" "$RUNS" "$LOGS"
rm -f "$RUNS"/* "$LOGS"/*
need python3 "install Python 3 (Debian/Ubuntu: apt-get install python3 python3-venv)"

# Parsing, medians, the report and the chart are ci/bench/report.py's, with matplotlib
# pinned in ci/bench/requirements.txt.
# shellcheck source=ci/venv.sh
source "$ROOT/ci/venv.sh"
ensure_venv "$OUT/venv" "$BENCH_DIR/requirements.txt" || die "could not install $BENCH_DIR/requirements.txt"
REPORT=("$OUT/venv/bin/python" "$BENCH_DIR/report.py")


# --- Build ---------------------------------------------------------------------------------
if [ -n "${BENCH_REV:-}" ]; then
  # An export, so that a commit can be measured while the working tree is being edited.
  commit=$(git -C "$ROOT" rev-parse --verify --quiet "${BENCH_REV}^{commit}") || die "BENCH_REV '$BENCH_REV' is not a commit"
  REVISION=$(git -C "$ROOT" rev-parse --short "$commit")
  OURS_SRC=$OUT/rev/src-$REVISION
  if [ ! -f "$OURS_SRC/Cargo.toml" ]; then
    rm -rf "$OURS_SRC" && mkdir -p "$OURS_SRC"
    git -C "$ROOT" archive "$commit" | tar -x -C "$OURS_SRC" || die "git archive of $REVISION failed"
  fi
  note "building redis-sessions at $REVISION (release)"
  # One target dir for every exported revision, so dependencies are compiled once.
  (cd "$OURS_SRC" && CARGO_TARGET_DIR=$OUT/rev/target cargo build --release --quiet) || die "cargo build --release of $REVISION failed"
  OURS_BIN=$OUT/rev/target/release/redis-sessions
else
  OURS_SRC=$ROOT
  REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    REVISION+=" with uncommitted changes to src/ or Cargo files"
  fi
  note "building redis-sessions (release)"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  OURS_BIN=$ROOT/target/release/redis-sessions
fi
[ -x "$OURS_BIN" ] || die "no $OURS_BIN after the build"
# Commands that our Lua scripts run inside Redis: commandstats counts them like any other,
# but they cost no round trip. Read from the source, so a changed script is followed. The
# store's transaction (HSET and EXPIRE between MULTI and EXEC) uses only commands that
# apply.lua calls too, so they are in this list as well; the DUMP that each worker's first
# one carries (src/session/store/redis/template.rs) happens in the warm-up, before any run.
OURS_INNER=$(grep -rho --include='*.rs' --include='*.lua' "redis\.p\{0,1\}call(['\"][A-Za-z]*['\"]" "$OURS_SRC/src/session/store" 2>/dev/null \
  | sed "s/.*(['\"]//; s/['\"]\$//" | tr '[:upper:]' '[:lower:]' | sort -u | tr '\n' ' ' || true)
[ -n "$OURS_INNER" ] || note "warning: no redis.call under src/session/store/; every command of ours counts as a round trip"

EXPRESS_DIR=$PEERS_SRC/express
if [[ " $SERVERS " == *" express"* ]]; then
  # npm ci wipes node_modules, so it runs only when the lock file changed since the last one.
  if ! cmp -s "$EXPRESS_DIR/package-lock.json" "$EXPRESS_DIR/node_modules/.bench-lock" 2>/dev/null; then
    note "npm ci (express peer)"
    (cd "$EXPRESS_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm-ci.log" 2>&1) \
      || die "npm ci failed, see $LOGS/npm-ci.log"
    cp "$EXPRESS_DIR/package-lock.json" "$EXPRESS_DIR/node_modules/.bench-lock"
  fi
fi
# The peer's build stays under target/, beside ours, rather than in the source tree.
ACTIX_TARGET=$PEERS/actix-session
if [[ " $SERVERS " == *" actix"* ]]; then
  note "building the actix-session peer (release)"
  CARGO_TARGET_DIR=$ACTIX_TARGET cargo build --release --locked --quiet \
    --manifest-path "$PEERS_SRC/actix-session/Cargo.toml" >"$LOGS/actix-build.log" 2>&1 \
    || die "building the actix-session peer failed, see $LOGS/actix-build.log"
fi
ACTIX_BIN=$ACTIX_TARGET/release/peer-actix-session

# --- Processes -----------------------------------------------------------------------------
STARTED=()   # every pid this script started, stopped on exit
cleanup() {
  local pid alive=()
  for pid in "${STARTED[@]}"; do
    kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; alive+=("$pid"); }
  done
  # Give graceful shutdowns (which close Redis connections) a moment, then insist.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local still=()
    for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
    alive=("${still[@]}")
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.3
  done
  for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  STARTED=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# A port nobody listens on; the kernel's ephemeral range is avoided so wrk's and curl's own
# sockets cannot collide with it, and 6379 is never used so a developer's Redis is safe.
TAKEN=" 6379 "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 12000 ))
    [[ $TAKEN == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      TAKEN+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

RPORT=$(free_port)
rcli() { redis-cli -p "$RPORT" "$@"; }
note "starting redis-server on 127.0.0.1:$RPORT"
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$LOGS/redis.log" &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
for _ in $(seq 50); do rcli PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
rcli PING 2>/dev/null | grep -q PONG || die "redis-server did not start, see $LOGS/redis.log"

# --- A Redis Cluster for ours-cluster: 3 primaries, 3 replicas ------------------------------
# Redis answers on PORT and gossips on PORT + 10000, so both must be free.
CLUSTER_PORTS=() CLUSTER_PIDS=() CLUSTER_PRIMARIES=()
cluster_port() {
  local p
  for _ in $(seq 50); do
    p=$(free_port)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
      TAKEN+="$((p + 10000)) "
      echo "$p"
      return 0
    fi
  done
  die "no free port pair for a cluster node"
}
if [[ " $SERVERS " == *" ours-cluster "* ]]; then
  for i in 1 2 3 4 5 6; do
    p=$(cluster_port)
    # The node keeps its cluster state in this file; a fresh one per run.
    rm -f "$LOGS/cluster-$p.conf"
    # --dir: a replica writes the RDB it syncs from its primary into its working directory.
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir "$LOGS" \
      --cluster-enabled yes --cluster-config-file "$LOGS/cluster-$p.conf" \
      --cluster-node-timeout 5000 --logfile "$LOGS/cluster-$p.log" &
    CLUSTER_PIDS+=("$!"); STARTED+=("$!"); CLUSTER_PORTS+=("$p")
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  done
  note "creating a Redis Cluster on ports ${CLUSTER_PORTS[*]}"
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-replicas 1 \
    --cluster-yes >"$LOGS/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed, see $LOGS/cluster-create.log"
  for _ in $(seq 100); do
    ok=0
    for p in "${CLUSTER_PORTS[@]}"; do
      redis-cli -p "$p" CLUSTER INFO | tr -d '\r' | grep -q '^cluster_state:ok' && ok=$((ok + 1))
    done
    [ "$ok" -eq 6 ] && break
    sleep 0.2
  done
  [ "$ok" -eq 6 ] || die "the cluster did not reach cluster_state:ok on every node"
  for p in "${CLUSTER_PORTS[@]}"; do
    redis-cli -p "$p" ROLE | head -n 1 | grep -q master && CLUSTER_PRIMARIES+=("$p")
  done
  [ "${#CLUSTER_PRIMARIES[@]}" -eq 3 ] || die "expected 3 cluster primaries, found ${#CLUSTER_PRIMARIES[@]}"
fi

# One secret for all servers: ours wants 48 characters, the peers accept any.
SECRET=$(head -c 36 /dev/urandom | base64 | tr '+/' '-_')

declare -A PORT_OF PIDS_OF LABEL MARKER
# Ours with or without its metrics: the same binary, measured the same way.
is_ours() { [ "$1" = ours ] || [ "$1" = ours-nometrics ] || [ "$1" = ours-cluster ]; }
LABEL[ours]="redis-sessions (ours)"
LABEL[ours-nometrics]="ours, METRICS_PORT=off"
LABEL[ours-cluster]="ours, Redis Cluster 3+3"
LABEL[express1]="express, 1 process"
LABEL[express2]="express, WORKERS=2"
LABEL[actix-pool]="actix-session, pool"
LABEL[actix-manager]="actix-session, manager"
MARKER[ours]='<span id="visits">'
MARKER[ours-nometrics]=${MARKER[ours]}
MARKER[ours-cluster]=${MARKER[ours]}
for s in express1 express2 actix-pool actix-manager; do MARKER[$s]='Visits: '; done

start_server() {
  local s=$1 port pid
  port=$(free_port)
  PORT_OF[$s]=$port
  # A clean environment, so no stray RUST_LOG, VCAP_SERVICES or pool setting changes a run;
  # ours keeps its default log filter so the measured cost includes its access log.
  local env_base=(env -i "PATH=$PATH" "HOME=${HOME:-/root}" "PORT=$port"
    "REDIS_URL=redis://127.0.0.1:$RPORT" "SESSION_SECRET=$SECRET")
  case "$s" in
    ours | ours-nometrics)
      # O_APPEND, so the log can be emptied between runs without a sparse hole. Nothing
      # scrapes the metrics during a run: recording is the cost, rendering happens per scrape.
      local metrics_port=off
      [ "$s" = ours ] && metrics_port=$(free_port)
      "${env_base[@]}" COOKIE_SECURE=false LOG_FORMAT=text "METRICS_PORT=$metrics_port" "$OURS_BIN" >>"$LOGS/$s.log" 2>&1 &
      pid=$! ;;
    ours-cluster)
      # The later REDIS_URL wins under env; the client discovers the other nodes from it.
      "${env_base[@]}" "REDIS_URL=redis://127.0.0.1:${CLUSTER_PORTS[0]}" REDIS_MODE=cluster \
        COOKIE_SECURE=false LOG_FORMAT=text "METRICS_PORT=$(free_port)" "$OURS_BIN" >>"$LOGS/$s.log" 2>&1 &
      pid=$! ;;
    express1 | express2)
      (cd "$EXPRESS_DIR" && exec "${env_base[@]}" "WORKERS=${s#express}" node server.js >"$LOGS/$s.log" 2>&1) &
      pid=$! ;;
    actix-pool | actix-manager)
      "${env_base[@]}" "REDIS_STORE=${s#actix-}" "$ACTIX_BIN" >"$LOGS/$s.log" 2>&1 &
      pid=$! ;;
  esac
  STARTED+=("$pid")
  PIDS_OF[$s]=$pid
  for _ in $(seq 100); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "$s exited at start-up, see $LOGS/$s.log"
    sleep 0.1
  done
  curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$port/health" || die "$s did not become healthy on :$port"
  if [ "$s" = express2 ]; then
    local kids
    for _ in $(seq 50); do
      kids=$(pgrep -P "$pid" | tr '\n' ' ')
      [ "$(wc -w <<<"$kids")" -ge 2 ] && break
      sleep 0.1
    done
    PIDS_OF[$s]="$pid $kids"
    for k in $kids; do STARTED+=("$k"); done
  fi
  # The contract check: two visits with one cookie jar show 1 then 2.
  local jar=$RUNS/smoke-$s.jar page
  curl -fsS --max-time 5 -c "$jar" -b "$jar" -o /dev/null "http://127.0.0.1:$port/" || die "$s: GET / failed"
  page=$(curl -fsS --max-time 5 -c "$jar" -b "$jar" "http://127.0.0.1:$port/") || die "$s: GET / failed"
  grep -qF "${MARKER[$s]}2" <<<"$page" || die "$s: the second visit did not show 2"
  is_ours "$s" && cp "$LOGS/$s.log" "$LOGS/$s-startup.log"
  note "started $s on :$port (pid ${PIDS_OF[$s]})"
}

for s in $SERVERS; do start_server "$s"; done

# Node's JIT and every server's lazily opened Redis connections would otherwise weigh on
# whichever run comes first.
note "warming up (2 s per server, not recorded)"
for s in $SERVERS; do
  wrk -t1 -c32 -d2s "http://127.0.0.1:${PORT_OF[$s]}/" >"$RUNS/warmup-$s.wrk" 2>&1 || die "wrk warm-up failed for $s"
done

# --- Measurement helpers -----------------------------------------------------------------
# CPU ticks (user + system) used so far by these pids, all threads included.
cpu_ticks() {
  local total=0 pid f fields
  for pid in "$@"; do
    f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    f=${f##*) }   # the command name may hold spaces; the fields after it are fixed
    read -ra fields <<<"$f"
    total=$(( total + fields[11] + fields[12] ))
  done
  echo "$total"
}

# Busy CPU ticks of the whole machine, steal included: what the processes above do not
# account for is someone else's load, which would make a run unrepresentative.
machine_busy() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# The Redis processes and ports that serve a server: the cluster's for ours-cluster. Command
# statistics come from the primaries (replicas replay effects, not our commands); CPU from
# every node, replication included. report.py adds the nodes' replies up.
redis_pids_of() { if [ "$1" = ours-cluster ]; then echo "${CLUSTER_PIDS[*]}"; else echo "$REDIS_PID"; fi; }
commandstats() {
  if [ "${1:-}" = ours-cluster ]; then
    for p in "${CLUSTER_PRIMARIES[@]}"; do redis-cli -p "$p" INFO commandstats | tr -d '\r'; done
  else
    rcli INFO commandstats | tr -d '\r'
  fi
}
redis_cpu() {
  if [ "${1:-}" = ours-cluster ]; then
    for p in "${CLUSTER_PORTS[@]}"; do redis-cli -p "$p" INFO cpu | tr -d '\r'; done
  else
    rcli INFO cpu | tr -d '\r'
  fi
}

get_cookie() {   # server jar -> "name=value" header text
  local s=$1 jar=$2
  rm -f "$jar"
  curl -fsS --max-time 5 -o /dev/null -c "$jar" "http://127.0.0.1:${PORT_OF[$s]}/" || die "$s: could not get a session cookie"
  # Netscape jar: 7 tab-separated fields; HttpOnly cookies are prefixed with "#HttpOnly_".
  awk -F '\t' 'NF == 7 && ($0 !~ /^#/ || $0 ~ /^#HttpOnly_/) { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$jar"
}

# The session's counter as stored. Ours answers GET /api/session without counting; the peers
# count that visit too, so one is taken off.
read_count() {
  local s=$1 jar=$2 body n
  body=$(curl -fsS --max-time 5 -b "$jar" "http://127.0.0.1:${PORT_OF[$s]}/api/session") || die "$s: GET /api/session failed"
  n=$(tr -d ' \n' <<<"$body" | sed -n 's/.*"visits":\([0-9][0-9]*\).*/\1/p')
  [ -n "$n" ] || die "$s: no visits in /api/session: $body"
  is_ours "$s" && echo "$n" || echo $(( n - 1 ))
}

flush_redis() {
  rcli FLUSHALL SYNC >/dev/null
  local p
  for p in "${CLUSTER_PRIMARIES[@]}"; do redis-cli -p "$p" FLUSHALL SYNC >/dev/null; done
}

# report.py row writes the header with the first row.
rm -f "$TSV"
LAST_OTHER=0   # other processes' CPU % during the last run, from report.py row

RUN_NO=0
RETRIED=0      # runs repeated because the machine was busy with something else
DISTURBED=""   # runs still disturbed after the last attempt
WAITED=0       # seconds spent waiting for other load to pass

# CPU use, in % of one core, over one second in which this script runs no load: someone
# else's.
idle_load() {
  local a b
  a=$(machine_busy); sleep 1; b=$(machine_busy)
  awk -v a="$a" -v b="$b" -v t="$CLK_TCK" 'BEGIN { printf "%.0f", (b - a) / t * 100 }'
}

# Compiles by other users come in bursts of minutes; a run is only worth taking between them.
wait_quiet() {
  local load waited=0
  [ "$WAITED" -ge "$QUIET_BUDGET" ] && return 0
  load=$(idle_load)
  while [ "$load" -gt "$MAX_OTHER" ] && [ "$waited" -lt "$QUIET_WAIT" ] && [ $((WAITED + waited)) -lt "$QUIET_BUDGET" ]; do
    [ "$waited" -eq 0 ] && note "  other processes use ${load}% of a core; waiting up to ${QUIET_WAIT} s for them to finish"
    sleep 4
    waited=$((waited + 5))
    load=$(idle_load)
  done
  WAITED=$((WAITED + waited))
}

# The machine is shared: a run that other work disturbed anyway is redone rather than
# averaged in.
run_measured() {   # same arguments as run_wrk
  local attempt other
  for attempt in 1 2 3; do
    wait_quiet
    run_wrk "$@"
    other=$LAST_OTHER
    [ "$other" -le "$MAX_OTHER" ] && return 0
    if [ "$attempt" -lt 3 ]; then
      note "  other processes used ${other}% of a core during that run; repeating it"
      sed -i '$d' "$TSV"
      RETRIED=$((RETRIED + 1))
      [ "$1" = main ] && flush_redis
    fi
  done
  DISTURBED+="${DISTURBED:+, }$3 $4 c=$5 r$2 (${other}%)"
}

# A server that died mid-run would otherwise show up as refused connections and odd CPU.
check_alive() {
  local s=$1 pid
  for pid in ${PIDS_OF[$s]}; do
    kill -0 "$pid" 2>/dev/null || die "$s (pid $pid) is no longer running; see $LOGS/$s.log"
  done
  for pid in $(redis_pids_of "$s"); do
    kill -0 "$pid" 2>/dev/null || die "redis-server (pid $pid) is no longer running; see $LOGS/"
  done
}

run_wrk() {   # phase round server mode conns prefill
  local phase=$1 round=$2 s=$3 mode=$4 conns=$5 prefill=$6
  check_alive "$s"
  local url="http://127.0.0.1:${PORT_OF[$s]}" tag="$phase-r$round-$s-$mode-c$conns-p$prefill"
  local jar=$RUNS/$tag.jar hdr=() cookie
  RUN_NO=$((RUN_NO + 1))
  if [ "$mode" = cookie ]; then
    cookie=$(get_cookie "$s" "$jar")
    [ -n "$cookie" ] || die "$s: GET / set no cookie"
    hdr=(-H "Cookie: $cookie")
  fi
  is_ours "$s" && : >"$LOGS/$s.log"
  commandstats "$s" >"$RUNS/$tag.cmd0"; redis_cpu "$s" >"$RUNS/$tag.cpu0"
  local srv0 red0 srv1 red1 all0 all1
  local pids rpids
  read -ra pids <<<"${PIDS_OF[$s]}"
  read -ra rpids <<<"$(redis_pids_of "$s")"
  srv0=$(cpu_ticks "${pids[@]}"); red0=$(cpu_ticks "${rpids[@]}"); all0=$(machine_busy)
  local TIMEFORMAT='%R %U %S'
  { time wrk --latency -t1 -c "$conns" -d "${DUR_S}s" --timeout 10s "${hdr[@]}" -s "$LUA" "$url/" \
      -- / "${MARKER[$s]}" "$DUR_S" "$TAIL" >"$RUNS/$tag.wrk" 2>&1; } 2>"$RUNS/$tag.time" \
    || { check_alive "$s"; die "wrk failed for $tag: $(tail -3 "$RUNS/$tag.wrk")"; }
  check_alive "$s"
  srv1=$(cpu_ticks "${pids[@]}"); red1=$(cpu_ticks "${rpids[@]}"); all1=$(machine_busy)
  commandstats "$s" >"$RUNS/$tag.cmd1"; redis_cpu "$s" >"$RUNS/$tag.cpu1"

  local counter=""
  [ "$mode" = cookie ] && counter=$(read_count "$s" "$jar")
  local log_lines=""
  is_ours "$s" && log_lines=$(grep -c 'path=/ ' "$LOGS/$s.log" || true)
  # Everything report.py needs besides wrk's output and the Redis INFO snapshots.
  printf '%s\n' "phase=$phase" "round=$round" "server=$s" "mode=$mode" "conns=$conns" \
    "prefill=$prefill" "srv0=$srv0" "srv1=$srv1" "red0=$red0" "red1=$red1" "all0=$all0" \
    "all1=$all1" "clk_tck=$CLK_TCK" "counter=$counter" "log_lines=$log_lines" \
    "inner=$(is_ours "$s" && echo "$OURS_INNER")" "run_no=$RUN_NO" "total_runs=$TOTAL_RUNS" \
    >"$RUNS/$tag.facts"
  LAST_OTHER=$("${REPORT[@]}" row "$RUNS/$tag" "$TSV") || die "report.py could not read run $tag"
}

# Pre-loads n sessions shaped like ours (a hash with a counter, a 30-minute TTL).
prefill() {
  local n=$1 reply
  # 17 random bytes per key give at least 22 base64url characters.
  reply=$(head -c $(( n * 17 + 64 )) /dev/urandom | base64 -w 22 | tr '+/' '-_' \
    | awk -v n="$n" 'NR <= n { k = "sess:" $0; printf "*4\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$6\r\nvisits\r\n$1\r\n1\r\n*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$4\r\n1800\r\n", length(k), k, length(k), k }' \
    | rcli --pipe 2>&1) || die "redis-cli --pipe failed: $reply"
  grep -q 'errors: 0' <<<"$reply" || die "pre-loading sessions failed: $reply"
}

n_servers=$(wc -w <<<"$SERVERS"); n_conns=$(wc -w <<<"$CONNECTIONS"); n_scale=$(wc -w <<<"$SCALING")
TOTAL_RUNS=$(( ROUNDS * 2 * n_conns * n_servers ))
[[ " $SERVERS " == *" ours "* ]] && TOTAL_RUNS=$(( TOTAL_RUNS + ROUNDS * n_scale ))

MACHINE_CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MACHINE_CORES=$(nproc)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$SECONDS

# --- Main runs: servers interleaved within each mode, so drift hits all alike -------------
for round in $(seq "$ROUNDS"); do
  for mode in cookie nocookie; do
    for conns in $CONNECTIONS; do
      for s in $SERVERS; do
        # Each run starts from an empty Redis, so no server pays for another's sessions.
        flush_redis
        run_measured main "$round" "$s" "$mode" "$conns" 0
      done
    done
  done
done

# Peak RSS under load, before the lighter phases below.
declare -A HWM_KB
for s in $SERVERS; do
  total=0
  for pid in ${PIDS_OF[$s]}; do
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$(( total + ${kb:-0} ))
  done
  HWM_KB[$s]=$total
done

# --- Scaling: ours with many sessions already in Redis ----------------------------------
if [[ " $SERVERS " == *" ours "* ]]; then
  for round in $(seq "$ROUNDS"); do
    for n in $SCALING; do
      flush_redis
      prefill "$n"
      have=$(rcli DBSIZE)
      [ "$have" -eq "$n" ] || die "pre-loaded $have sessions instead of $n"
      run_measured scale "$round" ours cookie 32 "$n"
    done
  done
fi

# --- Redis ceiling: the one EVALSHA our counter request costs, without HTTP --------------
declare -A CEIL_RPS CEIL_P50 CEIL_P99
CEIL_NOTE=""
if [[ " $SERVERS " == *" ours "* ]]; then
  flush_redis
  jar=$RUNS/ceiling.jar
  get_cookie ours "$jar" >/dev/null
  key=$(rcli --scan --pattern 'sess:*' | awk '$0 != "sess:secret" && !k { k = $0 } END { print k }')
  [ -n "$key" ] || die "no session key for the ceiling run"
  # The server embeds this file with include_str!, so it is the script, byte for byte.
  [ -s "$OURS_SRC/src/session/store/lua/touch.lua" ] \
    || die "src/session/store/lua/touch.lua not found in the benchmarked revision"
  cp "$OURS_SRC/src/session/store/lua/touch.lua" "$RUNS/touch.lua"
  sha=$(sha1sum "$RUNS/touch.lua" | cut -c1-40)
  # Our server loaded its script while serving; the same SHA proves it is the same text.
  [ "$(rcli SCRIPT EXISTS "$sha" | tr -d '\r')" = 1 ] \
    || CEIL_NOTE="src/session/store/lua/touch.lua does not match the script our server loaded; the ceiling is approximate"
  loaded=$(rcli -x SCRIPT LOAD <"$RUNS/touch.lua" | tr -d '\r')
  [ "$loaded" = "$sha" ] || die "SCRIPT LOAD answered $loaded, expected $sha"
  for conns in $CONNECTIONS; do
    # A short probe sizes the real run to about BENCH_DURATION.
    probe=$(redis-benchmark -p "$RPORT" -c "$conns" -n 20000 --csv EVALSHA "$sha" 1 "$key" 1800 visits 1 \
      | awk -F'","' 'NR == 2 { print int($2) }')
    reqs=$(( ${probe:-50000} * DUR_S ))
    before=$(rcli HGET "$key" visits)
    redis-benchmark -p "$RPORT" -c "$conns" -n "$reqs" --csv EVALSHA "$sha" 1 "$key" 1800 visits 1 >"$RUNS/ceiling-c$conns.csv"
    after=$(rcli HGET "$key" visits)
    [ $(( after - before )) -eq "$reqs" ] || die "redis-benchmark counted $((after - before)) of $reqs increments"
    IFS=$'\t' read -r "CEIL_RPS[$conns]" "CEIL_P50[$conns]" "CEIL_P99[$conns]" < <(
      tr -d '"' <"$RUNS/ceiling-c$conns.csv" | awk -F, 'NR == 2 { printf "%s\t%s\t%s\n", $2, $5, $7 }')
    note "ceiling c=$conns: ${CEIL_RPS[$conns]} EVALSHA/s (p50 ${CEIL_P50[$conns]} ms, p99 ${CEIL_P99[$conns]} ms)"
  done
fi

# --- Redis memory per session ----------------------------------------------------------
declare -A MEM_USAGE MEM_GROWTH MEM_NOTE
for s in $SERVERS; do
  # Measured on the one Redis; a cluster spreads the same keys over three.
  if [ "$s" = ours-cluster ]; then
    MEM_USAGE[$s]="n/a" MEM_GROWTH[$s]="n/a" MEM_NOTE[$s]="the same keys as ours, spread over 3 primaries"
    continue
  fi
  flush_redis
  sleep 0.2
  u0=$(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p')
  k0=$(rcli DBSIZE)
  codes=$(curl -s --no-progress-meter -Z --parallel-max 16 --max-time 60 -o /dev/null -w '%{http_code}\n' \
    "http://127.0.0.1:${PORT_OF[$s]}/?[1-$MEMORY_SESSIONS]" 2>/dev/null | grep -c '^200$' || true)
  k1=$(rcli DBSIZE)
  u1=$(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p')
  made=$(( k1 - k0 ))
  [ "$codes" -eq "$MEMORY_SESSIONS" ] || MEM_NOTE[$s]="only $codes of $MEMORY_SESSIONS visits answered 200"
  [ "$made" -eq "$MEMORY_SESSIONS" ] || MEM_NOTE[$s]="${MEM_NOTE[$s]:+${MEM_NOTE[$s]}; }$made keys instead of $MEMORY_SESSIONS"
  key=""
  for _ in 1 2 3 4 5; do
    key=$(rcli RANDOMKEY | tr -d '\r')
    [ "$key" != sess:secret ] && break
  done
  MEM_USAGE[$s]=$(rcli MEMORY USAGE "$key" | tr -d '\r')
  MEM_GROWTH[$s]=$(awk -v a="$u0" -v b="$u1" -v n="$made" 'BEGIN { printf "%.0f", (b - a) / (n > 0 ? n : 1) }')
  note "memory $s: MEMORY USAGE ${MEM_USAGE[$s]} B, used_memory growth ${MEM_GROWTH[$s]} B/session over $made sessions"
done
flush_redis

ELAPSED=$(( SECONDS - T0 ))
REDIS_VERSION=$(rcli INFO server | tr -d '\r' | sed -n 's/^redis_version://p')

# --- Report ---------------------------------------------------------------------------
# From the root of any clone: the measured commit is named, never this machine's directory.
REPRO=""
[ "$DURATION" != 10s ] && REPRO+="BENCH_DURATION=$DURATION "
[ "$ROUNDS" != 2 ] && REPRO+="BENCH_ROUNDS=$ROUNDS "
[ "$CONNECTIONS" != "32 256" ] && REPRO+="BENCH_CONNECTIONS='$CONNECTIONS' "
[ "$TAIL" != 1 ] && REPRO+="BENCH_TAIL=$TAIL "
[ "$SCALING" != "1000 100000 1000000" ] && REPRO+="BENCH_SCALING='$SCALING' "
[ "$SERVERS" != "ours ours-nometrics ours-cluster express1 express2 actix-pool actix-manager" ] && REPRO+="BENCH_SERVERS='$SERVERS' "
[[ $REVISION =~ ^[0-9a-f]+$ ]] && REPRO+="BENCH_REV=$REVISION "
REPRO+="ci/bench.sh"

# What only this script knows, for report.py; one key=value a line.
META=$OUT/meta.txt
{
  echo "machine=$MACHINE_CPU"
  echo "cores=$MACHINE_CORES"
  echo "kernel=$(uname -r)"
  echo "load_start=$LOAD_START"
  echo "software=Redis $REDIS_VERSION, $WRK_VERSION, $(node --version 2>/dev/null | sed 's/^/Node /' || echo 'no Node'), $(rustc --version 2>/dev/null | awk '{ print $1, $2 }')"
  echo "started_at=$STARTED_AT"
  echo "elapsed=$ELAPSED"
  echo "duration_s=$DUR_S"
  echo "tail=$TAIL"
  echo "rounds=$ROUNDS"
  echo "connections=$CONNECTIONS"
  echo "servers=$SERVERS"
  echo "scaling=$SCALING"
  echo "revision=$REVISION"
  echo "repro=$REPRO"
  echo "waited=$WAITED"
  echo "retried=$RETRIED"
  echo "disturbed=$DISTURBED"
  echo "max_other=$MAX_OTHER"
  echo "memory_sessions=$MEMORY_SESSIONS"
  echo "ceil_note=$CEIL_NOTE"
  for s in $SERVERS; do
    echo "mem_usage_$s=${MEM_USAGE[$s]}"
    echo "mem_growth_$s=${MEM_GROWTH[$s]}"
    echo "mem_note_$s=${MEM_NOTE[$s]:-}"
    echo "hwm_kb_$s=${HWM_KB[$s]}"
  done
  for c in $CONNECTIONS; do
    echo "ceil_rps_$c=${CEIL_RPS[$c]:-}"
    echo "ceil_p50_$c=${CEIL_P50[$c]:-}"
    echo "ceil_p99_$c=${CEIL_P99[$c]:-}"
  done
} >"$META"

echo
"${REPORT[@]}" report "$TSV" "$META" "$RESULTS" "$OUT/results.svg" || die "report.py could not write the report"
echo
note "results written to $RESULTS and $OUT/results.svg; raw runs in $TSV"

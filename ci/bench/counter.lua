-- wrk script for ci/bench.sh.
--
-- wrk drops the requests still in flight at its deadline from its counts, so a plain run
-- cannot tell whether a visit counter is exact. This script counts the 2xx responses that
-- carry the counter page's marker and, for the last TAIL seconds, starts no request at all:
-- each connection gets an empty request, so it writes nothing and waits, parked, until wrk
-- stops. No increment is then in flight at the deadline, "counter == counted responses" can
-- be checked, and neither the latency histogram nor Redis's command counts see any request
-- other than the counter's. (Switching to a cheap route instead would put thousands of
-- non-counter requests into the latency percentiles; wrk's delay() hook would add a timer to
-- every request and cost the fastest servers about 10% throughput.)
--
-- wrk -s counter.lua URL -- PATH MARKER DURATION_S TAIL_S
-- done() prints one "BENCHLUA key=value ..." line for the shell to parse.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1
-- os.time() ticks in whole seconds, too coarse for a one-second tail.
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Globals, so that done() (which runs in wrk's main Lua state) can read them via thread:get.
counted, window_counted, unmarked, non2xx, window_s = 0, 0, 0, 0, 0

local counter_req, marker, switch_at

function init(args)
  local path = args[1]
  marker = args[2]
  local duration, tail_s = tonumber(args[3]), tonumber(args[4])
  counter_req = wrk.format("GET", path)
  -- wrk starts its own duration clock a few milliseconds after this, once threads exist.
  window_s = duration - tail_s
  switch_at = now() + window_s
end

function request()
  if now() < switch_at then return counter_req end
  return ""
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if body:find(marker, 1, true) then
      counted = counted + 1
      -- The rate is taken over the window only: the tail is idle by design.
      if now() < switch_at then window_counted = window_counted + 1 end
    else
      unmarked = unmarked + 1
    end
  else
    non2xx = non2xx + 1
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local c, w, u, n, win = 0, 0, 0, 0, 0
  for _, th in ipairs(threads) do
    c = c + th:get("counted")
    w = w + th:get("window_counted")
    u = u + th:get("unmarked")
    n = n + th:get("non2xx")
    win = th:get("window_s")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHLUA counted=%d window_counted=%d window_s=%.3f unmarked=%d non2xx=%d requests=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    c, w, win, u, n, summary.requests,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

"""Parsing, statistics, Markdown report and SVG chart for ci/bench.sh.

ci/bench.sh starts and stops the processes and leaves raw files for each wrk run under
target/bench/runs/; this program turns them into rows and the rows into the report.

  report.py row RUN_PREFIX TSV     parse one run's raw files, append its row to TSV, print a
                                   one-line summary to stderr and the "other" CPU % to stdout
  report.py report TSV META OUT_MD OUT_SVG
                                   write the Markdown report and the chart
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path

COLUMNS = [
    "phase", "round", "server", "mode", "conns", "prefill", "rps", "p50_us", "p99_us",
    "max_us", "requests", "counted", "non2xx", "sock_err", "counter", "expected",
    "rt_per_req", "cmds_per_req", "cpu_server", "cpu_redis", "cpu_wrk", "log_lines", "mix",
    "cpu_other", "server_us_per_req", "redis_us_per_req", "redis_cmd_us_per_req",
]

LABEL = {
    "ours": "redis-sessions (ours)",
    "ours-nometrics": "ours, METRICS_PORT=off",
    "ours-cluster": "ours, Redis Cluster 3+3",
    "express1": "express, 1 process",
    "express2": "express, WORKERS=2",
    "actix-pool": "actix-session, pool",
    "actix-manager": "actix-session, manager",
}

MODE_LABEL = {"cookie": "one cookie", "nocookie": "no cookie"}


def read_kv(path: Path) -> dict[str, str]:
    """Reads `key=value` lines (the shell's per-run facts, or BENCHLUA's fields)."""
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def commandstats(path: Path) -> dict[str, tuple[int, int]]:
    """Calls and microseconds per command from `INFO commandstats` replies (one per node of
    a cluster, added up)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("cmdstat_"):
            continue
        name, fields = line[len("cmdstat_"):].split(":", 1)
        kv = dict(f.split("=", 1) for f in fields.split(","))
        calls, usec = out.get(name, (0, 0))
        out[name] = (calls + int(kv["calls"]), usec + int(kv["usec"]))
    return out


def redis_cpu_seconds(path: Path) -> float:
    """used_cpu_sys + used_cpu_user (the main thread's and the children's are not counted
    twice: the *_main_thread fields are a subset) from `INFO cpu` replies, one per node of a
    cluster, added up."""
    total = 0.0
    for line in path.read_text().splitlines():
        k, _, v = line.strip().partition(":")
        if k in ("used_cpu_sys", "used_cpu_user"):
            total += float(v)
    return total


def row(prefix: str, tsv: str) -> None:
    """One wrk run's raw files (PREFIX.wrk/.time/.facts/.cmd0/.cmd1/.cpu0/.cpu1) to a row."""
    p = Path(prefix)
    facts = read_kv(p.with_suffix(".facts"))
    bench = None
    for line in p.with_suffix(".wrk").read_text().splitlines():
        if line.startswith("BENCHLUA "):
            bench = dict(kv.split("=", 1) for kv in line.split()[1:])
    if bench is None:
        tail = "\n".join(p.with_suffix(".wrk").read_text().splitlines()[-3:])
        sys.exit(f"report.py: no BENCHLUA line from wrk in {p}.wrk: {tail}")
    wall, wrk_user, wrk_sys = (float(x) for x in p.with_suffix(".time").read_text().split())

    server = facts["server"]
    # Both runs of ours send one EVALSHA whose inner calls commandstats counts again.
    is_ours = server.startswith("ours")
    requests = int(bench["requests"])
    per = max(requests, 1)

    before, after = commandstats(p.with_suffix(".cmd0")), commandstats(p.with_suffix(".cmd1"))
    delta = {}
    for name, (calls, usec) in after.items():
        b_calls, b_usec = before.get(name, (0, 0))
        # The INFO that took the first snapshot is not the server's.
        if name != "info" and calls > b_calls:
            delta[name] = (calls - b_calls, usec - b_usec)
    inner = set(facts.get("inner", "").split())
    cmds = sum(c for c, _ in delta.values())
    # Ours sends one EVALSHA and Redis runs the rest inside the script, where commandstats
    # counts each call again, or one transaction: MULTI, the commands and EXEC written at
    # once, EXEC's reply the one awaited (commandstats counts the queued commands as they run
    # inside EXEC, and their time inside EXEC's). actix's pool pipelines UNWATCH with its PING.
    rt = cmds
    if is_ours:
        rt -= sum(c for n, (c, _) in delta.items() if n in inner)
        rt -= delta.get("multi", (0, 0))[0]
    if server == "actix-pool":
        rt -= delta.get("unwatch", (0, 0))[0]
    # Inner calls' time is already inside EVALSHA's, so only round-trip commands add up.
    cmd_usec = sum(u for n, (_, u) in delta.items() if not (is_ours and n in inner))
    mix = []
    for name in sorted(delta):
        calls, usec = delta[name]
        label = name.upper().replace("|", ".")
        if is_ours and name in inner:
            label += "*"
        share = calls / per
        mix.append(f"{label}:{'<0.01' if share < 0.005 else f'{share:.2f}'}"
                   f"@{usec / calls:.2f}us")

    tck = int(facts["clk_tck"])
    cpu_s = (int(facts["srv1"]) - int(facts["srv0"])) / tck
    cpu_r = (int(facts["red1"]) - int(facts["red0"])) / tck
    cpu_all = (int(facts["all1"]) - int(facts["all0"])) / tck
    pct = lambda sec: sec / wall * 100  # noqa: E731 - one line, used four times
    cpu_o = max(0.0, pct(cpu_all) - pct(cpu_s) - pct(cpu_r) - pct(wrk_user + wrk_sys))
    redis_cpu = redis_cpu_seconds(p.with_suffix(".cpu1")) - redis_cpu_seconds(p.with_suffix(".cpu0"))

    counter = facts.get("counter", "-")
    expected = str(int(bench["counted"]) + 1) if facts["mode"] == "cookie" else "-"
    sock_err = sum(int(bench[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    values = {
        "phase": facts["phase"], "round": facts["round"], "server": server,
        "mode": facts["mode"], "conns": facts["conns"], "prefill": facts["prefill"],
        "rps": f"{int(bench['window_counted']) / float(bench['window_s']):.1f}",
        "p50_us": bench["p50_us"], "p99_us": bench["p99_us"], "max_us": bench["max_us"],
        "requests": requests, "counted": bench["counted"], "non2xx": bench["non2xx"],
        "sock_err": sock_err, "counter": counter or "-", "expected": expected,
        "rt_per_req": f"{rt / per:.3f}", "cmds_per_req": f"{cmds / per:.3f}",
        "cpu_server": f"{pct(cpu_s):.0f}", "cpu_redis": f"{pct(cpu_r):.0f}",
        "cpu_wrk": f"{pct(wrk_user + wrk_sys):.0f}", "log_lines": facts.get("log_lines") or "-",
        "mix": ",".join(mix) or "none", "cpu_other": f"{cpu_o:.0f}",
        "server_us_per_req": f"{cpu_s * 1e6 / per:.1f}",
        "redis_us_per_req": f"{redis_cpu * 1e6 / per:.1f}",
        "redis_cmd_us_per_req": f"{cmd_usec / per:.2f}",
    }
    new = not Path(tsv).exists() or Path(tsv).stat().st_size == 0
    with open(tsv, "a", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        if new:
            w.writerow(COLUMNS)
        w.writerow([values[c] for c in COLUMNS])
    exact = f" counter {counter}/{expected}" if facts["mode"] == "cookie" else ""
    pre = f"prefill={facts['prefill']} " if facts["prefill"] != "0" else ""
    print(f"{time.strftime('%H:%M:%S')} [{facts['run_no']}/{facts['total_runs']}] {facts['phase']} "
          f"r{facts['round']} {facts['mode']} c={facts['conns']} {pre}{server}: "
          f"{float(values['rps']):.0f} req/s p50 {bench['p50_us']}us p99 {bench['p99_us']}us "
          f"rt/req {values['rt_per_req']} cpu µs/req srv/redis "
          f"{values['server_us_per_req']}/{values['redis_us_per_req']} "
          f"cpu % srv/redis/wrk/other {values['cpu_server']}/{values['cpu_redis']}/"
          f"{values['cpu_wrk']}/{values['cpu_other']}{exact}", file=sys.stderr)
    print(values["cpu_other"])


# --- Report ------------------------------------------------------------------------------

class Runs:
    """The TSV rows, with medians over the rounds of one cell."""

    def __init__(self, tsv: str):
        with open(tsv, newline="") as f:
            self.rows = list(csv.DictReader(f, delimiter="\t"))

    def cell(self, phase, server, mode, conns=None, prefill="0"):
        return [r for r in self.rows if r["phase"] == phase and r["server"] == server
                and r["mode"] == mode and (conns is None or r["conns"] == str(conns))
                and r["prefill"] == str(prefill)]

    def med(self, col, phase, server, mode, conns, prefill="0"):
        vals = [float(r[col]) for r in self.cell(phase, server, mode, conns, prefill)
                if r[col] not in ("", "-")]
        return statistics.median(vals) if vals else None


def num(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ms(us):
    return "n/a" if us is None else f"{us / 1000:.2f} ms"


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}"


def report(tsv: str, meta_path: str, out_md: str, out_svg: str) -> None:
    meta = read_kv(Path(meta_path))
    runs = Runs(tsv)
    servers = meta["servers"].split()
    conns_list = meta["connections"].split()
    scaling = meta["scaling"].split()
    has_ours = "ours" in servers
    L = []
    add = L.append
    add("# redis-sessions benchmark\n")
    add(f"- Machine: {meta['machine']}, {meta['cores']} cores shared by wrk, Redis and the server "
        f"under test; Linux {meta['kernel']}; load average at start {meta['load_start']}")
    add(f"- Software: {meta['software']}")
    add(f"- Run: {meta['started_at']}, {meta['elapsed']} s in all; wrk --latency -t1, "
        f"{meta['duration_s']} s per run (the last {meta['tail']} s start no request, so none is in "
        f"flight at the deadline), {meta['rounds']} round(s) with the servers interleaved, medians shown")
    add(f"- Measured: redis-sessions at {meta['revision']}")
    add(f"- Reproduce, from the repository root: `{meta['repro']}`\n")
    add("These figures compare the servers with each other on a small shared machine; they are not\n"
        "absolute capacity. req/s counts 2xx counter pages over the part of each run that sends requests.\n"
        "\"one cookie\": every request carries one session's cookie (read + write of an existing\n"
        "session). \"no cookie\": every request creates a new session. CPU % is of one core (200 = both\n"
        "cores); \"other\" is the rest of the machine's busy time (kernel threads, steal, other users), and\n"
        "a high figure there marks a disturbed run. CPU µs/req is CPU time over the run divided by the\n"
        "requests served, a figure that depends far less on the machine's other load than req/s: the\n"
        "server's from /proc/<pid>/stat utime + stime of all its processes, Redis's from INFO cpu\n"
        "(used_cpu_sys + used_cpu_user); \"Redis cmd µs/req\" is INFO commandstats' usec (time inside\n"
        "the commands themselves, what usec_per_call averages) per request.\n")
    add("## Throughput, latency and cost per request (GET /)\n")
    add("| mode | conns | server | req/s | p50 | p99 | ours ÷ server | server CPU µs/req | "
        "Redis CPU µs/req | Redis cmd µs/req | Redis round trips/req | Redis commands/req | "
        "CPU % server / Redis / wrk / other |")
    add("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for mode in ("cookie", "nocookie"):
        for c in conns_list:
            ours_rps = runs.med("rps", "main", "ours", mode, c)
            for s in servers:
                m = lambda col: runs.med(col, "main", s, mode, c)  # noqa: E731
                rps = m("rps")
                cpu = " / ".join(num(m(k)) for k in ("cpu_server", "cpu_redis", "cpu_wrk", "cpu_other"))
                add(f"| {MODE_LABEL[mode]} | {c} | {LABEL[s]} | {num(rps)} | {ms(m('p50_us'))} | "
                    f"{ms(m('p99_us'))} | {fmt_ratio(ratio(ours_rps, rps))} | "
                    f"{num(m('server_us_per_req'), 1)} | {num(m('redis_us_per_req'), 1)} | "
                    f"{num(m('redis_cmd_us_per_req'), 2)} | {num(m('rt_per_req'), 2)} | "
                    f"{num(m('cmds_per_req'), 2)} | {cpu} |")
    if has_ours:
        lines = counted = 0
        for r in runs.rows:
            if r["server"] == "ours" and r["log_lines"] not in ("", "-"):
                lines += int(r["log_lines"])
                counted += int(r["counted"])
        if counted:
            add(f"\nOurs logged {lines / counted:.2f} access-log lines per counter request (INFO, "
                "default RUST_LOG, to a file), so its figures include that cost.")
    add("\nRedis commands per request, by command, with INFO commandstats' µs per call after the @.\n"
        "Calls made inside a Lua script or a MULTI … EXEC transaction, marked *, count as commands\n"
        "but not as round trips (their time is part of the script's or EXEC's; MULTI is written with\n"
        "them, so it is no round trip either); actix's pool sends UNWATCH and PING as one pipelined\n"
        "round trip on every checkout; ours pings a connection idle for a while:\n")
    add("| server | one cookie | no cookie |")
    add("| --- | --- | --- |")
    first = conns_list[0]
    for s in servers:
        cells = []
        for mode in ("cookie", "nocookie"):
            rows = runs.cell("main", s, mode, first)
            cells.append(rows[-1]["mix"].replace(",", ", ").replace(":", " ") if rows else "n/a")
        add(f"| {LABEL[s]} | {cells[0]} | {cells[1]} |")
    bad = [f"{r['server']} r{r['round']} {r['mode']} c={r['conns']}: {r['non2xx']} non-2xx, "
           f"{r['sock_err']} socket errors"
           for r in runs.rows if int(r["non2xx"]) > 0 or int(r["sock_err"]) > 0]
    add(f"\nNon-2xx responses and socket errors: {'; '.join(bad) or 'none'}.\n")
    add(f"Time spent waiting for other processes to leave the CPU: {meta['waited']} s. Runs repeated "
        f"because other processes used more than {meta['max_other']}% of a core during them: "
        f"{meta['retried']}; still disturbed after three attempts: {meta.get('disturbed') or 'none'}.\n")

    add("## Counter exactness (one cookie: the stored counter against the 2xx counter pages wrk "
        "received, plus the visit that made the session)\n")
    add("| server | conns | counter / expected, per round | lost |")
    add("| --- | ---: | --- | ---: |")
    for s in servers:
        for c in conns_list:
            rows = runs.cell("main", s, "cookie", c)
            cells = ", ".join(f"{r['counter']} / {r['expected']}" for r in rows)
            lost = ", ".join(
                f"{(int(r['expected']) - int(r['counter'])) / int(r['expected']) * 100:.2f}%"
                for r in rows)
            add(f"| {LABEL[s]} | {c} | {cells} | {lost} |")

    add("\n## Memory\n")
    add(f"| server | Redis MEMORY USAGE of one session | Redis used_memory growth per session "
        f"({int(meta['memory_sessions']):,} new sessions) | server peak RSS (VmHWM) under load |")
    add("| --- | ---: | ---: | ---: |")
    for s in servers:
        note = meta.get(f"mem_note_{s}")
        extra = ", primary + 2 workers" if s == "express2" else ""
        add(f"| {LABEL[s]} | {meta.get(f'mem_usage_{s}', 'n/a')} B | "
            f"{meta.get(f'mem_growth_{s}', 'n/a')} B{f' ({note})' if note else ''} | "
            f"{int(meta.get(f'hwm_kb_{s}', 0)) / 1024:.1f} MB{extra} |")

    if has_ours:
        add("\n## Redis ceiling (redis-benchmark: the one EVALSHA of src/session/store/lua/touch.lua "
            "that a counter request costs, on an existing session)\n")
        add("| conns | EVALSHA/s | p50 | p99 | ours, one cookie, req/s | ours ÷ ceiling |")
        add("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in conns_list:
            o = runs.med("rps", "main", "ours", "cookie", c)
            ceil = float(meta[f"ceil_rps_{c}"]) if meta.get(f"ceil_rps_{c}") else None
            add(f"| {c} | {num(ceil)} | {meta.get(f'ceil_p50_{c}', 'n/a')} ms | "
                f"{meta.get(f'ceil_p99_{c}', 'n/a')} ms | {num(o)} | {fmt_ratio(ratio(o, ceil))} |")
        if meta.get("ceil_note"):
            add(f"\nNote: {meta['ceil_note']}.")
        add("\n## Scaling (ours, one cookie, 32 connections, sessions already in Redis)\n")
        add("| sessions in Redis | req/s | p50 | p99 | ÷ first row |")
        add("| ---: | ---: | ---: | ---: | ---: |")
        base = last = None
        for n in scaling:
            v = runs.med("rps", "scale", "ours", "cookie", 32, n)
            base = v if base is None else base
            last = v
            add(f"| {int(n):,} | {num(v)} | {ms(runs.med('p50_us', 'scale', 'ours', 'cookie', 32, n))} | "
                f"{ms(runs.med('p99_us', 'scale', 'ours', 'cookie', 32, n))} | {fmt_ratio(ratio(v, base))} |")
        flat = ratio(last, base)
        verdict = "flat within ±10%" if flat is not None and 0.9 <= flat <= 1.1 else "not flat within ±10%"
        add(f"\nLargest against smallest: {fmt_ratio(flat)}× ({verdict}).")

    add("\n## Targets\n")
    if has_ours:
        targets(add, runs, meta, servers)
    else:
        add("- SKIP: ours was not part of this run")
    add(f"\n![req/s and p99 per server and mode]({Path(out_svg).name})")
    Path(out_md).write_text("\n".join(L) + "\n")
    chart(runs, servers, conns_list, out_svg)
    print("\n".join(L))


def targets(add, runs: Runs, meta: dict[str, str], servers: list[str]) -> None:
    """The issue's targets, each PASS, FAIL or SKIP (a peer or figure not measured)."""
    def line(ok, text):
        add(f"- {'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}: {text}")

    def at_least(r, lim):
        return None if r is None else r >= lim

    def shown(r):
        return "not run" if r is None else f"{r:.2f}×"

    for c in (32, 256):
        ours = runs.med("rps", "main", "ours", "cookie", c)
        r = ratio(ours, runs.med("rps", "main", "actix-manager", "cookie", c))
        line(at_least(r, 1.2), f"one cookie, {c} conns: ours ≥ 1.2× actix-session manager mode ({shown(r)})")
    r = ratio(runs.med("rps", "main", "ours", "nocookie", 32), runs.med("rps", "main", "actix-manager", "nocookie", 32))
    line(at_least(r, 1.0), f"no cookie, 32 conns: ours ≥ 1.0× actix-session manager mode ({shown(r)})")
    r = ratio(runs.med("rps", "main", "ours", "cookie", 32), runs.med("rps", "main", "express1", "cookie", 32))
    line(at_least(r, 6), f"one cookie, 32 conns: ours ≥ 6× express 1 process ({shown(r)})")
    # Server and Redis CPU per request against every peer, in every measured cell.
    worst_srv = worst_redis = None
    for mode in ("cookie", "nocookie"):
        for c in meta["connections"].split():
            o_s = runs.med("server_us_per_req", "main", "ours", mode, c)
            o_r = runs.med("redis_us_per_req", "main", "ours", mode, c)
            for s in servers:
                if s.startswith("ours"):
                    continue
                rs = ratio(o_s, runs.med("server_us_per_req", "main", s, mode, c))
                if rs is not None and (worst_srv is None or rs > worst_srv[0]):
                    worst_srv = (rs, s, mode, c)
                if s == "actix-manager":
                    rr = ratio(o_r, runs.med("redis_us_per_req", "main", s, mode, c))
                    if rr is not None and (worst_redis is None or rr > worst_redis[0]):
                        worst_redis = (rr, s, mode, c)
    if worst_srv:
        rs, s, mode, c = worst_srv
        line(rs <= 0.8, f"server CPU per request ≤ 0.8× every peer's (worst {rs:.2f}× {LABEL[s]}, "
             f"{MODE_LABEL[mode]}, {c} conns)")
    else:
        line(None, "server CPU per request ≤ 0.8× every peer's (no peer run)")
    if worst_redis:
        rr, s, mode, c = worst_redis
        line(rr <= 1.0, f"Redis CPU per request ≤ actix-session manager's (worst {rr:.2f}×, "
             f"{MODE_LABEL[mode]}, {c} conns)")
    else:
        line(None, "Redis CPU per request ≤ actix-session manager's (not run)")
    p99s = [runs.med("p99_us", "main", "ours", m, 32) for m in ("cookie", "nocookie")]
    known = [p for p in p99s if p is not None]
    line(max(known) <= 3000 if known else None,
         f"ours p99 ≤ 3 ms at 32 conns (one cookie {ms(p99s[0])}, no cookie {ms(p99s[1])})")
    hwm = int(meta.get("hwm_kb_ours", 0))
    line(hwm <= 20480, f"ours peak RSS ≤ 20 MB ({hwm / 1024:.1f} MB)")
    usage = meta.get("mem_usage_ours", "")
    line(int(usage) <= 128 if usage.isdigit() else None,
         f"≤ 128 B of Redis memory per session, MEMORY USAGE ({usage} B; used_memory growth "
         f"{meta.get('mem_growth_ours', 'n/a')} B)")
    cookie_rows = [r for r in runs.rows if r["server"] == "ours" and r["mode"] == "cookie"]
    exact = sum(1 for r in cookie_rows if r["counter"] == r["expected"])
    line(bool(cookie_rows) and exact == len(cookie_rows),
         f"exact counts: ours' counter equals its 2xx counter responses in {exact} of {len(cookie_rows)} one-cookie runs")
    if "ours-nometrics" in servers:
        on = runs.med("rps", "main", "ours", "cookie", 32)
        off = runs.med("rps", "main", "ours-nometrics", "cookie", 32)
        cost = None if on is None or off is None or off <= 0 else (1 - on / off) * 100
        line(None if cost is None else cost <= 3,
             f"metrics cost ≤ 3% req/s, one cookie, 32 conns (on {num(on)}, off {num(off)} req/s: "
             f"{'n/a' if cost is None else f'{cost:.1f}'}%)")
    if "ours-cluster" in servers:
        for c in meta["connections"].split():
            r = ratio(runs.med("rps", "main", "ours-cluster", "cookie", c),
                      runs.med("rps", "main", "ours", "cookie", c))
            line(at_least(r, 0.8), f"one cookie, {c} conns: ours on a Redis Cluster ≥ 0.8× ours on one "
                 f"Redis ({shown(r)})")
        crts = [float(r["rt_per_req"]) for r in runs.rows if r["server"] == "ours-cluster"]
        line(bool(crts) and all(0.995 <= x <= 1.005 for x in crts),
             f"one Redis round trip per counter request on the cluster too (highest "
             f"{max(crts, default=0):.3f} over {len(crts)} runs)")
    ours_rows = [r for r in runs.rows if r["server"] == "ours"]
    rts = [float(r["rt_per_req"]) for r in ours_rows]
    off = sum(1 for x in rts if not 0.995 <= x <= 1.005)
    line(bool(rts) and off == 0,
         f"one Redis round trip per counter request (every one of ours' {len(rts)} runs within "
         f"1.00 ± 0.005; highest {max(rts, default=0):.3f})")


def chart(runs: Runs, servers: list[str], conns_list: list[str], out_svg: str) -> None:
    """Two panels, req/s and p99, one group of bars per mode and connection count."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    # A fixed hash salt and no date, so the same figures give the same file.
    matplotlib.rcParams["svg.hashsalt"] = "redis-sessions-bench"
    groups = [(m, c) for m in ("cookie", "nocookie") for c in conns_list]
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    width = 0.8 / max(len(servers), 1)
    for i, s in enumerate(servers):
        xs = [g + (i - (len(servers) - 1) / 2) * width for g in range(len(groups))]
        rps = [runs.med("rps", "main", s, m, c) or 0 for m, c in groups]
        p99 = [(runs.med("p99_us", "main", s, m, c) or 0) / 1000 for m, c in groups]
        axes[0].bar(xs, rps, width, label=LABEL[s])
        axes[1].bar(xs, p99, width, label=LABEL[s])
    axes[0].set_ylabel("req/s (median, higher is better)")
    axes[1].set_ylabel("p99 latency, ms (median, lower is better)")
    axes[1].set_xticks(range(len(groups)))
    axes[1].set_xticklabels([f"{MODE_LABEL[m]}\n{c} connections" for m, c in groups])
    axes[0].legend(fontsize="small", ncols=min(len(servers), 3))
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle("GET / (visit counter) on this machine, servers side by side")
    fig.tight_layout()
    fig.savefig(out_svg, format="svg", metadata={"Date": None})
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "row":
        row(argv[1], argv[2])
    elif len(argv) == 5 and argv[0] == "report":
        report(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""The parts of ci/cf-local.sh that read, check or measure: the manifest, the environment
Cloud Foundry gives an instance, the idle keep-alive probe and the final report.

    python3 ci/cf_local.py manifest manifest.yml        # shell assignments, or an error
    python3 ci/cf_local.py manifest --check-only manifest-cnb.yml
    python3 ci/cf_local.py vcap-application NAME INDEX GUID PORT MEMORY_MB DISK_MB
    python3 ci/cf_local.py vcap-services HOST PORT PASSWORD SERVICE...
    python3 ci/cf_local.py keepalive HOST PORT IDLE_SECONDS
    python3 ci/cf_local.py replays INSTANCE_DIR...
    python3 ci/cf_local.py report --limit BYTES --window START END INSTANCE_DIR...

Needs PyYAML (Debian: python3-yaml).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import yaml

# Every application attribute of the app manifest reference
# (https://docs.cloudfoundry.org/devguide/deploy-apps/manifest-attributes.html). Anything else
# is a typo: the platform would ignore it silently, which is how a misspelt health check ships.
APP_KEYS = {
    "name", "path", "stack", "buildpacks", "lifecycle", "command", "docker",
    "instances", "memory", "disk_quota", "disk-quota", "log-rate-limit-per-second",
    "timeout", "health-check-type", "health-check-http-endpoint",
    "health-check-invocation-timeout", "health-check-interval",
    "readiness-health-check-type", "readiness-health-check-http-endpoint",
    "readiness-health-check-invocation-timeout", "readiness-health-check-interval",
    "env", "services", "routes", "random-route", "no-route", "default-route",
    "metadata", "processes", "sidecars", "features",
}
TOP_KEYS = {"applications", "version"}
CHECK_TYPES = {"http", "port", "process"}
# Variables the platform sets itself; `cf set-env` and the manifest may not.
RESERVED_ENV = re.compile(r"^(VCAP_|CF_INSTANCE_)|^PORT$")
SIZE = re.compile(r"^(\d+)\s*(B|K|KB|M|MB|G|GB|T|TB)?$", re.IGNORECASE)
UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ManifestError(Exception):
    """A manifest the platform would refuse, or one the stand-in cannot run as written."""


def size_bytes(key: str, value: object, default_unit: str) -> int:
    """Parses a manifest size such as 64M, 1G or 32K into bytes."""
    match = SIZE.match(str(value).strip())
    if not match:
        raise ManifestError(f"{key}: {value!r} is not a size such as 64M or 1G")
    unit = (match.group(2) or default_unit)[0].upper()
    return int(match.group(1)) * UNITS[unit]


def positive_int(app: dict, key: str, default: int) -> int:
    """A whole-number attribute of at least 1, or its platform default."""
    value = app.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ManifestError(f"{key}: {value!r} is not a whole number of at least 1")
    return value


def check_type(app: dict, prefix: str, default: str) -> tuple[str, str]:
    """The type and endpoint of the liveness (prefix "") or readiness check."""
    kind = app.get(f"{prefix}health-check-type", default)
    if kind not in CHECK_TYPES:
        raise ManifestError(f"{prefix}health-check-type: {kind!r} is not one of {sorted(CHECK_TYPES)}")
    endpoint = app.get(f"{prefix}health-check-http-endpoint", "/")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise ManifestError(f"{prefix}health-check-http-endpoint: {endpoint!r} must be a path starting with /")
    if kind != "http" and f"{prefix}health-check-http-endpoint" in app:
        raise ManifestError(f"{prefix}health-check-http-endpoint is set but {prefix}health-check-type is {kind}")
    return kind, endpoint


def procfile_web(app_dir: Path) -> str:
    """The web command of the package's Procfile, which binary_buildpack starts."""
    procfile = app_dir / "Procfile"
    if not procfile.is_file():
        raise ManifestError(f"path: {app_dir} has no Procfile and the manifest gives no command")
    for line in procfile.read_text().splitlines():
        kind, sep, command = line.partition(":")
        if sep and kind.strip() == "web" and command.strip():
            return command.strip()
    raise ManifestError(f"{procfile} has no web: line")


def check_command(command: str, app_dir: Path) -> None:
    """Fails unless the start command's program exists in the package (or on PATH)."""
    words = [w for w in shlex.split(command) if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
    if words[:1] == ["exec"]:
        words = words[1:]
    if not words:
        raise ManifestError(f"start command {command!r} runs nothing")
    program = words[0]
    if "/" not in program:
        if shutil.which(program) is None:
            raise ManifestError(f"start command {command!r}: {program} is neither in the package nor on PATH")
        return
    if program.startswith("/home/vcap/app/"):
        target = app_dir / program.removeprefix("/home/vcap/app/")
    elif program.startswith("/"):
        raise ManifestError(f"start command {command!r}: {program} is outside the app (/home/vcap/app)")
    else:
        target = app_dir / program
    if not target.is_file() or not os.access(target, os.X_OK):
        raise ManifestError(f"start command {command!r}: {program} is not an executable file in {app_dir}")


def load(manifest_path: Path, check_only: bool) -> dict:
    """Reads and checks the manifest; returns what the stand-in needs to run it."""
    try:
        doc = yaml.safe_load(manifest_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ManifestError(f"cannot read {manifest_path}: {err}") from err
    if not isinstance(doc, dict):
        raise ManifestError(f"{manifest_path} is not a mapping")
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise ManifestError(f"unknown top-level key(s) {sorted(unknown)}; expected {sorted(TOP_KEYS)}")
    apps = doc.get("applications")
    if not isinstance(apps, list) or len(apps) != 1 or not isinstance(apps[0], dict):
        raise ManifestError("applications: the stand-in runs exactly one application")
    app = apps[0]
    unknown = set(app) - APP_KEYS
    if unknown:
        raise ManifestError(f"unknown application key(s) {sorted(unknown)} (a typo?)")
    if "processes" in app or "sidecars" in app or "docker" in app:
        raise ManifestError("processes, sidecars and docker are valid, but the stand-in does not run them")
    name = app.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError("name: missing")
    lifecycle = app.get("lifecycle", "buildpack")
    if lifecycle not in {"buildpack", "cnb"}:
        raise ManifestError(f"lifecycle: {lifecycle!r} is not buildpack or cnb")
    buildpacks = app.get("buildpacks", [])
    if not isinstance(buildpacks, list) or not all(isinstance(b, str) for b in buildpacks):
        raise ManifestError("buildpacks: must be a list of names or URLs")

    memory = size_bytes("memory", app.get("memory", "1G"), "M")
    disk = size_bytes("disk_quota", app.get("disk_quota", app.get("disk-quota", "1G")), "M")
    log_limit = app.get("log-rate-limit-per-second", -1)
    log_limit = -1 if str(log_limit).strip() == "-1" else size_bytes("log-rate-limit-per-second", log_limit, "B")
    live_type, live_endpoint = check_type(app, "", "port")
    ready_type, ready_endpoint = check_type(app, "readiness-", "process")

    env = app.get("env", {}) or {}
    if not isinstance(env, dict):
        raise ManifestError("env: must be a mapping")
    env_pairs = []
    for key, value in env.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)) or RESERVED_ENV.match(str(key)):
            raise ManifestError(f"env: {key!r} is not a variable name an app may set")
        if isinstance(value, (dict, list)) or value is None:
            raise ManifestError(f"env: {key} must be a string, number or boolean")
        value = str(value).lower() if isinstance(value, bool) else str(value)
        env_pairs.append(f"{key}={value}")

    services = []
    for service in app.get("services", []) or []:
        service = service.get("name") if isinstance(service, dict) else service
        if not isinstance(service, str) or not service:
            raise ManifestError("services: each entry must be a name or {name: ...}")
        services.append(service)

    path_value = app.get("path", ".")
    app_dir = (manifest_path.parent / str(path_value)).resolve()
    command = app.get("command")
    if not check_only:
        if lifecycle != "buildpack":
            raise ManifestError(f"lifecycle {lifecycle}: staging happens on the platform, the stand-in runs packages only")
        if not app_dir.is_dir():
            raise ManifestError(f"path: {path_value!r} ({app_dir}) is not a directory; run ci/package.sh first?")
        command = command if command else procfile_web(app_dir)
        check_command(command, app_dir)

    return {
        "name": name,
        "instances": positive_int(app, "instances", 1),
        "memory_bytes": memory,
        "memory_mb": memory >> 20,
        "disk_mb": disk >> 20,
        "log_rate_limit": log_limit,
        "stack": str(app.get("stack", "")),
        "buildpacks": " ".join(buildpacks),
        "app_path": str(app_dir),
        "web_command": command or "",
        "start_timeout": positive_int(app, "timeout", 60),
        "liveness_type": live_type,
        "liveness_endpoint": live_endpoint,
        "liveness_timeout": positive_int(app, "health-check-invocation-timeout", 1),
        "readiness_type": ready_type,
        "readiness_endpoint": ready_endpoint,
        "readiness_timeout": positive_int(app, "readiness-health-check-invocation-timeout", 1),
        "env": env_pairs,
        "services": services,
    }


def cmd_manifest(args: argparse.Namespace) -> int:
    """Prints the checked manifest as m_<name>=... shell assignments (bash arrays for lists)."""
    try:
        spec = load(Path(args.manifest), args.check_only)
    except ManifestError as err:
        print(f"{args.manifest}: {err}", file=sys.stderr)
        return 1
    for key, value in spec.items():
        if isinstance(value, list):
            print(f"m_{key}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            print(f"m_{key}={shlex.quote(str(value))}")
    return 0


def cmd_vcap_application(args: argparse.Namespace) -> int:
    """VCAP_APPLICATION as Diego sets it for one instance."""
    uri = f"{args.name}.apps.cf-local.internal"
    print(json.dumps({
        "application_id": str(uuid.uuid5(uuid.NAMESPACE_URL, uri)),
        "application_name": args.name,
        "application_uris": [uri],
        "application_version": str(uuid.uuid4()),
        "cf_api": "https://api.cf-local.internal",
        "host": "0.0.0.0",
        "instance_id": args.guid,
        "instance_index": args.index,
        "limits": {"disk": args.disk_mb, "fds": 16384, "mem": args.memory_mb},
        "name": args.name,
        "organization_name": "cf-local",
        "port": args.port,
        "process_type": "web",
        "space_name": "cf-local",
        "uris": [uri],
    }, separators=(",", ":")))
    return 0


def cmd_vcap_services(args: argparse.Namespace) -> int:
    """A p.redis binding (Tanzu's shape) per service the manifest binds."""
    print(json.dumps({"p.redis": [{
        "label": "p.redis", "plan": "cache-small", "name": name, "instance_name": name,
        "tags": ["redis", "pivotal", "on-demand"], "binding_name": None, "provider": None,
        "syslog_drain_url": None, "volume_mounts": [],
        "credentials": {"host": args.host, "port": args.port, "password": args.password},
    } for name in args.services]}, separators=(",", ":")))
    return 0


def cmd_keepalive(args: argparse.Namespace) -> int:
    """Holds one idle keep-alive connection past the router's 90 s and reuses it."""
    conn = http.client.HTTPConnection(args.host, args.port, timeout=10)
    conn.request("GET", "/health")
    first = conn.getresponse()
    first.read()
    if first.status != 200 or first.will_close:
        print(f"FAIL: keep-alive: first request got {first.status}, will_close={first.will_close}", file=sys.stderr)
        return 1
    local = conn.sock.getsockname()
    time.sleep(args.idle)
    # A server that closed the idle connection has sent FIN: a peek then reads end-of-file.
    conn.sock.setblocking(False)
    try:
        closed = conn.sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        closed = False
    conn.sock.settimeout(10)
    if closed:
        print(f"FAIL: keep-alive: the server closed the connection within {args.idle} s idle", file=sys.stderr)
        return 1
    conn.request("GET", "/health")
    second = conn.getresponse()
    second.read()
    if second.status != 200 or conn.sock is None or conn.sock.getsockname() != local:
        print(f"FAIL: keep-alive: the reuse after {args.idle} s got {second.status} on another connection", file=sys.stderr)
        return 1
    print(f"PASS: keep-alive: one connection (local port {local[1]}) idled {args.idle} s, then served a second request")
    return 0


def cmd_replays(args: argparse.Namespace) -> int:
    """Request ids that reached more than one instance: requests the router replayed."""
    seen: dict[str, list[str]] = {}
    for directory in map(Path, args.instances):
        with (directory / "stdout.log").open("rb") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and line.get("target") == "redis_sessions::access":
                    entry = f"{directory.name} {line.get('method')} {line.get('path')} {line.get('status')}"
                    seen.setdefault(str(line.get("request_id")), []).append(entry)
    for request_id, entries in seen.items():
        if len(entries) > 1:
            print(f"{request_id}: {'; '.join(entries)}")
    return 0


def read_int(path: Path, key: str | None = None) -> int | None:
    """One number from a cgroup file, or the value of `key` in a flat-keyed one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        return int(text.split()[0])
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def memory_figures(cgroup: Path) -> dict:
    """Peak, limit, limit hits and OOM kills of a v1 or v2 memory cgroup."""
    if (cgroup / "memory.limit_in_bytes").exists():
        return {
            "peak": read_int(cgroup / "memory.max_usage_in_bytes"),
            "limit": read_int(cgroup / "memory.limit_in_bytes"),
            "failcnt": read_int(cgroup / "memory.failcnt"),
            "oom_kill": read_int(cgroup / "memory.oom_control", "oom_kill"),
        }
    return {
        "peak": read_int(cgroup / "memory.peak"),
        "limit": read_int(cgroup / "memory.max"),
        "failcnt": read_int(cgroup / "memory.events", "max"),
        "oom_kill": read_int(cgroup / "memory.events", "oom_kill"),
    }


def timestamp(line: dict) -> float | None:
    """A JSON log line's time in epoch seconds."""
    stamp = line.get("timestamp")
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def log_figures(log: Path, start: float, end: float) -> dict:
    """Access lines and their size; log bytes per second between start and end (epoch s)."""
    access = access_bytes = window_bytes = 0
    with log.open("rb") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            if line.get("target") == "redis_sessions::access":
                access += 1
                access_bytes += len(raw)
            at = timestamp(line)
            if at is not None and start <= at < end:
                window_bytes += len(raw)
    return {
        "access_lines": access,
        "bytes_per_access_line": access_bytes / access if access else 0.0,
        "bytes_per_second": window_bytes / (end - start) if end > start else 0.0,
    }


def mib(n: int | None) -> str:
    """Bytes as MiB for the report."""
    return "?" if n is None else f"{n / 1048576:.1f} MiB"


def cmd_report(args: argparse.Namespace) -> int:
    """Peak memory per instance and log volume; fails on any OOM kill."""
    failed = False
    all_access = all_bytes = 0.0
    print("| instance | cgroup peak | peak RSS | limit | limit hits | OOM kills | access lines | bytes/line | log B/s under load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for directory in map(Path, args.instances):
        mem = memory_figures(Path((directory / "cgroup.path").read_text().strip()))
        logs = log_figures(directory / "stdout.log", args.window[0], args.window[1])
        all_access += logs["access_lines"]
        all_bytes += logs["access_lines"] * logs["bytes_per_access_line"]
        hwm = [int(n) * 1024 for n in (directory / "hwm").read_text().split()] if (directory / "hwm").exists() else []
        print(f"| {directory.name} | {mib(mem['peak'])} | {mib(max(hwm, default=None))} | {mib(mem['limit'])} | {mem['failcnt']} "
              f"| {mem['oom_kill']} | {logs['access_lines']} | {logs['bytes_per_access_line']:.0f} "
              f"| {logs['bytes_per_second']:,.0f} |")
        if mem["oom_kill"] is None or mem["oom_kill"] > 0:
            failed = True
    if all_access:
        per_line = all_bytes / all_access
        print(f"\naccess lines: {all_access:.0f}, {per_line:.0f} bytes each on average", end="")
        if args.limit > 0:
            print(f"; log-rate-limit-per-second {args.limit} B/s carries {args.limit / per_line:.0f} of them per second per instance")
        else:
            print()
    if failed:
        print("FAIL: an instance was OOM-killed (or its OOM count could not be read)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)

    p = sub.add_parser("manifest", help="check a manifest and print it as shell assignments")
    p.add_argument("--check-only", action="store_true", help="check keys and values, not the package")
    p.add_argument("manifest")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("vcap-application")
    p.add_argument("name")
    p.add_argument("index", type=int)
    p.add_argument("guid")
    p.add_argument("port", type=int)
    p.add_argument("memory_mb", type=int)
    p.add_argument("disk_mb", type=int)
    p.set_defaults(func=cmd_vcap_application)

    p = sub.add_parser("vcap-services")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("password")
    p.add_argument("services", nargs="*")
    p.set_defaults(func=cmd_vcap_services)

    p = sub.add_parser("keepalive")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("idle", type=float)
    p.set_defaults(func=cmd_keepalive)

    p = sub.add_parser("replays")
    p.add_argument("instances", nargs="+", help="instance directories (stdout.log)")
    p.set_defaults(func=cmd_replays)

    p = sub.add_parser("report")
    p.add_argument("--limit", type=int, default=-1, help="log-rate-limit-per-second in bytes")
    p.add_argument("--window", type=float, nargs=2, default=(0.0, 0.0), metavar=("START", "END"))
    p.add_argument("instances", nargs="+", help="instance directories (cgroup.path, stdout.log, hwm)")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

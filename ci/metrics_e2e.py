#!/usr/bin/env python3
"""Drives the seed's Test 1 over several instances, then checks what Prometheus counted.

The router's round-robin is played here: page load k goes to instance k mod n, with the one
session cookie. Prometheus, scraping every instance's metrics listener, must then report
exactly that many page loads in sum(http_server_request_duration_seconds_count{http_route="/"}),
spread evenly over the instances. Only the standard library is used (urllib, json, html.parser).
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

PAGE_LOADS = 'sum(http_server_request_duration_seconds_count{http_route="/"})'


class CounterPage(HTMLParser):
    """Collects the text of the elements with id "visits" and "instance"."""

    def __init__(self):
        super().__init__()
        self.values = {}
        self._current = None

    def handle_starttag(self, tag, attrs):
        element_id = dict(attrs).get("id")
        if element_id in ("visits", "instance"):
            self._current = element_id
            self.values[element_id] = ""

    def handle_endtag(self, tag):
        self._current = None

    def handle_data(self, data):
        if self._current:
            self.values[self._current] += data


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def get(url, headers=None, timeout=5):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.headers, response.read().decode()


def wait_until(what, seconds, check):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            fail(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.2)


def query(prometheus, promql):
    """An instant query; returns {label set: value} for a vector result."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    _, _, body = get(url)
    answer = json.loads(body)
    if answer.get("status") != "success":
        fail(f"Prometheus refused {promql}: {answer}")
    return {
        tuple(sorted(r["metric"].items())): float(r["value"][1])
        for r in answer["data"]["result"]
    }


def scalar(prometheus, promql):
    """A query whose result is one series (or none, read as 0)."""
    result = query(prometheus, promql)
    if len(result) > 1:
        fail(f"{promql} gave {len(result)} series, expected one")
    return next(iter(result.values()), 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("instances", nargs="+")
    args = parser.parse_args()
    n = len(args.instances)
    if args.loads % n:
        fail(f"--loads {args.loads} does not spread evenly over {n} instances")

    for url in args.instances:
        wait_until(f"{url}/ready", 30, lambda: get(f"{url}/ready")[0] == 200)
    wait_until("Prometheus to be ready", 30, lambda: get(f"{args.prometheus}/-/ready")[0] == 200)
    wait_until(
        f"Prometheus to scrape all {n} instances",
        30,
        lambda: scalar(args.prometheus, 'count(up{job="redis-sessions"} == 1)') == n,
    )
    before = scalar(args.prometheus, PAGE_LOADS)
    if before != 0:
        fail(f"{PAGE_LOADS} is {before} before any page load")
    print(f"PASS: Prometheus scrapes all {n} metrics listeners; no page load counted yet")

    cookie = None
    for k in range(args.loads):
        instance = k % n
        headers = {"Cookie": cookie} if cookie else {}
        status, response_headers, body = get(args.instances[instance] + "/", headers)
        if status != 200:
            fail(f"page load {k + 1} answered {status}")
        for set_cookie in response_headers.get_all("Set-Cookie") or []:
            if set_cookie.startswith("sid="):
                cookie = set_cookie.split(";", 1)[0]
        page = CounterPage()
        page.feed(body)
        shown = (page.values.get("instance"), page.values.get("visits"))
        if shown != (str(instance), str(k + 1)):
            fail(f"page load {k + 1}: expected instance {instance} and count {k + 1}, got {shown}")
    print(f"PASS: Test 1: {args.loads} page loads over {n} instances counted 1..{args.loads}")

    wait_until(
        f"{PAGE_LOADS} to reach {args.loads}",
        30,
        lambda: scalar(args.prometheus, PAGE_LOADS) >= args.loads,
    )
    # Two more scrape intervals: a count that went on rising would be caught here.
    time.sleep(2.5)
    total = scalar(args.prometheus, PAGE_LOADS)
    if total != args.loads:
        fail(f"{PAGE_LOADS} = {total}, expected {args.loads} page loads")
    print(f"PASS: {PAGE_LOADS} = {total:g}, the number of page loads")

    by_instance = query(
        args.prometheus,
        'sum by (cf_instance_index) (http_server_request_duration_seconds_count{http_route="/"})',
    )
    each = {dict(labels)["cf_instance_index"]: value for labels, value in by_instance.items()}
    expected = {str(i): args.loads / n for i in range(n)}
    if each != expected:
        fail(f"page loads by instance {each}, expected {expected}")
    print(f"PASS: {args.loads // n} page loads on each instance")

    created = scalar(args.prometheus, "sum(redis_sessions_sessions_created_total)")
    if created != 1:
        fail(f"sum(redis_sessions_sessions_created_total) = {created}, expected 1 session")
    info = scalar(args.prometheus, 'count(redis_sessions_build_info{store="redis"})')
    if info != n:
        fail(f"redis_sessions_build_info found for {info} instances, expected {n}")
    failed = scalar(
        args.prometheus,
        'sum(redis_sessions_redis_operation_duration_seconds_count{outcome!="ok"}) or vector(0)',
    )
    if failed != 0:
        fail(f"{failed} Redis operations failed")
    print("PASS: one session created, every instance reports build info on Redis, no Redis failure")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Browser check of the visit counter, driven through chromedriver's W3C WebDriver API.

Only the standard library is used so that CI needs nothing beyond python3, chromium and
chromium-driver. Run by ci/browser.sh, which starts the service and chromedriver.
"""

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Chromium's first start on a small CI machine (2 cores) can take many seconds.
SESSION_TIMEOUT = 90
COMMAND_TIMEOUT = 30
WAIT_TIMEOUT = 10
POLL_INTERVAL = 0.1

# Fixed by the W3C spec (not chromedriver's own "ELEMENT"), so it works with any driver.
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    # A fixed size keeps screenshots comparable between runs and machines.
    "--window-size=1280,900",
]

# A proxy from the environment must never see requests meant for 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CheckFailed(Exception):
    """A step of the check did not give what the page should give."""


class WebDriverError(Exception):
    """chromedriver refused or failed a command; `code` is the W3C error code, if any."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def error_from_response(method, url, e):
    """WebDriver errors come as JSON bodies on 4xx/5xx; their code and message are the useful part."""
    payload = e.read()
    try:
        value = json.loads(payload)["value"]
        code, message = value["error"], value["message"]
    except (ValueError, KeyError, TypeError):
        return WebDriverError(f"{method} {url}: HTTP {e.code}: {payload[:500]!r}")
    return WebDriverError(f"{method} {url}: {code}: {message}", code)


def http_json(method, url, body=None, timeout=COMMAND_TIMEOUT):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json; charset=utf-8")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as e:
        raise error_from_response(method, url, e) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise WebDriverError(f"{method} {url}: {e}") from None
    return json.loads(payload)["value"] if payload else None


class Browser:
    """One WebDriver session; use as a context manager so the browser always goes away."""

    def __init__(self, webdriver_url, chromium, profile_dir):
        self.webdriver_url = webdriver_url.rstrip("/")
        self.chromium = chromium
        self.profile_dir = profile_dir
        self.session_id = None

    def __enter__(self):
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.chromium,
                        "args": CHROMIUM_ARGS + [f"--user-data-dir={self.profile_dir}"],
                    },
                }
            }
        }
        value = http_json("POST", f"{self.webdriver_url}/session", capabilities, timeout=SESSION_TIMEOUT)
        self.session_id = value["sessionId"]
        caps = value.get("capabilities", {})
        print(f"browser: {caps.get('browserName')} {caps.get('browserVersion')}", flush=True)
        return self

    def __exit__(self, *exc):
        if self.session_id is None:
            return False
        try:
            http_json("DELETE", self._url(""))
        except WebDriverError as e:
            # The original failure matters more; ci/browser.sh kills chromedriver anyway.
            print(f"warning: could not end the WebDriver session: {e}", file=sys.stderr)
        self.session_id = None
        return False

    def _url(self, path):
        return f"{self.webdriver_url}/session/{self.session_id}{path}"

    def command(self, method, path, body=None):
        return http_json(method, self._url(path), body)

    def navigate(self, url):
        self.command("POST", "/url", {"url": url})

    def refresh(self):
        self.command("POST", "/refresh", {})

    def current_url(self):
        return self.command("GET", "/url")

    def find(self, css):
        """The element matching `css`, or None while the page does not have it yet."""
        try:
            value = self.command("POST", "/element", {"using": "css selector", "value": css})
        except WebDriverError as e:
            if e.code == "no such element":
                return None
            raise
        return value[ELEMENT_KEY]

    def text(self, element):
        return self.command("GET", f"/element/{element}/text")

    def click(self, element):
        self.command("POST", f"/element/{element}/click", {})

    def is_stale(self, element):
        try:
            self.command("GET", f"/element/{element}/name")
        except WebDriverError as e:
            if e.code in ("stale element reference", "no such element"):
                return True
            raise
        return False

    def execute(self, script):
        return self.command("POST", "/execute/sync", {"script": script, "args": []})

    def cookie(self, name):
        """The named cookie as WebDriver sees it (HttpOnly ones included), or None."""
        try:
            return self.command("GET", f"/cookie/{name}")
        except WebDriverError as e:
            if e.code == "no such cookie":
                return None
            raise

    def screenshot(self, path):
        png = base64.b64decode(self.command("GET", "/screenshot"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return len(png)


def wait_until(description, probe, timeout=WAIT_TIMEOUT):
    """Polls `probe` until it returns (True, value); fails naming the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        done, last = probe()
        if done:
            return last
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {description}; last seen: {last!r}")
        time.sleep(POLL_INTERVAL)


def read_visits(browser, expected):
    """Waits for a loaded page whose #visits shows `expected`, and returns it."""

    def probe():
        if browser.execute("return document.readyState") != "complete":
            return False, "page still loading"
        element = browser.find("#visits")
        if element is None:
            return False, f"no #visits on {browser.current_url()}"
        try:
            text = browser.text(element).strip()
        except WebDriverError as e:
            # The page may be replaced between finding the element and reading it.
            if e.code == "stale element reference":
                return False, "page replaced while reading"
            raise
        return text == str(expected), text

    return wait_until(f"#visits to read {expected}", probe)


def passed(message):
    print(f"PASS: {message}", flush=True)


def check_counting(browser, base_url):
    browser.navigate(f"{base_url}/")
    read_visits(browser, 1)
    passed("first visit reads 1")
    for visits in (2, 3, 4):
        browser.refresh()
        read_visits(browser, visits)
    passed("after 3 reloads #visits reads 4")


def check_cookie_is_http_only(browser):
    cookie = browser.cookie("sid")
    # Without this, a missing cookie would pass the document.cookie check for the wrong reason.
    if cookie is None:
        raise CheckFailed("the browser holds no 'sid' cookie, yet the count survived reloads")
    if cookie.get("httpOnly") is not True:
        raise CheckFailed(f"the 'sid' cookie is not HttpOnly: {cookie!r}")
    visible = browser.execute("return document.cookie")
    names = [part.split("=", 1)[0].strip() for part in visible.split(";") if part.strip()]
    if "sid" in names:
        raise CheckFailed(f"document.cookie exposes the session cookie: {visible!r}")
    passed(f"'sid' is HttpOnly: set in the browser, absent from document.cookie ({visible!r})")


def check_forget_me(browser, base_url):
    """Clicks 'Forget me' and returns the session cookie it was meant to retire."""
    button = browser.find('form[action="/reset"] button[type="submit"]')
    if button is None:
        raise CheckFailed("no submit button in a form posting to /reset")
    label = browser.text(button).strip()
    if label != "Forget me":
        raise CheckFailed(f"the reset button reads {label!r}, expected 'Forget me'")
    old_visits = browser.find("#visits")
    old_sid = browser.cookie("sid")
    browser.click(button)
    # Until the old page is gone, #visits would still read the old count.
    wait_until("the page to be replaced after the click", lambda: (browser.is_stale(old_visits), "old page"))
    read_visits(browser, 1)
    url = browser.current_url()
    if url.rstrip("/") != base_url.rstrip("/"):
        raise CheckFailed(f"after 'Forget me' the browser is on {url!r}, expected {base_url}/")
    passed(f"'Forget me' lands on {url} with a fresh count of 1")
    return old_sid


def check_session_renewed(browser, old_sid):
    new_sid = browser.cookie("sid")
    # A reused id would let whoever knew the old cookie follow the visitor (session fixation).
    # Values stay out of the messages: they are bearer credentials.
    if new_sid is None:
        raise CheckFailed("no 'sid' cookie after 'Forget me', yet the count page was served")
    if old_sid is not None and new_sid["value"] == old_sid["value"]:
        raise CheckFailed("'Forget me' kept the same session cookie value")
    passed("'Forget me' issued a new session cookie")


def save_screenshot(browser, path):
    size = browser.screenshot(path)
    if size == 0:
        raise CheckFailed("the screenshot is empty")
    passed(f"screenshot saved ({size} bytes)")
    print(f"screenshot: {path}", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the service, e.g. http://127.0.0.1:18080")
    parser.add_argument("--webdriver", required=True, help="chromedriver, e.g. http://127.0.0.1:9515")
    parser.add_argument("--screenshot", required=True, help="PNG file to write")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser binary for chromedriver")
    return parser.parse_args(argv)


def run(args):
    if not (os.path.isfile(args.chromium) and os.access(args.chromium, os.X_OK)):
        raise CheckFailed(f"{args.chromium} is missing: install the Debian package 'chromium'")
    base_url = args.base_url.rstrip("/")
    # A fresh profile: cookies or cache left by an earlier run would skew the counts.
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with Browser(args.webdriver, args.chromium, profile_dir) as browser:
            check_counting(browser, base_url)
            check_cookie_is_http_only(browser)
            old_sid = check_forget_me(browser, base_url)
            check_session_renewed(browser, old_sid)
            save_screenshot(browser, args.screenshot)
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (CheckFailed, WebDriverError) as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    print("PASS: browser check complete", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

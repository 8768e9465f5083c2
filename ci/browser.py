#!/usr/bin/env python3
"""Browser check of the visit counter in headless Chromium, driven by Selenium.

Run by ci/browser.sh, which starts the service and installs Selenium (pinned in
ci/browser.requirements.txt) into a venv. Selenium starts Debian's chromedriver itself; it
never downloads a driver, because the driver's path is given (Selenium Manager is skipped).
"""

import argparse
import os
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

# Chromium's first start on a small CI machine (2 cores) can take many seconds.
PAGE_LOAD_TIMEOUT = 60
WAIT_TIMEOUT = 10

DESKTOP = (1280, 900)
# An iPhone 12-15's CSS viewport: the narrow width most visitors on a phone have.
PHONE = (390, 844)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # A fixed size keeps screenshots comparable between runs and machines.
    f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
]


class CheckFailed(Exception):
    """A step of the check did not give what the page should give."""


def passed(message):
    print(f"PASS: {message}", flush=True)


def wait_for(driver, description, condition):
    """Waits for `condition(driver)` to be truthy and returns it; fails naming what was awaited."""
    try:
        return WebDriverWait(driver, WAIT_TIMEOUT, ignored_exceptions=[StaleElementReferenceException]).until(
            condition
        )
    except TimeoutException:
        raise CheckFailed(f"timed out after {WAIT_TIMEOUT}s waiting for {description} on {driver.current_url}")


def read_visits(driver, expected):
    """Waits for a loaded page whose #visits shows `expected`."""
    wait_for(
        driver,
        f"#visits to read {expected}",
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.find_element(By.ID, "visits").text.strip() == str(expected),
    )


def check_counting(driver, base_url):
    driver.get(f"{base_url}/")
    read_visits(driver, 1)
    passed("first visit reads 1")
    for visits in (2, 3, 4):
        driver.refresh()
        read_visits(driver, visits)
    passed("after 3 reloads #visits reads 4")


def check_stylesheet(driver, base_url):
    """The page's styles come from its linked stylesheet, which a later visit takes from cache."""
    weight, display = driver.execute_script(
        "const s = getComputedStyle(document.getElementById('visits')); return [s.fontWeight, s.display];"
    )
    # An unstyled <span> is inline at weight 400: these two say the stylesheet applied.
    if (weight, display) != ("700", "block"):
        raise CheckFailed(f"#visits is not styled (font-weight {weight}, display {display}): was the stylesheet served?")
    # A navigation rather than a reload: a reload may revalidate every subresource.
    driver.get(f"{base_url}/")
    read_visits(driver, 5)
    sheets = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.initiatorType === 'link' && new URL(e.name).pathname === '/style.css')"
        ".map(e => e.transferSize);"
    )
    if not sheets:
        raise CheckFailed("the page loaded no /style.css")
    if any(size != 0 for size in sheets):
        raise CheckFailed(f"the stylesheet came over the network again (transferSize {sheets}), not from cache")
    passed("the linked stylesheet styles #visits, and the next visit takes it from cache")


def check_cookie_is_http_only(driver):
    cookie = driver.get_cookie("sid")
    # Without this, a missing cookie would pass the document.cookie check for the wrong reason.
    if cookie is None:
        raise CheckFailed("the browser holds no 'sid' cookie, yet the count survived reloads")
    if cookie.get("httpOnly") is not True:
        raise CheckFailed("the 'sid' cookie is not HttpOnly")
    visible = driver.execute_script("return document.cookie")
    names = [part.split("=", 1)[0].strip() for part in visible.split(";") if part.strip()]
    if "sid" in names:
        raise CheckFailed(f"document.cookie exposes the session cookie (names: {names})")
    passed(f"'sid' is HttpOnly: set in the browser, absent from document.cookie ({visible!r})")


def check_forget_me(driver, base_url):
    """Clicks 'Forget me' and checks the fresh count and the new session cookie."""
    buttons = driver.find_elements(By.CSS_SELECTOR, 'form[action="/reset"] button[type="submit"]')
    if not buttons:
        raise CheckFailed("no submit button in a form posting to /reset")
    label = buttons[0].text.strip()
    if label != "Forget me":
        raise CheckFailed(f"the reset button reads {label!r}, expected 'Forget me'")
    old_visits = driver.find_element(By.ID, "visits")
    old_sid = driver.get_cookie("sid")
    buttons[0].click()
    # Until the old page is gone, #visits would still read the old count.
    wait_for(driver, "the page to be replaced after the click", EC.staleness_of(old_visits))
    read_visits(driver, 1)
    url = driver.current_url
    if url.rstrip("/") != base_url:
        raise CheckFailed(f"after 'Forget me' the browser is on {url!r}, expected {base_url}/")
    passed(f"'Forget me' lands on {url} with a fresh count of 1")

    new_sid = driver.get_cookie("sid")
    # A reused id would let whoever knew the old cookie follow the visitor (session fixation).
    # Values stay out of the messages: they are bearer credentials.
    if new_sid is None:
        raise CheckFailed("no 'sid' cookie after 'Forget me', yet the count page was served")
    if old_sid is not None and new_sid["value"] == old_sid["value"]:
        raise CheckFailed("'Forget me' kept the same session cookie value")
    passed("'Forget me' issued a new session cookie")


def save_screenshot(driver, path):
    if not driver.save_screenshot(path) or os.path.getsize(path) == 0:
        raise CheckFailed(f"the screenshot {path} is empty")
    passed(f"screenshot saved: {path} ({os.path.getsize(path)} bytes)")


def check_phone_width(driver, base_url, path):
    """At a phone's width the page must fit: no sideways scrolling, as a person would notice."""
    width, height = PHONE
    # Device emulation rather than a window resize, so that the page is laid out as on a phone,
    # where the viewport meta tag decides the layout width.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        driver.get(f"{base_url}/")
        read_visits(driver, 2)
        client, scroll = driver.execute_script(
            "const e = document.documentElement; return [e.clientWidth, e.scrollWidth];"
        )
        # Without a viewport meta tag a phone lays the page out 980 px wide and shrinks it.
        if client != width:
            raise CheckFailed(f"at {width} px the layout is {client} px wide: is the viewport meta tag missing?")
        if scroll > client:
            raise CheckFailed(f"at {width} px the page scrolls sideways: scrollWidth {scroll} > clientWidth {client}")
        passed(f"at {width} px wide the page has no horizontal scrolling (scrollWidth {scroll} <= {client})")
        save_screenshot(driver, path)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the service, e.g. http://127.0.0.1:18080")
    parser.add_argument("--screenshot-dir", required=True, help="directory for counter.png and counter-phone.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser binary")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="the driver binary")
    parser.add_argument("--driver-log", help="file for chromedriver's log")
    return parser.parse_args(argv)


def run(args):
    for path, package in ((args.chromium, "chromium"), (args.chromedriver, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise CheckFailed(f"{path} is missing: install the Debian package '{package}'")
    base_url = args.base_url.rstrip("/")
    os.makedirs(args.screenshot_dir, exist_ok=True)
    # A fresh profile: cookies or cache left by an earlier run would skew the counts.
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for arg in CHROMIUM_ARGS + [f"--user-data-dir={profile_dir}"]:
        options.add_argument(arg)
    service = Service(executable_path=args.chromedriver, log_output=args.driver_log)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        check_counting(driver, base_url)
        check_stylesheet(driver, base_url)
        check_cookie_is_http_only(driver)
        check_forget_me(driver, base_url)
        save_screenshot(driver, os.path.join(args.screenshot_dir, "counter.png"))
        check_phone_width(driver, base_url, os.path.join(args.screenshot_dir, "counter-phone.png"))
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (CheckFailed, WebDriverException) as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    print("PASS: browser check complete", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

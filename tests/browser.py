"""A real, headless Chromium driving the dashboard (Selenium + Debian's chromium-driver), for the
browser tests (tests/node/test_dashboard.py) and bench/dashboard.py.

`python3 -m lab test` installs `chromium` and `chromium-driver` when run as root (lab/bootstrap.py)
and Selenium with the dev extra; `missing()` says what is absent (the tests skip with that
reason, and only then). Every wait has a deadline: `wait(driver, pred, what)` raises with what
it waited for; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.nodeproc import NodeProc

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)
WAIT = 20.0  # s: the longest any one thing in the page may take


def _which(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return next((p for p in extra if os.access(p, os.X_OK)), None)


def chromium_path() -> str | None:
    return _which(CHROMIUM, ("/usr/bin/chromium", "/usr/lib/chromium/chromium"))


def driver_path() -> str | None:
    return _which(DRIVER, ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"))


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    if chromium_path() is None:
        return "no Chromium (Debian: apt-get install chromium; python3 -m lab test does as root)"
    if driver_path() is None:
        return "no chromedriver (Debian: apt-get install chromium-driver)"
    return None


def start_chromium(width: int = 1280, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium_path() or "chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-renderer-backgrounding",
        "--disable-background-timer-throttling",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path()), options=opts)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def wait(driver: Any, pred: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    """pred's first truthy value within `timeout` s (polled by Selenium), else AssertionError."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(pred)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout} s") from None


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def one(driver: Any, selector: str, what: str | None = None) -> Any:
    return wait(driver, lambda d: next(iter(css(d, selector)), None), what or selector)


def login(driver: Any, node: NodeProc, token: str | None = None) -> None:
    """Open the node's dashboard and log in with its token (or `token`)."""
    driver.get(node.api_url + "/")
    if not css(driver, "#login-view:not([hidden]) #token"):
        # Chromium aborts loads with ERR_NETWORK_CHANGED when the host's interfaces change (a
        # parallel lab test creating Docker bridges): load the page again, once, if it is not up.
        with contextlib.suppress(AssertionError):
            one(driver, "#login-view:not([hidden]) #token", "the login form")
        if not css(driver, "#login-view:not([hidden]) #token"):
            driver.get(node.api_url + "/")
    field = one(driver, "#login-view:not([hidden]) #token", "the login form")
    field.clear()
    field.send_keys(token if token is not None else node.file_token())
    one(driver, "#login-submit").click()


def logged_in(driver: Any, node: NodeProc) -> None:
    login(driver, node)
    one(driver, "#app-view:not([hidden])", "the dashboard after login")
    wait(driver, lambda d: d.execute_script("return window.moleStats && true"), "the app")
    one(driver, '#live[data-state="live"]', "the live event stream")


def drop_files(driver: Any, paths: list[Path], target: str = "#drop") -> None:
    """Drop files on `target` as a drag and drop does: a DataTransfer holding File objects
    (read by a file input, the only way a page gets real files) in a `drop` event."""
    from selenium.webdriver.common.by import By

    driver.execute_script(
        "let i = document.getElementById('test-drop-files');"
        "if (!i) { i = document.createElement('input'); i.type = 'file'; i.multiple = true;"
        " i.id = 'test-drop-files'; i.hidden = true; document.body.append(i); }"
        "i.value = '';"
    )
    driver.find_element(By.ID, "test-drop-files").send_keys("\n".join(str(p) for p in paths))
    driver.execute_script(
        "const files = document.getElementById('test-drop-files').files;"
        "const dt = new DataTransfer();"
        "for (const f of files) dt.items.add(f);"
        "const t = document.querySelector(arguments[0]);"
        "for (const type of ['dragenter', 'dragover', 'drop']) {"
        "  t.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true,"
        "    cancelable: true}));"
        "}",
        target,
    )


def console_errors(driver: Any) -> list[str]:
    """Severe console lines other than refused requests the page expects (401s, 404s)."""
    out = []
    for entry in driver.get_log("browser"):
        msg = str(entry.get("message", ""))
        if entry.get("level") != "SEVERE":
            continue
        if "Failed to load resource" in msg and any(s in msg for s in ("401", "404", "409")):
            continue
        if "net::ERR_NETWORK_CHANGED" in msg:
            continue  # the host's interfaces changed (a parallel lab test), not the page's fault
        out.append(msg)
    return out


__all__ = [
    "console_errors",
    "css",
    "drop_files",
    "logged_in",
    "login",
    "missing",
    "one",
    "start_chromium",
    "wait",
]

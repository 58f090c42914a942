"""The web dashboard in a real browser: headless Chromium (Selenium) against real nodes on
loopback. Every check reads the DOM; every wait has a deadline (tests/browser.py).

Skipped, with the reason, only where no browser can be had (see tests/browser.py `missing`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import browser as br
from tests.node.test_integration import write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "dashboard.png"
# The screenshot in the README is retaken only on request, so a test run never dirties the tree.
UPDATE_SCREENSHOT = os.environ.get("MOLE_UPDATE_SCREENSHOT") == "1"

pytestmark = pytest.mark.slow

# The values a transfer row's progress bar took, as the page drew them.
WATCH_PROGRESS = """
window.seenProgress = {};
new MutationObserver((records) => {
  for (const r of records) {
    const li = r.target.closest && r.target.closest('li[data-id]');
    if (!li) continue;
    const bar = li.querySelector('.bar');
    const v = bar && bar.getAttribute('aria-valuenow');
    if (v === null) continue;
    (window.seenProgress[li.dataset.id] ||= []).push(Number(v));
  }
}).observe(document.getElementById('transfers'),
           {subtree: true, attributes: true, childList: true});
"""


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    why = br.missing()
    if why:
        pytest.skip(f"no browser for the dashboard tests: {why}")
    driver = br.start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(chrome: Any) -> Iterator[Any]:
    chrome.set_window_size(1280, 1000)
    yield chrome
    # A page whose node a test has stopped retries its event stream: a refused connection
    # then is the page working as meant, not a script error or a CSP violation.
    errors = [e for e in br.console_errors(chrome) if "net::ERR_CONNECTION_REFUSED" not in e]
    chrome.get("about:blank")
    chrome.delete_all_cookies()
    assert errors == [], errors  # no script error, no CSP violation


def row_of(driver: Any, name: str, state: str | None = None) -> Any:
    """The transfer row showing file `name` (and in `state`)."""
    for li in br.css(driver, "#transfers li[data-id]"):
        if li.find_element("css selector", ".name").text == name and (
            state is None or li.get_attribute("data-state") == state
        ):
            return li
    return None


def choose_peer(driver: Any, node: NodeProc) -> None:
    from selenium.webdriver.support.ui import Select

    br.one(driver, f'#send-peer option[value="{node.node_id}"]', f"{node.name} to send to")
    Select(br.one(driver, "#send-peer")).select_by_value(node.node_id)


def test_login_is_refused_with_a_wrong_token_and_accepted_with_the_right_one(
    page: Any, tmp_path: Path
) -> None:
    with nodes(tmp_path, ["alpha"]) as (a,):
        br.login(page, a, "not-the-token-at-all")
        br.wait(page, lambda d: "Wrong token" in br.one(d, "#login-error").text, "the refusal")
        assert br.one(page, "#app-view").get_attribute("hidden") is not None
        br.login(page, a)
        br.one(page, "#app-view:not([hidden])", "the dashboard")
        br.wait(page, lambda d: br.one(d, "#node-name").text == "alpha", "the node's name")
        facts = br.one(page, "#node-facts").text
        assert a.node_id in facts and str(a.share) in facts and str(a.inbox) in facts
        # The token is nowhere a script or a URL could reach.
        token = a.file_token()
        assert token not in page.current_url and token not in page.page_source
        script_view = page.execute_script(
            "return [document.cookie, JSON.stringify(localStorage), "
            "JSON.stringify(sessionStorage)].join(' ')"
        )
        assert token not in script_view and "mole_session" not in script_view
        # Logging out ends the session.
        br.one(page, "#logout").click()
        br.one(page, "#login-view:not([hidden])", "the login form after logout")
        assert a.api_raw("GET", "/api/node", token="wrong-token-wrong-token")[0] == 401


def test_peers_appear_and_go_live_and_peer_text_stays_text(page: Any, tmp_path: Path) -> None:
    with nodes(tmp_path, ["alpha", "beta"]) as (a, b):
        wait_mesh([a, b])
        br.logged_in(page, a)
        br.one(page, f'#peers li[data-node="{b.node_id}"][data-online="true"]', "beta online")
        # A peer arriving now appears without a reload; its name is markup, shown as text.
        evil = '<img src=x onerror="window.pwned=1">'
        c = NodeProc(tmp_path, "c", a.discovery_port, "--name", evil).start()
        try:
            row = br.one(page, f'#peers li[data-node="{c.node_id}"]', "the new peer")
            br.wait(page, lambda d: row.find_element("css selector", ".name").text == evil, "name")
            assert br.css(page, "#peers img") == [] and not page.execute_script(
                "return window.pwned"
            )
            c.stop()  # a goodbye: shown offline at once
            br.one(page, f'#peers li[data-node="{c.node_id}"][data-online="false"]', "c offline")
        finally:
            c.stop()


def test_a_drag_and_drop_send_completes_and_the_peer_has_the_file(
    page: Any, tmp_path: Path
) -> None:
    outside = tmp_path / "desktop"  # the browser's files: not in any node's share
    files = [outside / "holiday.mov", outside / "notes.pdf", outside / "song.flac"]
    digests = [write_random(p, (6 - 2 * i) << 20, seed=i) for i, p in enumerate(files)]
    with nodes(tmp_path, ["alpha", "beta"], "--max-rate", "2MiB") as (a, b):
        wait_mesh([a, b])
        write_random(b.share / "album/cover.jpg", 300_000, seed=9)
        b.wait_api("/api/files", lambda fs: any(f["name"] == "album/cover.jpg" for f in fs))
        a.api("POST", "/api/pull", {"peer": "beta", "name": "album/cover.jpg"})
        a.api("POST", "/api/pull", {"peer": "beta", "name": "no-such-file.txt"})  # fails
        page.set_window_size(1280, 1500)  # the README's screenshot: most of the page
        br.logged_in(page, a)
        page.execute_script(WATCH_PROGRESS)
        choose_peer(page, b)
        br.drop_files(page, files)
        # Mid-way: the bar moves; the README's screenshot is taken here.
        first = br.wait(page, lambda d: row_of(d, "holiday.mov", "active"), "holiday.mov active")
        br.wait(  # its totals, from batch_started (the record starts before its walk)
            page,
            lambda d: "/3 files" in first.find_element("css selector", ".sub").text,
            "the batch's file count",
        )
        br.wait(
            page,
            lambda d: 20 <= int(first.find_element("css selector", ".bar").get_attribute(
                "aria-valuenow") or 0) <= 80,
            "holiday.mov part-way",
        )  # fmt: skip
        shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "dashboard.png"
        page.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The three dropped files are one batch: one row, named for its first file.
        br.wait(page, lambda d: row_of(d, "holiday.mov", "done"), "the batch done", timeout=40)
        assert all(row_of(page, p.name) is None for p in files[1:])
        seen = page.execute_script("return window.seenProgress")
        tid = first.get_attribute("data-id")
        assert seen[tid][-1] == 100 and any(0 < v < 100 for v in seen[tid]), seen[tid]
        sub = first.find_element("css selector", ".sub").text
        assert sub.startswith("3/3 files · 12.0 MiB in "), sub
        for p, digest in zip(files, digests, strict=True):
            got = b.inbox / p.name
            assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
        # The receiving node's own dashboard shows them in its inbox.
        page.delete_all_cookies()
        br.logged_in(page, b)
        for p in files:
            br.one(page, f'#inbox li[data-name="{p.name}"]', f"{p.name} in beta's inbox")
        failed = [t["name"] for t in a.api("GET", "/api/transfers") if t["state"] == "failed"]
        assert failed == ["no-such-file.txt"]


def test_a_pull_from_a_peers_share(page: Any, tmp_path: Path) -> None:
    with nodes(tmp_path, ["alpha", "beta"]) as (a, b):
        wait_mesh([a, b])
        digest = write_random(b.share / "docs/report.pdf", 1_500_000, seed=3)
        b.wait_api("/api/files", lambda fs: any(f["name"] == "docs/report.pdf" for f in fs))
        br.logged_in(page, a)
        br.one(page, f'#peers li[data-node="{b.node_id}"] button.browse', "Browse").click()
        pull = br.one(page, '#browse li[data-name="docs/report.pdf"] button.pull', "the file")
        pull.click()
        br.wait(page, lambda d: row_of(d, "docs/report.pdf", "done"), "the pull done")
        br.one(page, '#inbox li[data-name="docs/report.pdf"]', "the file in the inbox")
        got = a.inbox / "docs" / "report.pdf"
        assert hashlib.sha256(got.read_bytes()).hexdigest() == digest


def test_cancel_then_retry(page: Any, tmp_path: Path) -> None:
    with nodes(tmp_path, ["alpha", "beta"], "--max-rate", "1MiB") as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "big.iso", 3 << 20, seed=4)
        br.logged_in(page, a)
        t = a.api("POST", "/api/push", {"peer": "beta", "path": "big.iso"})
        row = br.one(page, f'#transfers li[data-id="{t["id"]}"]', "the push")
        br.wait(page, lambda d: row.get_attribute("data-state") == "active", "the push active")
        row.find_element("css selector", "button.cancel").click()
        br.wait(page, lambda d: row.get_attribute("data-state") == "cancelled", "cancelled")
        assert "cancelled" in row.find_element("css selector", ".sub").text
        assert a.api("GET", f"/api/transfers/{t['id']}")["state"] == "cancelled"
        retry = row.find_element("css selector", "button.retry")
        assert (
            retry.is_displayed()
            and not row.find_element("css selector", "button.cancel").is_displayed()
        )
        retry.click()
        again = br.wait(
            page,
            lambda d: next(
                (r for r in br.css(d, "#transfers li[data-id]")
                 if r.get_attribute("data-id") != t["id"]
                 and r.find_element("css selector", ".name").text == "big.iso"),
                None,
            ),
            "the retried transfer",
        )  # fmt: skip
        br.wait(page, lambda d: again.get_attribute("data-state") == "done", "retry done", 30)
        assert hashlib.sha256((b.inbox / "big.iso").read_bytes()).hexdigest() == digest


def test_phone_width_and_keyboard(page: Any, tmp_path: Path) -> None:
    with nodes(tmp_path, ["alpha", "beta"]) as (a, b):
        wait_mesh([a, b])
        page.set_window_size(390, 844)
        br.logged_in(page, a)
        br.one(page, f'#peers li[data-node="{b.node_id}"]', "beta")
        overflow = page.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow} px wider than a phone"
        # Every control is a real button/input with a name a screen reader reads.
        unnamed = page.execute_script(
            "return [...document.querySelectorAll('button, input, select')]"
            ".filter(e => e.offsetParent !== null)"
            ".filter(e => !(e.getAttribute('aria-label') || e.labels?.length || "
            "e.textContent.trim())).map(e => e.outerHTML)"
        )
        assert unnamed == []
        # The drop zone is reachable with the keyboard, and shows where the focus is.
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        page.execute_script("document.activeElement.blur()")
        for _ in range(40):
            ActionChains(page).send_keys(Keys.TAB).perform()
            if page.execute_script("return document.activeElement.id") == "drop":
                break
        assert page.execute_script("return document.activeElement.id") == "drop"
        outline = page.execute_script(
            "return getComputedStyle(document.getElementById('drop')).outlineStyle"
        )
        assert outline != "none"


def test_the_screenshot_is_in_the_readme() -> None:
    assert "docs/dashboard.png" in (REPO / "README.md").read_text()
    if SCREENSHOT.exists():
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(SCREENSHOT) > 10_000

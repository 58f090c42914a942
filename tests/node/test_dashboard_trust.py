"""The dashboard's trust parts in a real browser against real nodes: pending offers
(`--accept prompt`), pairing through two pages, the trust store, the node's own id.
Every wait has a deadline (tests/browser.py)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import browser as br
from tests.node.test_dashboard import chrome, page  # noqa: F401 (fixtures)
from tests.node.test_integration import write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh

pytestmark = pytest.mark.slow

EVIL = '<img src=x onerror="window.pwned=1">'  # a peer-chosen node name


@pytest.fixture
def page2(chrome: Any) -> Iterator[Any]:  # noqa: F811
    """A second browser: both nodes are on 127.0.0.1, and cookies do not keep ports apart."""
    driver = br.start_chromium()
    try:
        yield driver
        assert br.console_errors(driver) == []
    finally:
        driver.quit()


def leave(*drivers: Any) -> None:
    """Close the pages while their nodes still run: a page left open on a stopped node logs
    refused reconnects (its event stream retries), which the fixtures count as errors."""
    for d in drivers:
        d.get("about:blank")


def offer_row(driver: Any) -> Any:
    return br.one(driver, "#offers-card:not([hidden]) #offers li[data-offer]", "a pending offer")


def final(node: NodeProc, tid: str) -> dict[str, Any]:
    return node.wait_api(
        f"/api/transfers/{tid}",
        lambda t: t["state"] in ("done", "failed", "cancelled"),
        what="the push's end",
        timeout=20,
    )


@contextlib.contextmanager
def pairing_asked(
    tmp_path: Path, alpha_page: Any, beta_page: Any
) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Strangers alpha (on `alpha_page`) and beta (on `beta_page`), alpha's Pair button for beta
    clicked: beta's page is about to ask its user."""
    with nodes(tmp_path, ["alpha", "beta"], group=False) as (a, b):
        wait_mesh([a, b])
        br.logged_in(alpha_page, a)
        br.logged_in(beta_page, b)
        pair = br.one(alpha_page, f'#peers li[data-node="{b.node_id}"] button.pair', "Pair")
        br.wait(alpha_page, lambda d: pair.is_displayed(), "the Pair button")
        pair.click()
        yield a, b


def test_an_offer_appears_live_and_accepting_it_delivers_the_file(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    with nodes(tmp_path, ["alpha", "beta"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "report.pdf", 200_000, seed=5)
        br.logged_in(page, b)
        assert br.one(page, "#offers-card").get_attribute("hidden") is not None
        tid = a.api("POST", "/api/push", {"peer": "beta", "path": "report.pdf"})["id"]
        row = offer_row(page)  # by the offer_pending event: no reload
        text = row.text
        human = a.api("GET", "/api/node")["node_human"]
        assert "alpha" in text and "report.pdf" in text and human in text
        row.find_element("css selector", "button.accept").click()
        assert final(a, tid)["state"] == "done"
        assert hashlib.sha256((b.inbox / "report.pdf").read_bytes()).hexdigest() == digest
        br.one(page, "#offers-card[hidden]", "the offer gone from the page")
        assert b.api("GET", "/api/offers") == []
        br.one(page, '#inbox li[data-name="report.pdf"]', "the file in the inbox")
        leave(page)


def test_rejecting_an_offer_leaves_nothing_and_peer_text_stays_text(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    with nodes(tmp_path, ["beta"], "--accept", "prompt", group=False) as (b,):
        a = NodeProc(tmp_path, "evil", b.discovery_port, "--name", EVIL, group=False).start()
        try:
            wait_mesh([a, b])
            write_random(a.share / "gift.bin", 50_000, seed=6)
            br.logged_in(page, b)
            tid = a.api("POST", "/api/push", {"peer": b.node_id, "path": "gift.bin"})["id"]
            row = offer_row(page)
            assert EVIL in row.text and br.css(page, "#offers img") == []
            row.find_element("css selector", "button.reject").click()
            t = final(a, tid)
            assert (t["state"], t["error"]["code"]) == ("failed", "not_authorized")
            br.one(page, "#offers-card[hidden]", "the offer gone from the page")
            assert [p for p in b.inbox.rglob("*") if p.is_file()] == []
            assert not page.execute_script("return window.pwned")
            leave(page)
        finally:
            a.stop()


def test_an_offer_that_times_out_leaves_the_page_by_its_event(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    args = ("--accept", "prompt", "--prompt-timeout", "2")
    with nodes(tmp_path, ["alpha", "beta"], *args, group=False) as (a, b):
        wait_mesh([a, b])
        write_random(a.share / "late.bin", 1000)
        br.logged_in(page, b)
        tid = a.api("POST", "/api/push", {"peer": "beta", "path": "late.bin"})["id"]
        offer_row(page)
        assert final(a, tid)["state"] == "failed"
        br.one(page, "#offers-card[hidden]", "the expired offer gone (offer_decided)")
        leave(page)


def test_a_batch_is_one_offer_row_and_accepting_it_delivers_every_file(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A batch (a folder and several files) under --accept prompt: one row with its file
    count and total, its top-level names (a folder with its count), five at most then "and N
    more"; one Accept takes the whole batch."""
    with nodes(tmp_path, ["alpha", "beta"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        want = {f"album/p{i}.jpg": write_random(a.share / "album" / f"p{i}.jpg", 300, seed=i)
                for i in range(3)}  # fmt: skip
        want.update({f"n{i}.txt": write_random(a.share / f"n{i}.txt", 100, seed=10 + i)
                     for i in range(6)})  # fmt: skip
        br.logged_in(page, b)
        paths = [str(a.share / "album"), *(str(a.share / f"n{i}.txt") for i in range(6))]
        tid = a.api("POST", "/api/push", {"peer": "beta", "paths": paths})["id"]
        row = offer_row(page)
        assert row.get_attribute("data-kind") == "batch"
        text = row.text
        assert "9 files · 1.5 KiB" in text, text
        assert "album/ · 3 files · 900 B" in text and "n3.txt · 100 B" in text, text
        assert "n4.txt" not in text and "and 2 more" in text, text
        assert len(br.css(page, "#offers li[data-offer]")) == 1
        row.find_element("css selector", "button.accept").click()
        assert final(a, tid)["state"] == "done"
        got = {p: hashlib.sha256((b.inbox / p).read_bytes()).hexdigest() for p in want}
        assert got == want
        br.one(page, "#offers-card[hidden]", "the offer gone from the page")
        leave(page)


def test_pairing_through_two_pages_makes_both_nodes_trust_each_other(
    page: Any,  # noqa: F811
    page2: Any,
    tmp_path: Path,
) -> None:
    with pairing_asked(tmp_path, page, page2) as (a, b):
        codes = []
        for d in (page, page2):  # beta's dialog opens by itself, on the `pairing` event
            br.one(d, "#pair-dialog[open] #pair-yes:not([hidden])", "the code to confirm")
            codes.append(br.one(d, "#pair-code").text)
        assert codes[0] == codes[1] and re.fullmatch(r"\d{3} \d{3}", codes[0]), codes
        assert b.api("GET", "/api/node")["node_human"] in br.one(page, "#pair-id").text
        br.one(page2, "#pair-yes").click()
        br.one(page, "#pair-yes").click()
        for d, node, other in ((page, a, b), (page2, b, a)):
            br.one(d, '#pair-dialog[data-state="paired"]', "paired")
            br.one(d, f'#trusted li[data-node="{other.node_id}"]', "the other in the list")
            [entry] = node.api("GET", "/api/trusted")
            assert (entry["node"], entry["how"]) == (other.node_id, "paired")
        # Untrust from the list: gone from the store and from the page.
        br.one(page, "#pair-close").click()
        br.one(page, f'#trusted li[data-node="{b.node_id}"] button.untrust').click()
        br.wait(page, lambda d: a.api("GET", "/api/trusted") == [], "untrusted")
        br.one(page, "#trusted-empty:not([hidden])", "the empty trusted list")
        leave(page, page2)


def test_a_declined_pairing_trusts_nobody(
    page: Any,  # noqa: F811
    page2: Any,
    tmp_path: Path,
) -> None:
    with pairing_asked(tmp_path, page, page2) as (a, b):
        br.one(page2, "#pair-dialog[open] #pair-no:not([hidden])", "beta's dialog").click()
        br.one(page, '#pair-dialog[data-state="failed"]', "alpha told it failed")
        assert a.api("GET", "/api/trusted") == [] and b.api("GET", "/api/trusted") == []
        leave(page, page2)


def test_own_id_copied_and_an_offer_accepted_by_keyboard_at_phone_width(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with nodes(tmp_path, ["alpha", "beta"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        page.set_window_size(390, 844)
        br.logged_in(page, a)
        human = a.api("GET", "/api/node")["node_human"]
        br.wait(page, lambda d: human in br.one(d, "#node-facts").text, "the id in human form")
        page.execute_script(
            "window.copied = null; navigator.clipboard.writeText = "
            "async (t) => { window.copied = t; };"
        )
        br.one(page, "#copy-id").click()
        br.wait(page, lambda d: d.execute_script("return window.copied") == human, "copied")
        br.one(page, "#trusted-card:not([hidden])", "the trusted list")
        long = "a-rather-long-file-name-that-must-wrap-on-a-phone-" * 3 + ".bin"
        write_random(b.share / long, 2000)
        tid = b.api("POST", "/api/push", {"peer": "alpha", "path": long})["id"]
        offer_row(page)
        overflow = page.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow} px wider than a phone"
        page.execute_script("document.activeElement.blur()")
        for _ in range(60):  # the Accept button is reachable with Tab alone
            ActionChains(page).send_keys(Keys.TAB).perform()
            if page.execute_script("return document.activeElement.classList.contains('accept')"):
                break
        ActionChains(page).send_keys(Keys.ENTER).perform()
        assert final(b, tid)["state"] == "done" and (a.inbox / long).is_file()
        br.one(page, f'#inbox li[data-name="{long}"]', "the file in the inbox")
        leave(page)

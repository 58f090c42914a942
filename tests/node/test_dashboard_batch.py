"""Several files sent from the dashboard are one batch (a real, headless Chromium against real
nodes on loopback): picked files and a picked folder each go as one batch with their names at
its top (a folder's tree kept), one offer under `--accept prompt`, one row in the page, and the
staged uploads go when it ends. To a node without batches (tests/nobatch.py) the files still
arrive, one plain push each, and the page says so. Every wait has a deadline."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests import browser as br
from tests.node.test_dashboard import choose_peer, chrome, page, row_of  # noqa: F401 (fixtures)
from tests.node.test_dashboard_trust import final, leave
from tests.node.test_fallback import OLD
from tests.node.test_integration import write_random
from tests.nodeproc import NodeProc, free_udp_port, nodes, wait_mesh

pytestmark = pytest.mark.slow


def staged(node: NodeProc) -> list[Path]:
    root = node.share / ".mole-uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def pick(driver: Any, selector: str, paths: list[Path]) -> None:
    """Choose files (or a folder) in one of the page's own file inputs, as a person does."""
    field = br.one(driver, selector)
    field.send_keys("\n".join(str(p) for p in paths))


def batch_row(driver: Any, name: str, state: str) -> Any:
    return br.wait(driver, lambda d: row_of(d, name, state), f"the batch {name} {state}", 40)


def test_three_picked_files_are_one_batch_one_offer_and_all_arrive(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    outside = tmp_path / "desktop"  # the browser's files: in no node's share
    files = [outside / "a.bin", outside / "b.txt", outside / "c.pdf"]
    want = {p.name: write_random(p, 200_000 + 1000 * i, seed=i) for i, p in enumerate(files)}
    with nodes(tmp_path, ["alpha", "beta"], "--accept", "prompt", group=False) as (a, b):
        wait_mesh([a, b])
        br.logged_in(page, a)
        choose_peer(page, b)
        pick(page, "#pick-files", files)
        offer = b.wait_api("/api/offers", lambda os: len(os) >= 1, what="the offer", timeout=30)
        (only,) = offer  # one offer for the three files
        assert only["batch"]["files"] == 3, only
        assert sorted(f["name"] for f in only["files"]) == sorted(want), only
        b.api("POST", f"/api/offers/{only['id']}/accept")
        row = batch_row(page, "a.bin", "done")
        assert "3/3 files" in row.find_element("css selector", ".sub").text
        rows = [r for r in br.css(page, "#transfers li[data-id]")]
        assert len(rows) == 1  # one row in the page for the whole send
        t = final(a, row.get_attribute("data-id"))
        assert t["kind"] == "batch" and t["state"] == "done" and t["files"] == 3, t
        got = {n: hashlib.sha256((b.inbox / n).read_bytes()).hexdigest() for n in want}
        assert got == want  # each verified, under its original name
        assert b.api("GET", "/api/offers") == []
        a.wait_api("/api/transfers", lambda ts: staged(a) == [], what="the staged files gone")
        leave(page)


def test_a_picked_folder_keeps_its_tree(page: Any, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "desktop" / "trip"
    names = ["day1/a.jpg", "day1/b.jpg", "day2/c.jpg", "notes.txt"]
    want = {f"trip/{n}": write_random(folder / n, 5000 + i, seed=20 + i)
            for i, n in enumerate(names)}  # fmt: skip
    with nodes(tmp_path, ["alpha", "beta"]) as (a, b):
        wait_mesh([a, b])
        br.logged_in(page, a)
        choose_peer(page, b)
        pick(page, "#pick-folder", [folder])
        row = batch_row(page, "trip", "done")
        t = final(a, row.get_attribute("data-id"))
        assert t["kind"] == "batch" and t["files"] == 4, t
        got = {n: hashlib.sha256((b.inbox / n).read_bytes()).hexdigest() for n in want}
        assert got == want
        a.wait_api("/api/transfers", lambda ts: staged(a) == [], what="the staged files gone")
        leave(page)


def test_files_to_a_node_without_batches_arrive_one_by_one(
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    outside = tmp_path / "desktop"
    files = [outside / "x.bin", outside / "y.bin"]
    want = {p.name: write_random(p, 100_000 + i, seed=30 + i) for i, p in enumerate(files)}
    port = free_udp_port()
    a = NodeProc(tmp_path, "alpha", port).start()
    b = NodeProc(tmp_path, "beta", port, launcher=OLD).start()
    try:
        wait_mesh([a, b])
        br.logged_in(page, a)
        choose_peer(page, b)
        pick(page, "#pick-files", files)

        def done(ts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [t for t in ts if t.get("kind") == "batch" and t["state"] == "done"]

        (t,) = done(a.wait_api("/api/transfers", done, what="the batch done", timeout=40))
        assert len(t["fallback"]) == 2, t
        row = br.one(page, f'#transfers li[data-id="{t["id"]}"][data-state="done"]', "its row")
        assert "one by one" in row.find_element("css selector", ".sub").text
        for name in want:  # the plain pushes listed under it
            br.wait(page, lambda d, n=name: row_of(d, n, "done"), f"{name} done")
        got = {n: hashlib.sha256((b.inbox / n).read_bytes()).hexdigest() for n in want}
        assert got == want
        a.wait_api("/api/transfers", lambda ts: staged(a) == [], what="the staged files gone")
        leave(page)
    finally:
        a.stop()
        b.stop()

"""The dashboard's routes on real nodes (no browser): upload then push, retry, the page."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.node.test_integration import done, write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh


def upload(node: NodeProc, name: str, data: bytes, batch: str | None = None) -> tuple[int, Any]:
    host, _, port = node.api_url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            f"/api/uploads?name={quote(name, safe='')}" + (f"&batch={batch}" if batch else ""),
            body=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Authorization": f"Bearer {node.file_token()}",
            },
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_upload_then_push_keeps_the_folder_name_and_cleans_up(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        data = os.urandom(5 << 20)
        status, staged = upload(a, "photos/trip.jpg", data)
        assert status == 201, staged
        assert Path(staged["path"]).is_relative_to(a.share / ".mole-uploads")
        push = {"peer": "b", "path": staged["path"], "name": staged["name"]}
        t = a.api("POST", "/api/push", push)
        assert t["name"] == "photos/trip.jpg"
        assert done(a, t["id"])["state"] == "done"
        got = b.inbox / "photos" / "trip.jpg"
        b.wait_api("/api/inbox", lambda fs: any(f["name"] == "photos/trip.jpg" for f in fs))
        assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
        # The staged copy goes once the peer has it; the share never listed it.
        a.wait_api(
            "/api/transfers", lambda ts: not Path(staged["path"]).exists(), what="staged gone"
        )
        assert all(".mole-uploads" not in f["name"] for f in a.api("GET", "/api/files"))
        assert all(f["name"] != "photos/trip.jpg" for f in a.api("GET", "/api/files"))


def test_the_uploads_of_one_send_are_pushed_as_one_batch_and_cleaned_up(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        files = {"one.bin": os.urandom(300_000), "two.txt": b"two", "trip/day1/x.jpg": b"x" * 9,
                 "trip/empty.txt": b""}  # fmt: skip
        batch, roots = "new", []
        for name, data in files.items():
            status, staged = upload(a, name, data, batch)
            assert status == 201, staged
            batch = staged["batch"]
            roots.append(staged["root"])
        roots = list(dict.fromkeys(roots))
        assert [Path(r).name for r in roots] == ["one.bin", "two.txt", "trip"]
        t = a.api("POST", "/api/push", {"peer": "b", "paths": roots})
        assert t["kind"] == "batch"
        end = a.wait_event(
            lambda e: e["event"] == "batch_done" and e["id"] == t["id"], timeout=30, what="done"
        )
        assert end["state"] == "done" and end["files"] == 4, end
        for name, data in files.items():  # the original names at the top of the batch
            assert (b.inbox / name).read_bytes() == data
        # The whole send's staged directory goes with the batch.
        a.wait_api("/api/transfers", lambda ts: not (a.share / ".mole-uploads" / batch).exists(),
                   what="the staged send removed")  # fmt: skip


def test_a_cancelled_batch_of_uploads_leaves_nothing_staged(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"], "--max-rate", "256KiB") as (a, b):
        wait_mesh([a, b])
        batch, roots = "new", []
        for name in ("p.bin", "q.bin"):
            status, staged = upload(a, name, os.urandom(2 << 20), batch)
            assert status == 201, staged
            batch = staged["batch"]
            roots.append(staged["root"])
        t = a.api("POST", "/api/push", {"peer": "b", "paths": roots})
        a.wait_event(
            lambda e: e["event"] == "transfer_progress" and e["id"] == t["id"],
            timeout=20,
            what="the batch under way",
        )
        assert (a.share / ".mole-uploads" / batch).is_dir()  # read while the batch is live
        assert a.api("POST", f"/api/transfers/{t['id']}/cancel")["state"] == "cancelled"
        a.wait_api("/api/transfers", lambda ts: not (a.share / ".mole-uploads" / batch).exists(),
                   what="the staged send removed")  # fmt: skip


def test_retry_makes_a_new_transfer_of_the_same_file(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"], "--max-rate", "1MiB") as (a, b):
        wait_mesh([a, b])
        digest = write_random(a.share / "slow.bin", 3 << 20)
        first = a.api("POST", "/api/push", {"peer": "b", "path": "slow.bin"})
        a.api("POST", f"/api/transfers/{first['id']}/cancel")
        status, body = a.api_raw("POST", f"/api/transfers/{first['id']}/retry")
        assert status == 202, body
        assert body["id"] != first["id"] and body["name"] == "slow.bin"
        assert body["peer"] == b.node_id
        assert done(a, body["id"], timeout=30)["state"] == "done"
        assert hashlib.sha256((b.inbox / "slow.bin").read_bytes()).hexdigest() == digest
        # A done transfer, an unknown one, and the peer's side of one are not retried.
        status, err = a.api_raw("POST", f"/api/transfers/{body['id']}/retry")
        assert status == 409 and err["error"] == "not_retryable"
        assert a.api_raw("POST", "/api/transfers/0000000000000000/retry")[0] == 404
        theirs = b.local_id(body["id"])
        status, err = b.api_raw("POST", f"/api/transfers/{theirs}/retry")
        assert status == 409 and "started by the peer" in err["message"]


def test_the_dashboard_is_served_by_an_installed_style_node(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        host, _, port = a.api_url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and b"mole" in body
        assert "default-src 'self'" in (resp.getheader("Content-Security-Policy") or "")
        conn.close()
        err = (a.root / "stderr.log").read_text()
        assert f"dashboard at http://127.0.0.1:{port}/" in err

"""The `mole` command: `mole serve` runs a node; every other command talks to one over its API.

Client commands are plain blocking HTTP (http.client) against the node's control API
(docs/api.md). Exit status: 0 success, 1 a failed transfer or an error from the node, 2 usage,
3 no node is listening at --api. Every failure is one line on stderr, starting with "mole: ".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import quote, urlsplit

from node.units import format_size

if TYPE_CHECKING:
    import http.client

# http.client (with ssl and email) and shutil are imported where a client command uses them:
# `mole serve` never does, and they would cost an idle node about 3 MiB.

DEFAULT_API = "http://127.0.0.1:47102"
POLL_INTERVAL = 0.2  # seconds between GET /api/transfers/{id} while waiting
REQUEST_TIMEOUT = 30.0  # a peer file list may take a connect timeout (10 s) and more
FINAL_STATES = frozenset({"done", "failed", "cancelled"})

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_NODE = 0, 1, 2, 3

# Transfer error codes (transfer["error"]["code"]) -> the one line we print.
TRANSFER_ERRORS = {
    "hash_mismatch": "hash mismatch: {name}",
    "not_found": "file missing: {name}",
    "file_missing": "file missing: {name}",
    "cancelled": "cancelled: {name}",
    "policy": "refused by {peer}: {name} ({reason})",
    "too_large": "too large for {peer}: {name} ({reason})",
    "no_space": "no space left: {name} ({reason})",
    "unreachable": "peer unreachable: {peer} ({reason})",
    "source_changed": "file changed while sending: {name}",
}


class CliError(Exception):
    """Ends the command with `mole: <message>` on stderr and `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever the node said
        self.status = status


class ApiFailure(CliError):
    """The node answered with an error object."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message or code)
        self.http_status = status
        self.code = code


# -- talking to the node ---------------------------------------------------------------------


class Client:
    """One kept-alive HTTP connection to the node's API."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port or 80
        except ValueError:
            port = -1
        if parts.scheme != "http" or not parts.hostname or port < 1:
            raise CliError(f"bad --api URL {url!r}: want http://HOST:PORT", EXIT_USAGE)
        self.host, self.port = parts.hostname, port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        import http.client

        reused = self._conn is not None
        try:
            try:
                return self._exchange(method, path, payload, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The node may close a kept-alive connection between requests; a GET is safe
                # to repeat once, a POST is not (it could start a second transfer).
                self.close()
                if not (reused and method == "GET"):
                    raise
                return self._exchange(method, path, payload, headers)
        except ConnectionRefusedError:
            self.close()
            raise CliError(f"node not running at {self.url}", EXIT_NO_NODE) from None
        except TimeoutError:
            self.close()
            message = f"no answer from the node at {self.url} within {self.timeout:g} s"
            raise CliError(message) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise CliError(f"cannot talk to the node at {self.url}: {exc}") from None

    def _exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> Any:
        import http.client

        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn.request(method, self.prefix + path, body=payload, headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise CliError(
                f"the node at {self.url} sent a non-JSON answer ({resp.status})"
            ) from None
        if resp.status >= 400:
            if resp.status == 401:
                raise ApiFailure(
                    401, "unauthorized", "unauthorized (set --token or MOLE_API_TOKEN)"
                )
            err = data if isinstance(data, dict) else {}
            code = str(err.get("error") or f"http_{resp.status}")
            raise ApiFailure(resp.status, code, str(err.get("message") or ""))
        return data


def explain(exc: ApiFailure, *, peer: str | None = None, item: str | None = None) -> CliError:
    """The node's error in the words of the command the user typed."""
    if exc.code == "unknown_peer" and peer is not None:
        return CliError(f"peer unknown: {peer}")
    if exc.code == "file_missing" and item is not None:
        return CliError(f"file missing: {item}")
    if exc.code == "peer_unreachable" and peer is not None:
        return CliError(f"peer unreachable: {peer} ({exc.message})")
    if exc.code == "peer_error":
        return CliError(f"peer error: {exc.message}")
    return exc


def transfer_error(t: dict[str, Any]) -> str:
    err = t.get("error") or {}
    code = str(err.get("code") or t.get("state") or "failed")
    reason = str(err.get("reason") or "")
    fields = {"name": t.get("name") or t.get("id"), "peer": peer_label(t), "reason": reason}
    template = TRANSFER_ERRORS.get(code, "transfer failed: {name}: {code}: {reason}")
    return " ".join(template.format(code=code, **fields).split())


# -- formatting ------------------------------------------------------------------------------


# Sizes are shown in the one IEC format of node/units.py ("1000 B", "4.5 MiB").
human_size = format_size


def human_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def human_age(then: object, now: float) -> str:
    # last_seen is a unix time; anything else (a missing or monotonic value) shows as "-".
    if not isinstance(then, int | float) or then < 1e9 or then > now + 60:
        return "-"
    age = max(0.0, now - then)
    if age < 120:
        return f"{age:.0f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    return f"{age / 3600:.0f}h ago"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()
) -> str:
    """Columns padded to their widest cell; columns named in `right` are right-aligned."""
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if h in right else c.ljust(w)
            for c, w, h in zip(r, widths, headers, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def peer_label(t: dict[str, Any]) -> str:
    return str(t.get("peer_name") or str(t.get("peer") or "")[:8] or "-")


def percent(t: dict[str, Any]) -> float:
    size = int(t.get("size") or 0)
    got = int(t.get("bytes") or 0)
    if size <= 0:
        return 100.0 if t.get("state") == "done" else 0.0
    return min(100.0, 100.0 * got / size)


def peers_table(peers: list[dict[str, Any]], now: float) -> str:
    rows = [
        (
            p.get("name", ""),
            str(p.get("node", ""))[:8],
            f"{p.get('addr', '?')}:{p.get('port', '?')}",
            ",".join(p.get("groups") or []) or "-",
            "static" if p.get("static") else human_age(p.get("last_seen"), now),
        )
        for p in peers
    ]
    return table(["NAME", "NODE", "ADDRESS", "GROUPS", "SEEN"], rows)


def files_table(files: list[dict[str, Any]]) -> str:
    rows = [
        (f.get("name", ""), human_size(int(f.get("size") or 0)), str(f.get("sha256") or "")[:12])
        for f in files
    ]
    return table(["NAME", "SIZE", "SHA256"], rows, right=["SIZE"])


def transfers_table(transfers: list[dict[str, Any]]) -> str:
    rows = []
    for t in sorted(transfers, key=lambda t: float(t.get("started") or 0)):
        state = str(t.get("state", ""))
        if state in ("failed", "cancelled") and t.get("error"):
            state = f"{state}: {t['error'].get('code', '')}"
        progress = (
            f"{percent(t):3.0f}% {human_size(int(t.get('bytes') or 0))}"
            f"/{human_size(int(t.get('size') or 0))}"
        )
        rate = float(t.get("rate") or 0)
        active = t.get("state") not in FINAL_STATES and rate > 0
        name = str(t.get("name", ""))
        if t.get("path") and t["path"] != name:
            name = f"{name} -> {t['path']}"  # the name it got on the receiver
        rows.append(
            (
                t.get("id", ""),
                "out" if t.get("role") == "send" else "in",
                peer_label(t),
                name,
                progress,
                f"{human_size(rate)}/s" if active else "-",
                state,
            )
        )
    return table(["ID", "DIR", "PEER", "NAME", "PROGRESS", "RATE", "STATE"], rows)


def progress_line(t: dict[str, Any], columns: int, position: str = "") -> str:
    """One redrawable line: [i/n] name [####....] 45% 4.5 MiB/10.0 MiB 1.2 MiB/s ETA 0:05."""
    size = int(t.get("size") or 0)
    got = int(t.get("bytes") or 0)
    rate = float(t.get("rate") or 0)
    state = str(t.get("state", ""))
    if state == "active" and rate > 0:
        tail = f"{human_size(rate)}/s ETA {human_duration(max(0, size - got) / rate)}"
    elif state == "active":
        tail = "ETA --:--"
    else:
        tail = state
    numbers = f"{percent(t):3.0f}% {human_size(got)}/{human_size(size)} {tail}"
    bar_len = max(10, min(30, columns // 4))
    filled = int(bar_len * percent(t) / 100)
    bar = "[" + "#" * filled + "." * (bar_len - filled) + "]"
    room = columns - 1 - len(position) - len(bar) - len(numbers) - 3
    name = str(t.get("name") or t.get("id") or "")
    if room < len(name):
        name = name[: max(0, room - 1)] + "…" if room > 1 else ""
    return " ".join(p for p in (position.strip(), name, bar, numbers) if p)[: columns - 1]


class ProgressBar:
    """A one-line live view on a terminal, redrawn in place with carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def update(self, transfers: list[dict[str, Any]]) -> None:
        running = [t for t in transfers if t.get("state") not in FINAL_STATES]
        if not running:
            return
        t = running[0]
        position = ""
        if len(transfers) > 1:
            position = f"[{transfers.index(t) + 1}/{len(transfers)}]"
        import shutil

        columns = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + progress_line(t, columns, position) + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


# -- commands --------------------------------------------------------------------------------


def emit_json(value: object, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def cmd_peers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    peers = client.get("/api/peers")
    if args.json:
        emit_json(peers, out)
    else:
        out.write((peers_table(peers, time.time()) if peers else "no peers yet") + "\n")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.peer is None:
        files = client.get("/api/files")
    else:
        try:
            files = client.get(f"/api/peers/{quote(args.peer, safe='')}/files")
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer) from None
    return print_files(args, files, out, "no shared files")


def cmd_inbox(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return print_files(args, client.get("/api/inbox"), out, "the inbox is empty")


def print_files(
    args: argparse.Namespace, files: list[dict[str, Any]], out: TextIO, empty: str
) -> int:
    if args.json:
        emit_json(files, out)
    else:
        out.write((files_table(files) if files else empty) + "\n")
    return EXIT_OK


def cmd_transfers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    transfers = client.get("/api/transfers")
    if args.json:
        emit_json(transfers, out)
    else:
        out.write((transfers_table(transfers) if transfers else "no transfers") + "\n")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    try:
        t = client.post(f"/api/transfers/{quote(args.id, safe='')}/cancel")
    except ApiFailure as exc:
        if exc.code == "not_found":
            raise CliError(f"no such transfer: {args.id}") from None
        raise
    if args.json:
        emit_json(t, out)
    else:
        out.write(f"{t.get('id')}  {t.get('name', '')}  {t.get('state')}\n")
    return EXIT_OK


def cmd_send(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    paths = [(typed, os.path.abspath(os.path.expanduser(typed))) for typed in args.paths]
    for typed, path in paths:  # before asking the node: nothing starts if one path is wrong
        # An absolute path we cannot see may still be the node's own (a node in a container,
        # its API published on this host): that node checks it and answers file_missing.
        if not os.path.isfile(path) and not (os.path.isabs(typed) and not os.path.exists(path)):
            raise CliError(f"file missing: {typed}")
    started = []
    for typed, path in paths:
        try:
            started.append(client.post("/api/push", {"peer": args.peer, "path": path}))
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer, item=typed) from None
    return finish_transfers(args, client, started, out)


def cmd_get(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    started = []
    for name in args.names:
        try:
            started.append(client.post("/api/pull", {"peer": args.peer, "name": name}))
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer, item=name) from None
    return finish_transfers(args, client, started, out)


def finish_transfers(
    args: argparse.Namespace, client: Client, started: list[dict[str, Any]], out: TextIO
) -> int:
    if args.no_wait:
        final = started
    else:
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            final = wait_for(client, started, args.timeout, bar)
        finally:
            if bar is not None:
                bar.finish()
    if args.json:
        emit_json(final, out)
    elif args.no_wait:
        out.write(transfers_table(final) + "\n")
    else:
        for t in final:
            if t.get("state") == "done":
                out.write(done_line(t) + "\n")
    failed = [t for t in final if not args.no_wait and t.get("state") != "done"]
    for t in failed:
        sys.stderr.write(f"mole: {transfer_error(t)}\n")
    return EXIT_FAILED if failed else EXIT_OK


def wait_for(
    client: Client,
    transfers: list[dict[str, Any]],
    timeout: float | None,
    bar: ProgressBar | None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Poll each unfinished transfer until all are done, failed or cancelled."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = {str(t["id"]): t for t in transfers}
    while True:
        if bar is not None:
            bar.update(list(current.values()))
        running = [tid for tid, t in current.items() if t.get("state") not in FINAL_STATES]
        if not running:
            return list(current.values())
        if deadline is not None and time.monotonic() >= deadline:
            names = ", ".join(str(current[tid].get("name")) for tid in running)
            raise CliError(f"timed out after {timeout:g} s waiting for {names}")
        sleep(POLL_INTERVAL)
        for tid in running:
            current[tid] = client.get(f"/api/transfers/{quote(tid, safe='')}")


def done_line(t: dict[str, Any]) -> str:
    name, peer = t.get("name", ""), peer_label(t)
    size = human_size(int(t.get("size") or 0))
    path = str(t.get("path") or name)
    if t.get("skipped"):
        where = f"on {peer}" if t.get("role") == "send" else "here"
        return f"{name}: already held {where}, now as {path} (no bytes sent)"
    seconds = max(0.0, float(t.get("finished") or 0) - float(t.get("started") or 0))
    speed = f", {human_size(int(t.get('sent') or 0) / seconds)}/s" if seconds > 0 else ""
    timing = f"{size} in {seconds:.1f} s{speed}"
    # The final name differs when the receiver had the name taken by other content.
    where = f" as {path}" if path != name else ""
    if t.get("role") == "send":
        return f"sent {name} to {peer}{where} ({timing})"
    return f"received {name} from {peer}{where} ({timing})"


def cmd_serve(args: argparse.Namespace) -> int:
    from node.app import run_node
    from node.config import ConfigError, config_from_args

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        return run_node(config)
    except OSError as exc:
        raise CliError(str(exc)) from None


# -- argument parsing ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"mole: {message}\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def add_client_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    # The same options before or after the command; a subcommand's copies default to SUPPRESS
    # so they do not overwrite what was given before the command.
    def d(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--api", metavar="URL", default=d(os.environ.get("MOLE_API") or DEFAULT_API),
        help=f"the node's API (env MOLE_API, default {DEFAULT_API})",
    )  # fmt: skip
    p.add_argument(
        "--token", default=d(os.environ.get("MOLE_API_TOKEN") or None),
        help="API bearer token (env MOLE_API_TOKEN)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", default=d(False), help="print JSON")
    p.add_argument(
        "--no-wait", action="store_true", default=d(False),
        help="send/get: return once the transfers are queued",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", default=d(None),
        help="give up waiting for the node or a transfer after SECONDS",
    )  # fmt: skip


class _ServeHelp(argparse.ArgumentDefaultsHelpFormatter):
    """`serve --help` shows each default, except a token's (a secret) and unset ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "api_token" or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mole", description="peer-to-peer LAN file sharing")
    add_client_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    serve = sub.add_parser("serve", help="run a node", formatter_class=_ServeHelp)
    from node.config import add_serve_arguments

    add_serve_arguments(serve)

    def client_cmd(name: str, run: object, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_client_options(p, top=False)
        p.set_defaults(run=run)
        return p

    client_cmd("peers", cmd_peers, "list the peers this node knows")
    ls = client_cmd("ls", cmd_ls, "list own shared files, or a peer's")
    ls.add_argument("peer", nargs="?", metavar="PEER")
    send = client_cmd("send", cmd_send, "push files to a peer")
    send.add_argument("peer", metavar="PEER")
    send.add_argument("paths", nargs="+", metavar="PATH")
    get = client_cmd("get", cmd_get, "pull files from a peer by name")
    get.add_argument("peer", metavar="PEER")
    get.add_argument("names", nargs="+", metavar="NAME")
    client_cmd("transfers", cmd_transfers, "list transfers")
    cancel = client_cmd("cancel", cmd_cancel, "cancel a transfer")
    cancel.add_argument("id", metavar="ID")
    client_cmd("inbox", cmd_inbox, "list received files")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "serve":
            return cmd_serve(args)
        # A tiny --timeout bounds the wait for transfers; single answers still get a second.
        http_timeout = REQUEST_TIMEOUT if args.timeout is None else max(1.0, args.timeout)
        client = Client(args.api, args.token, http_timeout)
        try:
            status: int = args.run(args, client, sys.stdout)
            return status
        finally:
            client.close()
    except CliError as exc:
        sys.stderr.write(f"mole: {exc.message}\n")
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `mole peers | head`
        return EXIT_FAILED

"""The `mole` command: `mole serve` runs a node; every other command talks to one over its API.

Client commands are blocking HTTP through node/apiclient.py against the node's control API
(docs/api.md); `send`, `get` and `watch` follow its event stream (GET /api/events). Exit status:
0 success, 1 a failed transfer or an error from the node, 2 usage, 3 no node is listening at
--api. Every failure is one line on stderr, starting with "mole: ". Everything printed passes
through node/termsafe.py first: names and reasons come from peers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import quote

from node import clibatch, clitrust
from node.clifollow import run_transfers
from node.cliview import (
    EXIT_FAILED,
    EXIT_NO_NODE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    emit_json,
    event_record,
    files_table,
    peers_table,
    print_block,
    print_error,
    print_line,
    table,
    transfers_table,
    watch_line,
)
from node.termsafe import safe_text

if TYPE_CHECKING:
    from node.apiclient import ApiEvent, ApiFailure, EventStream, Token

# node.apiclient (http.client, with ssl and email) and shutil are imported where a client
# command uses them: `mole serve` never does, and they would cost an idle node about 3 MiB.

DEFAULT_API = "http://127.0.0.1:47102"
REQUEST_TIMEOUT = 30.0  # a peer file list may take a connect timeout (10 s) and more


# -- talking to the node ---------------------------------------------------------------------


class Client:
    """node.apiclient.ApiClient with the node's failures worded for a person."""

    def __init__(self, url: str, token: Token, timeout: float) -> None:
        from node.apiclient import ApiClient

        try:
            self.api = ApiClient(url, token.value, timeout=timeout)
        except ValueError:
            raise CliError(f"bad --api URL {url!r}: want http://HOST:PORT", EXIT_USAGE) from None
        self.url = self.api.url
        self.timeout = timeout
        self.token_info = token

    def close(self) -> None:
        self.api.close()

    def request(self, method: str, path: str, body: object = None) -> Any:
        with self.translated():
            return self.api.request(method, path, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object = None) -> Any:
        return self.request("POST", path, body)

    def subscribe(self, types: Sequence[str] | None, **kw: Any) -> EventStream:
        """GET /api/events, connected before this returns (see ApiClient.events)."""
        with self.translated():
            return self.api.events(types, **kw)

    def next_event(self, stream: EventStream) -> ApiEvent:
        """The stream's next event, its failures worded like a request's. DeadlineExpired is
        left to the caller, who knows what it was waiting for."""
        with self.translated():
            return next(stream)

    def unauthorized(self) -> str:
        """What to do about a 401: where the token came from, and where it could come from."""
        t = self.token_info
        head = f"unauthorized: the node at {self.url}"
        if t.value:
            return f"{head} refused the token from {t.source}: pass its token with --token"
        text = f"{head} wants its API token: pass --token or set MOLE_API_TOKEN"
        if t.file is None:  # not a local node: its token file is not ours to read
            return text
        why = f"{t.file}: {t.problem}" if t.problem else f"no {t.file.name} in {t.file.parent}"
        return f"{text}, or point --state at the node's state directory ({why})"

    @contextmanager
    def translated(self) -> Iterator[None]:
        import http.client

        from node.apiclient import ApiFailure, BadAnswer, DeadlineExpired, StreamLost

        try:
            yield
        except ApiFailure as exc:
            if exc.status == 401:
                raise CliError(self.unauthorized()) from None
            raise
        except DeadlineExpired:
            raise
        except StreamLost as exc:
            raise CliError(f"lost the node at {self.url}: {exc}") from None
        except ConnectionRefusedError:
            raise CliError(f"node not running at {self.url}", EXIT_NO_NODE) from None
        except TimeoutError:
            message = f"no answer from the node at {self.url} within {self.timeout:g} s"
            raise CliError(message) from None
        except BadAnswer as exc:
            raise CliError(str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"cannot talk to the node at {self.url}: {exc}") from None


def explain(exc: ApiFailure, *, peer: str | None = None, item: str | None = None) -> CliError:
    """The node's error in the words of the command the user typed."""
    if exc.code == "unknown_peer" and peer is not None:
        if exc.message.startswith("peer name is ambiguous"):  # it says which ids to choose
            return CliError(exc.message)
        return CliError(f"peer unknown: {peer}")
    if exc.code == "file_missing" and item is not None:
        return CliError(f"file missing: {item}")
    if exc.code == "peer_unreachable" and peer is not None:
        return CliError(f"peer unreachable: {peer} ({exc.message})")
    if exc.code == "peer_error":
        return CliError(f"peer error: {exc.message}")
    return CliError(exc.message or exc.code)


# -- commands --------------------------------------------------------------------------------


def cmd_peers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    peers = client.get("/api/peers")
    if getattr(args, "group", None):
        peers = [p for p in peers if args.group in (p.get("groups") or [])]
    if args.json:
        emit_json(peers, out)
    else:
        print_block(out, peers_table(peers, time.time()) if peers else "no peers yet")
    return EXIT_OK


def cmd_peer(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """`mole peer add|remove|list HOST:PORT`: static peers (names allowed), kept by the node."""
    if args.action == "list":
        statics = client.get("/api/peers/static")
        if args.json:
            emit_json(statics, out)
        else:
            rows = [
                (str(s["peer"]), ",".join(s["addrs"]) or "-", str(s["node"] or "-")[:8])
                for s in statics
            ]
            print_block(out, table(["PEER", "RESOLVED", "NODE"], rows) if rows else "none")
        return EXIT_OK
    if not args.address:
        raise SystemExit(f"mole peer {args.action}: give HOST:PORT")
    path = "/api/peers/static" + ("/remove" if args.action == "remove" else "")
    answer = client.post(path, {"peer": args.address})
    if args.json:
        emit_json(answer, out)
    else:
        out.write(f"{'added' if args.action == 'add' else 'removed'} {safe_text(args.address)}\n")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    if args.peer is None:
        files = client.get("/api/files")
    else:
        try:
            files = client.get(f"/api/peers/{quote(args.peer, safe='')}/files")
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer) from None
    if getattr(args, "dir", None) is not None:
        return clibatch.print_tree(args, files, out)
    return print_files(args, files, out, "no shared files")


def cmd_inbox(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return print_files(args, client.get("/api/inbox"), out, "the inbox is empty")


def print_files(
    args: argparse.Namespace, files: list[dict[str, Any]], out: TextIO, empty: str
) -> int:
    if args.json:
        emit_json(files, out)
    else:
        print_block(out, files_table(files) if files else empty)
    return EXIT_OK


def cmd_transfers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    transfers = client.get("/api/transfers")
    if args.json:
        emit_json(transfers, out)
    else:
        print_block(out, transfers_table(transfers) if transfers else "no transfers")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    try:
        t = client.post(f"/api/transfers/{quote(args.id, safe='')}/cancel")
    except ApiFailure as exc:
        if exc.code == "not_found":
            raise CliError(f"no such transfer: {args.id}") from None
        raise
    if args.json:
        emit_json(t, out)
    else:
        print_line(out, f"{t.get('id')}  {t.get('name', '')}  {t.get('state')}")
    return EXIT_OK


def cmd_send(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    paths = [(typed, os.path.abspath(os.path.expanduser(typed))) for typed in args.paths]
    for typed, path in paths:  # before asking the node: nothing starts if one path is wrong
        # An absolute path we cannot see may still be the node's own (a node in a container,
        # its API published on this host): that node checks it and answers file_missing.
        seen = os.path.isfile(path) or os.path.isdir(path)
        if not seen and not (os.path.isabs(typed) and not os.path.exists(path)):
            raise CliError(f"file missing: {typed}")
    if (
        len(paths) > 1  # several files are one batch: one decision at the receiver
        or args.peer.startswith("@")
        or args.links != "refuse"
        or any(os.path.isdir(p) for _, p in paths)
    ):
        return clibatch.send_batch(args, client, [p for _, p in paths], out, run_transfers)
    [(typed, path)] = paths

    def start() -> list[dict[str, Any]]:
        try:
            return [client.post("/api/push", {"peer": args.peer, "path": path})]
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer, item=typed) from None

    return run_transfers(args, client, start, out)


def cmd_get(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    from node.apiclient import ApiFailure

    if args.glob is not None or len(args.names) > 1 or any(n.endswith("/") for n in args.names):
        return clibatch.get_batch(args, client, out, run_transfers)
    if not args.names:
        raise CliError("get needs a NAME, a DIR/ or --glob PATTERN")
    [name] = args.names

    def start() -> list[dict[str, Any]]:
        try:
            return [client.post("/api/pull", {"peer": args.peer, "name": name})]
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer, item=name) from None

    return run_transfers(args, client, start, out)


# -- watch -----------------------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the node's events as they come, until Ctrl-C (exit 0)."""
    from node.apiclient import ApiFailure, describe

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        if attempt == 1:  # once per outage: the stream says when it is back (a reset, or not)
            print_error(f"lost the event stream ({describe(error)}); reconnecting")

    try:
        stream = client.subscribe(args.types, retry_for=args.timeout, on_retry=on_retry)
    except ApiFailure as exc:
        if exc.status == 404:
            message = f"the node at {client.url} has no event stream (GET /api/events)"
            raise CliError(message) from None
        raise
    peers: dict[str, str] = {}  # node id -> display name, from the peer events seen
    try:
        with stream:
            while True:
                ev = client.next_event(stream)
                if args.json:
                    emit_json(event_record(ev), out, indent=None)
                else:
                    print_line(out, watch_line(ev, peers))
                out.flush()
    except KeyboardInterrupt:
        return EXIT_OK


def dashboard_url(api_url: str) -> str:
    """The web dashboard's address for an API URL (the page is served at its root)."""
    return api_url.rstrip("/") + "/"


def cmd_open(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Open the node's web dashboard in a browser (it asks for the token: `mole token`)."""
    import webbrowser

    url = dashboard_url(client.url)
    print_line(out, url)
    if not webbrowser.open(url):
        raise CliError(f"no web browser found here: open {url} yourself")
    return EXIT_OK


def cmd_token(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the API token this client would send (what the dashboard's login asks for)."""
    if not client.token_info.value:
        raise CliError(client.unauthorized())
    out.write(client.token_info.value + "\n")  # a token is ASCII we made, printed as is
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from node.cli_config import serve_config
    from node.errors import ConfigError
    from node.node import run_node

    config, _ = serve_config(args, argv)
    try:
        return run_node(config)
    except ConfigError as exc:  # e.g. identity files that cannot be used
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(str(exc)) from None


def cmd_id(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Print the node's id in its human form and as hex: what a peer compares to verify it."""
    info = client.get("/api/node")
    print_line(out, f"{info.get('node_human', '')}")
    print_line(out, f"{info.get('node', '')}")
    return EXIT_OK


# -- argument parsing ------------------------------------------------------------------------


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` finds it ($COLUMNS, then the tty,
    else 80), without importing shutil: argparse would, for every parser it builds, and a
    node's RSS would carry shutil (and bz2, lzma, fnmatch) for its whole life (~0.6 MiB)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Width:
    """A help formatter mixin that passes argparse the width it would ask shutil for."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class _Help(_Width, argparse.HelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

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
        "--token", default=d(None),
        help="API bearer token (default: env MOLE_API_TOKEN, else a local node's token file)",
    )  # fmt: skip
    p.add_argument(
        "--state", metavar="DIR", default=d(None),
        help="the local node's state directory, where its api_token file is read "
        "(default: env MOLE_STATE, else ~/.mole/state)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", default=d(False), help="print JSON")
    p.add_argument(
        "--no-wait", action="store_true", default=d(False),
        help="send/get: return once the transfers are queued",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", default=d(None),
        help="give up waiting for the node or a transfer after SECONDS (watch: on a node gone "
        "for SECONDS)",
    )  # fmt: skip


class _ServeHelp(_Width, argparse.ArgumentDefaultsHelpFormatter):
    """`serve --help` shows each default, except a token's (a secret) and unset ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "api_token" or action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


DISTRIBUTION = "mole-p2p"  # the name on PyPI (`mole` there is another project)


def version_text() -> str:
    """`mole --version`: the version, then which branch of node/plat each capability took."""
    import platform

    from node import __version__, plat
    from node.plat import ifaces

    caps = plat.describe()
    caps["interfaces"] = ifaces.scan().backend
    py = f"Python {platform.python_version()} on {caps.pop('platform')}"
    return (
        f"mole {__version__} ({DISTRIBUTION}; {py}; "
        + ", ".join(f"{k} {v}" for k, v in caps.items())
        + ")"
    )


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit(0)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `mole` parser; `only` ("serve" or "config"): that command alone, for what
    node/configfile.py parses again (each client command's parser costs start-up time: a
    node's first announce waited for three whole parsers, issue 17)."""
    parser = _Parser(prog="mole", description="peer-to-peer LAN file sharing")
    parser.add_argument("--version", action=_Version)
    add_client_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run a node",
        formatter_class=_ServeHelp,
        epilog="Every option can also be set as MOLE_<OPTION> (e.g. MOLE_MAX_SIZE) or in the "
        'config file (max-size = "2GiB"); the command line wins, then the environment, then '
        "the file. `mole config` shows what applies (docs/config.md).",
    )
    from node.config import add_serve_arguments

    add_serve_arguments(serve)
    if only == "serve":
        return parser
    config = sub.add_parser(
        "config",
        help="print the effective serve options and where each comes from",
        formatter_class=_ServeHelp,
    )
    add_serve_arguments(config)
    config.add_argument("--json", action="store_true", help="print JSON")
    if only is not None:
        return parser

    def client_cmd(name: str, run: object, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_client_options(p, top=False)
        p.set_defaults(run=run)
        return p

    client_cmd("id", cmd_id, "print this node's id (compare it with a peer's to verify it)")
    peers = client_cmd("peers", cmd_peers, "list the peers this node knows")
    clitrust.add_commands(client_cmd)
    peers.add_argument("--group", metavar="G", help="only the members of group G")
    peer = client_cmd("peer", cmd_peer, "add, remove or list static peers (HOST:PORT, names too)")
    peer.add_argument("action", choices=["add", "remove", "list"])
    peer.add_argument("address", nargs="?", metavar="HOST:PORT")
    ls = client_cmd("ls", cmd_ls, "list own shared files, or a peer's (a DIR/ as a tree)")
    ls.add_argument("peer", nargs="?", metavar="PEER")
    ls.add_argument("dir", nargs="?", metavar="DIR/")
    send = client_cmd("send", cmd_send, "push files to a peer")
    send.add_argument("peer", metavar="PEER")
    send.add_argument("paths", nargs="+", metavar="PATH")
    clibatch.send_options(send)
    get = client_cmd("get", cmd_get, "pull files from a peer by name, a DIR/ or --glob")
    get.add_argument("peer", metavar="PEER")
    get.add_argument("names", nargs="*", metavar="NAME")
    get.add_argument("--glob", metavar="PATTERN", help="every shared file matching it, as a batch")
    client_cmd("transfers", cmd_transfers, "list transfers")
    cancel = client_cmd("cancel", cmd_cancel, "cancel a transfer")
    cancel.add_argument("id", metavar="ID")
    client_cmd("inbox", cmd_inbox, "list received files")
    client_cmd("open", cmd_open, "open the node's web dashboard in a browser")
    client_cmd("token", cmd_token, "print the node's API token (the dashboard's login)")
    watch = client_cmd("watch", cmd_watch, "print the node's events as they happen")
    watch.add_argument(
        "--type", dest="types", action="append", metavar="NAME",
        help="only events of this name, e.g. transfer_done (repeatable)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `mole serve ...` (a node's start): the serve parser alone, the client commands unbuilt.
    parser = build_parser("serve" if argv[:1] == ["serve"] else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "serve":
            del parser  # not kept for the node's whole life (its RSS, issue 17)
            return cmd_serve(args, argv)
        if args.command == "config":
            from node.cli_config import cmd_config

            return cmd_config(args, argv, sys.stdout)
        # A tiny --timeout bounds the wait for transfers; single answers still get a second.
        http_timeout = REQUEST_TIMEOUT if args.timeout is None else max(1.0, args.timeout)
        from node.apiclient import ApiFailure, find_token

        token = find_token(args.token, api_url=args.api, state=args.state)
        client = Client(args.api, token, http_timeout)
        try:
            status: int = args.run(args, client, sys.stdout)
            return status
        except ApiFailure as exc:
            raise explain(exc) from None
        finally:
            client.close()
    except CliError as exc:
        print_error(exc.message)
        return exc.status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `mole peers | head`
        return EXIT_FAILED

"""Who may drive the control API: the token, the session cookie, and what a web page cannot fake.

A web page the user visits can send requests to 127.0.0.1: "simple" cross-origin requests
(`text/plain` or form bodies, no preflight), and DNS rebinding makes a page's own origin resolve
to 127.0.0.1 (its `Host` header then names the attacker's domain). So every request must pass:

1. **Host**: the host part of `Host` is an IP literal, `localhost`, or a name the operator
   allowed (`--api-allowed-host`); a rebound attacker domain is refused.
2. **Origin**: when present (browsers send it on every cross-origin request and every
   non-GET), it must be this very origin, `http://` + the request's `Host`.
3. **Content-Type**: a state-changing request (anything but GET/HEAD) carries
   `application/json`, which no form and no "simple" request can send.
4. **Credentials**: `Authorization: Bearer <token>`, or the `mole_session` cookie a browser
   got from `POST /api/session` with the token (HttpOnly, SameSite=Strict: never readable by
   scripts, never sent by other sites). The token is compared in constant time and never
   appears in a URL (URLs land in logs and browser history).

The token is made at first start and kept in the state directory (`api_token`, mode 0600),
where the CLI of the same user finds it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import time
from _operator import _compare_digest  # constant time, see compare_digest()
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from node import plat


def compare_digest(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: the C function `hmac.compare_digest` is when hashlib has no
    OpenSSL (CPython's own, documented there as timing-safe). Importing `hmac` (or `secrets`)
    would load OpenSSL's libcrypto, about 3.7 MiB of an idle node's RSS, for nothing else."""
    return _compare_digest(a, b)


def token_urlsafe(nbytes: int = 32) -> str:
    """`secrets.token_urlsafe` (os.urandom, URL-safe base64 without padding), minus the
    hmac/OpenSSL import that `secrets` brings. Never starting with `-`: one token in 64 would,
    and `mole --token -x...` (argparse) takes such a value for an option and refuses it. Drawing
    again costs 1/64 of one bit of the 256."""
    while True:
        token = base64.urlsafe_b64encode(os.urandom(nbytes)).rstrip(b"=").decode("ascii")
        if not token.startswith("-"):
            return token


TOKEN_FILE = "api_token"
COOKIE = "mole_session"
SESSION_TTL = 12 * 3600.0  # s a dashboard login lasts
MAX_SESSIONS = 64  # the oldest goes first: a script cannot grow the table without bound


def load_or_create_token(state: Path) -> str:
    """The node's API token: from `state/api_token`, made (mode 0600) when missing."""
    path = state / TOKEN_FILE
    try:
        text = path.read_text().strip()
        if len(text) >= 32 and text.isascii() and text.isprintable():
            return text
    except FileNotFoundError:
        pass
    token = token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | plat.O_NOFOLLOW | plat.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def _host_of(value: str) -> str:
    """The host part of a Host header value (`[::1]:47102` -> `::1`, `a:1` -> `a`)."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ApiGuard:
    """The checks of one node's API (see the module docstring), and its login sessions."""

    def __init__(
        self,
        token: str,
        *,
        allowed_hosts: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token.encode()
        self.allowed_hosts = {h.lower() for h in allowed_hosts} | {"localhost"}
        self._clock = clock
        self._sessions: OrderedDict[str, float] = OrderedDict()  # id -> expiry

    def _now(self) -> float:
        return self._clock()

    def host_refusal(self, headers: dict[str, str]) -> str | None:
        host = headers.get("host")
        if not host:
            return "a Host header is required"
        name = _host_of(host).lower()
        if not (_is_ip(name) or name in self.allowed_hosts):
            return f"Host {host!r} is not this node's address (DNS rebinding?)"
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return f"Origin {origin!r} is not this API's own origin"
        return None

    def content_refusal(
        self, method: str, headers: dict[str, str], allowed: Iterable[str] = ("application/json",)
    ) -> str | None:
        """None when the request may change state: a GET/HEAD, or a body of an `allowed` type
        (none of which a form or a "simple" cross-origin request can send)."""
        if method in ("GET", "HEAD"):
            return None
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        allowed = tuple(allowed)
        if ctype not in allowed:
            return f"{method} needs Content-Type: {' or '.join(allowed)}"
        return None

    def token_ok(self, given: str) -> bool:
        # latin-1 round-trips the header's raw bytes; compare_digest keeps timing flat.
        return compare_digest(given.encode("latin-1", "replace"), self._token)

    def authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(credentials.strip()):
            return True
        session = cookie_value(headers.get("cookie", ""), COOKIE)
        return session is not None and self._session_ok(session)

    # -- sessions (the dashboard's login) --------------------------------------------------------
    def login(self, token: str) -> str | None:
        """A new session id for the right token, else None."""
        if not self.token_ok(token):
            return None
        sid = token_urlsafe(32)
        self._sessions[sid] = self._now() + SESSION_TTL
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def logout(self, headers: dict[str, str]) -> None:
        sid = cookie_value(headers.get("cookie", ""), COOKIE)
        if sid is not None:
            self._sessions.pop(sid, None)

    def _session_ok(self, sid: str) -> bool:
        now = self._now()
        for known, expiry in list(self._sessions.items()):
            if expiry <= now:
                del self._sessions[known]
        # Constant time over the ids we hold, so timing does not tell a prefix apart.
        ok = False
        for known in self._sessions:
            ok |= compare_digest(known.encode(), sid.encode("latin-1", "replace"))
        return ok

    @staticmethod
    def session_cookie(sid: str) -> str:
        return f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(SESSION_TTL)}"

    @staticmethod
    def expired_cookie() -> str:
        return f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value
    return None


__all__ = ["COOKIE", "TOKEN_FILE", "ApiGuard", "load_or_create_token"]

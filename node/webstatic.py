"""The web dashboard's files, served by the node itself from `node/web/` (package data).

Only the files directly in `node/web/` whose extension has a content type here are served, by
their exact name: the table is made by listing that directory, and a request path is looked up
in it, never joined to a path on disk, so no request can reach another file (`..`, `%2e%2e`,
symlinks, subdirectories all miss the table and are 404). Files are read once, at first use.

Every answer carries a strict Content-Security-Policy (scripts, styles, images and connections
only from this origin, no inline script or style, no framing), `X-Content-Type-Options:
nosniff`, `Referrer-Policy: no-referrer`, and `Cache-Control: no-cache` with an `ETag`: a
browser revalidates each time (a 304 costs a few bytes) and never runs a stale page after the
node was upgraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent / "web"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class WebFiles:
    """The dashboard's files by URL path: `/` is index.html, `/<file>` the others."""

    def __init__(self, root: Path = WEB_DIR) -> None:
        self.root = root
        self._assets: dict[str, Asset] | None = None

    def _load(self) -> dict[str, Asset]:
        # Imported here, at the dashboard's first request: hashlib loads OpenSSL's libcrypto,
        # ~3.7 MiB of RSS that a node nobody browses (and one not hashing) does without.
        import hashlib

        assets: dict[str, Asset] = {}
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return assets
        for path in entries:
            ctype = CONTENT_TYPES.get(path.suffix)
            if ctype is None or path.is_symlink() or not path.is_file():
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[path.name] = Asset(body, ctype, etag)
        return assets

    def get(self, url_path: str) -> Asset | None:
        """The asset for a request path (`/`, `/app.js`), or None (answered 404)."""
        if self._assets is None:
            self._assets = self._load()
        name = url_path[1:] if url_path.startswith("/") else url_path
        return self._assets.get(name or INDEX)

    def answer(
        self, url_path: str, if_none_match: str | None
    ) -> tuple[int, bytes, str | None, dict[str, str]] | None:
        """(status, body, content type, headers) for a GET of `url_path`; None: no such file."""
        asset = self.get(url_path)
        if asset is None:
            return None
        headers = dict(SECURITY_HEADERS)
        headers["Cache-Control"] = "no-cache"
        headers["ETag"] = asset.etag
        if if_none_match is not None and asset.etag in {
            t.strip() for t in if_none_match.split(",")
        }:
            return 304, b"", None, headers
        return 200, asset.body, asset.content_type, headers


__all__ = ["CSP", "SECURITY_HEADERS", "WEB_DIR", "Asset", "WebFiles"]

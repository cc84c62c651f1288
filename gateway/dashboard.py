"""The web dashboard: `/` (the app shell), `/sw.js` (its service worker) and `/static/*`, straight from files.

No build step: the files under gateway/static are what the browser gets. Every response carries an ETag and
`Cache-Control: no-cache`, so a browser revalidates cheaply (304) and never runs yesterday's code; offline,
the service worker answers from its own cache instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

from litestar import MediaType, Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from gateway.icons import PNG_ICONS, icon

STATIC_DIR = Path(__file__).with_name("static")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
               ".webmanifest": "application/manifest+json", ".json": "application/json"}
GENERATED = ("icons/icon.svg", *(f"icons/{name}" for name in PNG_ICONS))
NOT_STATIC = {"index.html", "sw.js"}  # served at / and /sw.js only, where their scope and policy are right
# The page talks to its own origin only (REST and the socket); no inline script or style is ever needed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "manifest-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
COMMON_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class Asset(NamedTuple):
    """One file as served: its bytes, media type and entity tag."""

    body: bytes
    media_type: str
    etag: str


def make_asset(body: bytes, media_type: str) -> Asset:
    """An asset with a content-derived ETag."""
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class Assets:
    """The static files (read again when they change on disk) and the generated icons."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._files: dict[str, tuple[tuple[int, int], Asset]] = {}

    def get(self, name: str) -> Asset | None:
        """The asset at a relative path, or None (unknown type, outside the folder, hidden, missing)."""
        if name in GENERATED:
            body, media_type = icon(name.removeprefix("icons/")) or (b"", "")
            return make_asset(body, media_type)
        path = (self.root / name).resolve()
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_relative_to(self.root):
            return None
        if any(part.startswith(".") for part in path.relative_to(self.root).parts):
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(name)
        if cached is None or cached[0] != key:
            cached = (key, make_asset(path.read_bytes(), media_type))
            self._files[name] = cached
        return cached[1]

    def shell(self) -> list[str]:
        """Every file the app needs to start offline: the page, its modules, styles, manifest and icons."""
        names = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                       if p.is_file() and p.suffix in MEDIA_TYPES and not p.name.startswith("."))
        return sorted({n for n in names if n not in NOT_STATIC} | set(GENERATED))

    def version(self, names: list[str]) -> str:
        """A digest of the whole shell: it changes whenever any file does, so the service worker updates."""
        digest = hashlib.sha256()
        for name in ["index.html", *names]:
            asset = self.get(name)
            digest.update(name.encode() + (asset.etag.encode() if asset else b"-"))
        return digest.hexdigest()[:16]


def respond(request: Request, asset: Asset, extra: dict[str, str] | None = None) -> Response[bytes]:
    """The asset, or 304 when the browser already holds this version."""
    headers = {**COMMON_HEADERS, "ETag": asset.etag, **(extra or {})}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def service_worker(assets: Assets) -> Asset:
    """sw.js with this shell's version and file list filled in (they change with every file)."""
    source = assets.get("sw.js")
    if source is None:
        raise NotFoundException("no service worker")
    names = assets.shell()
    shell = json.dumps(["/", *(f"/static/{n}" for n in names)])
    text = source.body.decode()
    text = re.sub(r'^const VERSION = .*$', f"const VERSION = {json.dumps(assets.version(names))};", text,
                  count=1, flags=re.M)
    text = re.sub(r'^const SHELL = .*$', f"const SHELL = {shell};", text, count=1, flags=re.M)
    return make_asset(text.encode(), source.media_type)


def dashboard_router(static_dir: Path | None = None) -> Router:
    """Routes of the dashboard; public (the data behind it needs a token, the shell does not)."""
    assets = Assets(static_dir or STATIC_DIR)

    @get("/", media_type=MediaType.HTML)
    async def index(request: Request) -> Response[bytes]:
        """The app shell."""
        asset = await asyncio.to_thread(assets.get, "index.html")
        if asset is None:
            raise NotFoundException("the dashboard is not installed")
        return respond(request, asset, {"Content-Security-Policy": CSP})

    @get("/sw.js")
    async def worker(request: Request) -> Response[bytes]:
        """The service worker, at the root so that its scope covers the whole app."""
        # Off the event loop: the first call draws the PNG icons (a second of CPU) to version the shell.
        return respond(request, await asyncio.to_thread(service_worker, assets), {"Service-Worker-Allowed": "/"})

    @get("/static/{name:path}")
    async def static(request: Request, name: FromPath[str]) -> Response[bytes]:
        """A module, stylesheet, manifest or icon."""
        name = name.lstrip("/")
        asset = None if name in NOT_STATIC else await asyncio.to_thread(assets.get, name)
        if asset is None:
            raise NotFoundException(f"no static file {name}")
        return respond(request, asset)

    return Router(path="/", route_handlers=[index, worker, static], opt={"role": None}, include_in_schema=False)

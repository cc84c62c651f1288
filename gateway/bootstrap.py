"""First run: an admin token in `<data dir>/admin.token` (0600), and a short-lived dashboard login link."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from eventstore.credentials import write_secret
from eventstore.log import JetStreamLog
from gateway.settings import load
from gateway.tokens import LOGIN_NAME, issue_token, load_registry

ADMIN_TOKEN_FILE = "admin.token"


def admin_token_path(data_dir: Path) -> Path:
    """Where the admin token lives."""
    return Path(data_dir) / ADMIN_TOKEN_FILE


def read_admin_token(data_dir: Path) -> str | None:
    """The admin token written by `stoker up`, or None."""
    path = admin_token_path(data_dir)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


class Bootstrap(NamedTuple):
    """What `stoker up` prints about its tokens, and the login link's viewer token (the phone QR code reuses it)."""

    lines: str
    login_token: str


async def ensure_admin_token(event_log: JetStreamLog, data_dir: Path, base_url: str | None = None) -> str:
    """Make sure a working admin token is on disk; issue a 12 h login link (revoking the last); lines to print."""
    return (await bootstrap_tokens(event_log, data_dir, base_url)).lines


async def bootstrap_tokens(event_log: JetStreamLog, data_dir: Path, base_url: str | None = None) -> Bootstrap:
    """`ensure_admin_token`, also giving back the login link's token."""
    settings = load().gateway
    registry = await load_registry(event_log)
    path = admin_token_path(data_dir)
    existing = read_admin_token(data_dir)
    lines = []
    current = registry.authenticate(existing) if existing else None
    if current is None or current.role != "admin":
        _event, secret = await issue_token(event_log, "admin", "admin (stoker up)")
        write_secret(path, secret)
        lines.append(f"  admin token:       created in {path} (0600; keep it secret)")
    else:
        lines.append(f"  admin token:       {path}")
    # The new login link revokes the previous ones: one working link at a time, not one per start.
    _login, viewer = await issue_token(event_log, "viewer", LOGIN_NAME, timedelta(hours=settings.login_token_hours),
                                       purpose="login", registry=registry)
    lines.append(f"  dashboard login:   {(base_url or settings.base_url)}/#token={viewer}  "
                 f"(viewer, {settings.login_token_hours:g} h)")
    return Bootstrap("\n".join(lines), viewer)

"""Where the client finds the gateway and its token: arguments, then the environment, then `stoker up` here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from gateway.client.errors import NotConfigured

URL_ENV, TOKEN_ENV, DATA_DIR_ENV = "STOKER_URL", "STOKER_TOKEN", "STOKER_DATA_DIR"
# What `stoker up` leaves in its data dir (ops.runstate.STATE_FILE, gateway.bootstrap.ADMIN_TOKEN_FILE; a
# test keeps them equal): read here as plain files, so the client needs none of the platform's packages.
STATE_FILE = "supervisor.json"
ADMIN_TOKEN_FILE = "admin.token"


def data_dir_of(data_dir: str | Path | None, environ: Mapping[str, str]) -> Path:
    """The data dir named, else STOKER_DATA_DIR, else the default `stoker up` uses."""
    chosen = data_dir or environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("stoker")
    return Path(chosen).expanduser()


def recorded_url(data_dir: Path) -> str | None:
    """The gateway URL a `stoker up` on this data dir recorded, if any."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = state.get("gateway") if isinstance(state, dict) else None
    return url if isinstance(url, str) and url else None


def recorded_token(data_dir: Path) -> str | None:
    """The admin token `stoker up` wrote, if it is there and readable."""
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def resolve(url: str | None, token: str | None, data_dir: str | Path | None,
            environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The gateway's URL and the token, each from the first of: argument, environment, data dir."""
    environ = os.environ if environ is None else environ
    url = url or environ.get(URL_ENV) or None
    token = token or environ.get(TOKEN_ENV) or None
    if url is None or token is None:
        folder = data_dir_of(data_dir, environ)
        url = url or recorded_url(folder)
        token = token or recorded_token(folder)
        if url is None or token is None:
            missing = " and ".join(n for n, v in (("no gateway URL", url), ("no token", token)) if v is None)
            raise NotConfigured(f"the client has {missing}: pass Client(url, token), set {URL_ENV} and "
                                f"{TOKEN_ENV}, or run `stoker up` on this machine (looked in {folder})")
    return url.rstrip("/"), token

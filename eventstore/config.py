"""Settings: one tree, read from stoker.toml and STOKER_* environment variables, laptop defaults."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import platformdirs

S = TypeVar("S", bound=msgspec.Struct)


class ConfigError(ValueError):
    """A setting has a value stoker cannot use; the message names it."""


class CommonSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every stoker process shares (env `STOKER_<FIELD>`, or the top of stoker.toml)."""

    data_dir: str = ""
    nats_url: str = ""  # empty: the embedded server recorded in data_dir, else nats://127.0.0.1:4222
    nats_ca: str = ""  # the platform CA to pin (TLS only); empty: the embedded server's, when nats_url is empty
    nats_credentials: str = ""  # an nkey seed file (docs/security.md); empty: connect without credentials
    database_url: str = ""  # empty: SQLite in data_dir; postgresql://… for PostgreSQL
    prefix: str = "stoker"
    replicas: Literal[1, 3] = 1
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: str = "info"
    tracing: Literal["off", "console", "otlp", "file"] = "off"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    trace_file: str = ""  # tracing=file: where spans go as JSON lines; empty: <data_dir>/traces.jsonl

    @property
    def data_location(self) -> Path:
        """Where the data directory is, without creating it (`stoker doctor` looks before it touches)."""
        return Path(self.data_dir or platformdirs.user_data_dir("stoker")).expanduser()

    @property
    def data_path(self) -> Path:
        """The data directory, created if missing (0700: it holds the platform's credentials)."""
        path = self.data_location
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except PermissionError:
            raise ConfigError(f"cannot use the data dir {path} (permission denied): it belongs to another user, "
                              "the one who runs the platform there") from None
        return path

    @property
    def credentials_path(self) -> Path | None:
        """The NATS credential this process connects with, if any."""
        return Path(self.nats_credentials).expanduser() if self.nats_credentials else None

    @property
    def trace_path(self) -> Path:
        """Where `tracing = "file"` appends spans (every process of a data dir may share it)."""
        return Path(self.trace_file).expanduser() if self.trace_file else self.data_path / "traces.jsonl"

    @property
    def sqlite_path(self) -> Path:
        """Where the embedded read models live."""
        return self.data_path / "readmodels.sqlite3"


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The embedded NATS server of `stoker up` (env `STOKER_NATS_<FIELD>`, or `[nats]` in stoker.toml)."""

    listen: str = "127.0.0.1"  # anything but loopback needs TLS: 0.0.0.0 reaches the LAN
    tls: Literal["auto", "on", "off"] = "auto"  # auto: on exactly when listen is not loopback
    names: tuple[str, ...] = ()  # more names/addresses the server certificate covers (a DNS name, a NAT address)


def config_file(env: dict[str, str] | None = None) -> Path | None:
    """The stoker.toml in use: $STOKER_CONFIG, else ./stoker.toml, else none."""
    env = os.environ if env is None else env
    explicit = env.get("STOKER_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"STOKER_CONFIG={explicit} does not exist")
        return path
    local = Path("stoker.toml")
    return local if local.is_file() else None


def _file_values(section: str | None, env: dict[str, str]) -> dict[str, Any]:
    path = config_file(env)
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if section is None:
        return {k: v for k, v in document.items() if not isinstance(v, dict)}
    table = document.get(section, {})
    return table if isinstance(table, dict) else {}


def _env_values(cls: type[msgspec.Struct], prefix: str, env: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        raw = env.get(f"{prefix}{field.name.upper()}")
        if raw is not None:
            values[field.name] = _parse_env(raw)
    return values


def _parse_env(raw: str) -> Any:
    # Lists and tables may be given as JSON; anything else stays a string for msgspec to convert.
    if raw[:1] in "[{":
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw
    return raw


def load_settings(
    cls: type[S], section: str | None = None, overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> S:
    """Build `cls` from stoker.toml `[section]`, then `STOKER_[SECTION_]FIELD` variables, then overrides."""
    env = dict(os.environ) if env is None else env
    prefix = f"STOKER_{section.upper()}_" if section else "STOKER_"
    values = _file_values(section, env)
    values.update(_env_values(cls, prefix, env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        where = f"[{section}]" if section else "settings"
        raise ConfigError(f"{where}: {exc}") from None

"""Gateway settings: `[gateway]` in stoker.toml and STOKER_GATEWAY_* variables, laptop defaults."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from eventstore.config import CommonSettings, load_settings

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the gateway listens, talks to browsers and protects itself."""

    host: str = "127.0.0.1"  # 0.0.0.0 exposes the API to the network: an explicit choice
    port: Port = 8000
    public_url: str = ""  # how browsers reach the gateway (login links); empty: http://host:port
    cors_origins: tuple[str, ...] = ()
    ws_ping_s: PositiveFloat = 20.0
    ws_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 1000  # messages queued per client before it is closed
    ws_auth_timeout_s: PositiveFloat = 10.0
    read_your_writes_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    command_timeout_s: PositiveFloat = 5.0
    auth_max_failures: Annotated[int, msgspec.Meta(ge=1)] = 10  # bad tokens per address per window
    auth_window_s: PositiveFloat = 60.0
    required_services: tuple[str, ...] = ("scheduler", "discovery", "projector")  # health is 503 while one is silent
    max_projection_lag: Annotated[int, msgspec.Meta(ge=0)] = 10_000  # events a read model may be behind (else 503)
    max_projection_behind_s: PositiveFloat = 30.0  # how old the oldest event not yet projected may be (else 503)
    login_token_hours: PositiveFloat = 12.0
    job_page_cache: Annotated[int, msgspec.Meta(ge=0)] = 256  # job list pages kept until the projector moves on
    maps_max_bytes: Annotated[int, msgspec.Meta(ge=1, le=2**40)] = 256 * 1024 * 1024  # the largest map upload
    metrics_public: bool = False  # GET /metrics without a token (a Prometheus on a trusted network)
    # "Open on your phone" (issue 14): how long the viewer token in the dashboard's QR code lasts at most
    phone_token_minutes: PositiveFloat = 60.0

    @property
    def base_url(self) -> str:
        """Where a browser on this machine reaches the gateway."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `create_app` needs: the shared settings and the gateway's own."""

    common: CommonSettings = msgspec.field(default_factory=CommonSettings)
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)


def load(common: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None,
         env: dict[str, str] | None = None) -> Settings:
    """Read both trees from stoker.toml and the environment; explicit overrides win."""
    return Settings(common=load_settings(CommonSettings, None, common, env),
                    gateway=load_settings(GatewaySettings, "gateway", gateway, env))

"""Run the gateway: `python -m gateway [--host H] [--port P]` or `stoker run gateway`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eventstore.observability import configure_logging, configure_tracing
from gateway.settings import Settings, load


def server_config(app: Any, settings: Settings) -> Any:
    """How uvicorn serves the gateway (the benchmark serves it the same way)."""
    import uvicorn

    # No per-message deflate: one progress sample goes to hundreds of sockets, each would compress it again.
    return uvicorn.Config(app, host=settings.gateway.host, port=settings.gateway.port, log_level="warning",
                          ws_max_size=1024 * 1024, ws_per_message_deflate=False, lifespan="on",
                          timeout_graceful_shutdown=10)


def main(settings: Settings) -> None:
    """Serve the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from eventstore import lifeline
    from eventstore.server import NoPlatform, resolve_nats_url
    from gateway.app import create_app

    lifeline.watch()  # under `stoker up`: stop (as on SIGTERM) if the supervisor dies
    common = settings.common
    try:  # nowhere to connect: one line, as the services say it, not a failed startup's traceback
        resolve_nats_url(common.nats_url, common.data_path)
    except NoPlatform as exc:
        sys.exit(f"stoker-gateway: {exc}")
    configure_logging("gateway", common.log_format, common.log_level)
    configure_tracing("gateway", common.tracing, common.otlp_endpoint, path=common.trace_path)
    uvicorn.Server(server_config(create_app(settings), settings)).run()


def parse(argv: list[str]) -> dict[str, object]:
    """Command-line overrides of the gateway settings."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description="stoker's REST and WebSocket gateway")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


def cli_main(argv: list[str] | None = None) -> None:
    """Entry point; `stoker run gateway` passes no arguments (settings come from stoker.toml and STOKER_*)."""
    main(load(gateway=parse(argv or [])))


if __name__ == "__main__":
    cli_main(sys.argv[1:])

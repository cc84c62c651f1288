"""stoker from Python: submit, follow, stop and fetch results through the gateway (docs: README, "From Python").

Needs only httpx, msgspec and websockets (and tqdm for `follow(progress=True)`, when installed)::

    from gateway.client import Client

    with Client() as stoker:  # STOKER_URL and STOKER_TOKEN, or the `stoker up` of this machine
        run = stoker.submit_training("2048", max_iterations=200)
        final = stoker.wait(run.id)
"""

from gateway.client.clients import AsyncClient, Client
from gateway.client.errors import (
    Forbidden,
    InvalidRequest,
    JobFailed,
    NotConfigured,
    NotFound,
    ServerError,
    StokerError,
    Timeout,
    Unavailable,
)

__all__ = ["AsyncClient", "Client", "Forbidden", "InvalidRequest", "JobFailed", "NotConfigured", "NotFound",
           "ServerError", "StokerError", "Timeout", "Unavailable"]

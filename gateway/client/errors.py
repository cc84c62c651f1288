"""What the Python client raises: a small hierarchy by what went wrong, never a bare HTTP status."""

from __future__ import annotations

from typing import Any


class StokerError(Exception):
    """Anything the client raises; `status` is the gateway's HTTP status where there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotConfigured(StokerError, ValueError):
    """The client does not know where the gateway is or which token to send."""


class InvalidRequest(StokerError, ValueError):
    """The gateway refused the request as it was asked (400, 409, 413, 422); the message is the gateway's."""


class NotFound(StokerError, LookupError):
    """No such job (or other resource)."""


class Forbidden(StokerError, PermissionError):
    """The token is missing, unknown, expired or revoked (401), or its role may not do this (403, 429)."""


class Unavailable(StokerError, ConnectionError):
    """Nothing answers: the gateway cannot be reached, or no service is there to carry out the command (503)."""


class Timeout(StokerError, TimeoutError):
    """Something was waited on and did not answer in time: a service behind the gateway (504), or `wait`."""


class ServerError(StokerError):
    """The gateway failed unexpectedly (500); its log has the details."""


class JobFailed(StokerError):
    """`wait` on a job that failed or timed out: the job, its error and the end of its traceback."""

    def __init__(self, job: Any, traceback: str = "") -> None:
        tail = f"\n{traceback.rstrip()}" if traceback else ""
        super().__init__(f"job {job.id} {job.status.replace('_', ' ')}: {job.error or 'no error given'}{tail}")
        self.job = job
        self.traceback = traceback


BY_STATUS: dict[int, type[StokerError]] = {
    400: InvalidRequest, 401: Forbidden, 403: Forbidden, 404: NotFound, 409: InvalidRequest, 413: InvalidRequest,
    422: InvalidRequest, 429: Forbidden, 503: Unavailable, 504: Timeout,
}


def error_for(status: int, detail: str) -> StokerError:
    """The error an HTTP status stands for, carrying the gateway's message."""
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidRequest)
    return cls(detail or f"HTTP {status}", status)

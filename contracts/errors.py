"""Domain errors every service may raise; each maps to one HTTP-like code in one place."""

from __future__ import annotations


class DomainError(Exception):
    """A command that cannot be carried out as asked; `code` follows HTTP, `error` is a short tag."""

    code = 409
    error = "conflict"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCommand(DomainError):
    """The command is well-formed but makes no sense (negative budget, unknown workload, …)."""

    code = 400
    error = "invalid"


class UnknownWorkload(InvalidCommand):
    """No registered worker offers the workload a job names; the message lists what is offered."""

    error = "unknown_workload"


class InvalidParams(InvalidCommand):
    """A job's params do not fit the parameters its workload declares; the message names them and the known ones."""

    error = "invalid_params"


class NotFound(DomainError):
    """The command names something that does not exist."""

    code = 404
    error = "not_found"


class Forbidden(DomainError):
    """The sender may not give this command (a worker speaking for another worker)."""

    code = 403
    error = "forbidden"


class Conflict(DomainError):
    """The command clashes with the current state (a stale attempt, a finished job, …)."""

    code = 409
    error = "conflict"


class Unavailable(DomainError):
    """Nobody can serve the command right now (no service answers, a standby is not the leader)."""

    code = 503
    error = "unavailable"


class CommandFailed(DomainError):
    """A command's reply was an error; carries the remote code and tag."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code, self.error = code, error


def error_for(code: int, error: str, message: str) -> DomainError:
    """Rebuild the typed error a service replied with."""
    for cls in (UnknownWorkload, InvalidParams, InvalidCommand, NotFound, Forbidden, Conflict, Unavailable):
        if cls.code == code and cls.error == error:
            return cls(message)
    return CommandFailed(code, error, message)

"""Which port a listener of `stoker up` takes when the configured one is taken (pure: no sockets, no psutil).

The configured port if it is free; else the one chosen last time for the same configured port, if free (the
firewall rules and the URLs people saved keep working); else a fresh one. `ops.ports` asks the system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PortChoice:
    """The port a listener uses: `wanted` (configured), `port` (taken), and who held `wanted` when they differ."""

    name: str
    wanted: int
    port: int
    holder: str | None = None

    @property
    def moved(self) -> bool:
        """Whether another program had the configured port."""
        return self.port != self.wanted

    def explain(self) -> str:
        """One line for the person who configured the port."""
        if not self.moved:
            return f"{self.name}: port {self.port}"
        return (f"{self.name}: port {self.wanted} is taken by {self.holder or 'another program'}; "
                f"using {self.port} instead")


def choose_port(name: str, wanted: int, is_free: Callable[[int], bool], remembered: int | None,
                fresh: Callable[[], int], holder: Callable[[int], str | None]) -> PortChoice:
    """The port `name` should bind: `wanted` when free, else `remembered` when free, else `fresh()`."""
    if is_free(wanted):
        return PortChoice(name, wanted, wanted)
    who = holder(wanted)
    if remembered is not None and remembered != wanted and is_free(remembered):
        return PortChoice(name, wanted, remembered, who)
    return PortChoice(name, wanted, fresh(), who)

"""The read models every stoker installation keeps: jobs (with checkpoints), workers, tokens."""

from __future__ import annotations

from eventstore.projection import Projection


def all_projections() -> list[Projection]:
    """Every built-in projection, in the order they are applied."""
    from eventstore.readmodels.jobs import JobsProjection
    from eventstore.readmodels.workers import WorkersProjection

    return [JobsProjection(), WorkersProjection()]


def projection_named(name: str) -> Projection:
    """One built-in projection by name; ValueError lists the known names."""
    known = {p.name: p for p in all_projections()}
    if name not in known:
        raise ValueError(f"unknown projection {name!r}; known: {', '.join(sorted(known))}")
    return known[name]

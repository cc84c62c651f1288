"""Printing for the CLI: aligned tables on a terminal, JSON lines for scripts."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click
import msgspec


def emit_json(value: Any) -> None:
    """One JSON document on its own line."""
    click.echo(msgspec.json.encode(value).decode())


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """Rows as a left-aligned text table."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join([line.rstrip(), *body])


def is_terminal() -> bool:
    """Whether stdout is a terminal."""
    return sys.stdout.isatty()


def progress_bar(done: float, total: float | None, width: int = 30) -> str:
    """`[#####.....]  42%` (or a spinner-free count when the total is unknown)."""
    if not total:
        return f"{done:g}"
    share = max(0.0, min(1.0, done / total))
    filled = round(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:5.1f}%"

"""A workload that reads its map (no tests here): its result says what it found at `ctx.asset_path`."""

from __future__ import annotations

import hashlib
from typing import Any

from services.trainer.sdk import workload


@workload
def run(ctx: Any) -> dict[str, Any]:
    """Hash the map the worker handed over."""
    data = ctx.asset_path.read_bytes() if ctx.asset_path is not None else b""
    ctx.report(iteration=1, loss=0.0)
    return {"iteration": 1, "sha256": hashlib.sha256(data).hexdigest(), "name": ctx.asset_path.name
            if ctx.asset_path else None, "assets": sorted(ctx.assets)}

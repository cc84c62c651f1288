"""Real scheduler processes for takeover tests: a leader and standbys with a short lease."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def start_schedulers(nats_url: str, prefix: str, data_dir: Path,
                           count: int = 2) -> list[asyncio.subprocess.Process]:
    """`count` schedulers as `python -m services.scheduler`, with a 1 s lease so a standby takes over fast."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STOKER_NATS_URL": nats_url, "STOKER_PREFIX": prefix,
           "STOKER_DATA_DIR": str(data_dir), "STOKER_LOG_FORMAT": "json",
           "STOKER_SCHEDULER_LEASE_TTL_S": "1", "STOKER_SCHEDULER_TICK_S": "0.1"}
    return [await asyncio.create_subprocess_exec(sys.executable, "-m", "services.scheduler", cwd=ROOT, env=env,
                                                 stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL) for _ in range(count)]

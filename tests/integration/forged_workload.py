"""A workload only a forged assignment names: importing this module leaves a marker file (no tests here).

The fencing tests set `STOKER_TEST_IMPORT_MARKER` for the worker under attack; the file appearing
means the worker loaded something of a job the scheduler never gave it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.trainer.sdk import workload

_MARKER = os.environ.get("STOKER_TEST_IMPORT_MARKER")
if _MARKER:
    Path(_MARKER).write_text(f"imported in process {os.getpid()}")


@workload
def run(ctx: Any) -> dict[str, Any]:
    """Would run the forged job."""
    Path(ctx.params.get("ran_file", os.devnull)).write_text("ran")
    return {"forged": True}

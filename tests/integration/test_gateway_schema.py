"""schemathesis against /schema of a live gateway: no 500s, responses as documented."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.integration.gateway_support import gateway_stack, publish_episodes, publish_progress, run_job

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# A cursor is opaque: any string fits the schema, yet only cursors this API handed out mean something (400).
CONFIG = """
[[operations]]
include-path = "/api/v1/jobs"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

# Discovery refuses GPUs with the same index (400, as the body's description says): JSON Schema cannot say
# "distinct by one property", so a schema-valid body may still be refused.
[[operations]]
include-name = "POST /api/v1/workers/register"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "429"]

# A map upload is checked beyond its form's schema: an empty file, a file name that is a path, a display
# name with characters a name may not hold are refused (400, with the reason).
[[operations]]
include-name = "POST /api/v1/maps/upload"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "429"]

# Real ids for the routes of one job, so fuzzing reaches past the 404 into the views.
[[operations]]
include-path-regex = "^/api/v1/(jobs|training)/[{]"
parameters = { job_id = "{train}", training_id = "{train}" }

[[operations]]
include-path-regex = "^/api/v1/testing/[{]"
parameters = { test_id = "{evaluation}" }
"""


async def schemathesis(url: str, token: str, tmp_path: Path, ids: dict[str, str]) -> tuple[int, str]:
    """Run the schemathesis CLI against the live schema; (exit code, report)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("{train}", ids["train"]).replace("{evaluation}", ids["evaluation"]))
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/schema/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--mode", "all", "--max-examples", os.environ.get("STOKER_SCHEMATHESIS_EXAMPLES", "20"),
        "--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "1", "--no-color",
        "--suppress-health-check", "all", "--request-timeout", "30",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(nats_server, nc, topology,
                                                                            tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, read_your_writes_s=0.5) as stack:
        train = await run_job(stack, result={"loss": 0.1})
        evaluation = await run_job(stack, kind="eval", checkpoint_of=train, finish=False)
        await publish_progress(stack.nc, stack.topology, train, range(1, 4))
        await publish_episodes(stack.nc, stack.topology, evaluation, [10.0, 20.0])
        code, report = await schemathesis(stack.url, stack.tokens["admin"], tmp_path,
                                          {"train": train, "evaluation": evaluation})
    assert code == 0, report[-20000:]

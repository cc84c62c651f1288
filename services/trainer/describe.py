"""Describing this worker's workloads: the parameter schema each registered one declares (`@workload(params=…)`).

A workload's module may import torch (seconds, hundreds of MB), which the agent itself never does, so the
schemas are read in a throwaway interpreter, as the GPU probe is; the agent registers first and offers the
schemas a moment later (a job submitted before then is not checked against them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from contracts.params import MAX_SCHEMA_BYTES, schema_size
from eventstore.observability import get_logger

log = get_logger(component="describe")
MARK = "stoker-workload-params:"  # the probe's answer line (a workload's import may print anything else)

_PROBE = (
    "import json, sys\n"
    "from services.trainer.sdk import params_schema\n"
    "from services.trainer.workloads_registry import load\n"
    "out = {'schemas': {}, 'errors': {}}\n"
    "for name, target in json.loads(sys.argv[1]).items():\n"
    "    try:\n"
    "        schema = params_schema(load(target, registered=True))\n"
    "        if schema is not None: out['schemas'][name] = schema\n"
    "    except BaseException as exc:\n"
    "        out['errors'][name] = f'{exc.__class__.__name__}: {exc}'\n"
    f"print({MARK!r} + json.dumps(out))\n"
)


def describe_workloads(targets: dict[str, str], timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Registered name -> the JSON schema of its declared parameters, for those that declare them.

    A workload whose module fails to import is left out (and logged); so is every one if the probe fails.
    """
    if not targets:
        return {}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(targets)], capture_output=True, text=True,
                              timeout=timeout, check=True)
        line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(MARK))
        answer = json.loads(line[len(MARK):])
    except (OSError, subprocess.SubprocessError, StopIteration, ValueError) as exc:
        log.warning("workloads not described", reason=repr(exc)[:500])
        return {}
    for name, error in answer.get("errors", {}).items():
        log.warning("workload not described", workload=name, error=str(error)[:500])
    schemas = answer.get("schemas", {})
    return {name: schema for name, schema in schemas.items()
            if isinstance(schema, dict) and schema_size(schema) <= MAX_SCHEMA_BYTES}

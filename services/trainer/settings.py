"""Settings of the worker agent: env `STOKER_TRAINER_<FIELD>`, or `[trainer]` in stoker.toml."""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.events import Label, ModuleName
from services.trainer.wire import PROGRESS_INTERVAL_S


class TrainerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a worker presents itself and runs its jobs; laptop defaults."""

    worker_id: str = ""  # empty: derived from hostname + data dir, then kept in the data dir
    labels: tuple[Label, ...] = ("training", "evaluation")
    slots: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0  # 0: one per GPU, else cpu_slots
    cpu_slots: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    detect_gpus: bool = True
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    stop_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0  # SIGTERM → SIGKILL
    progress_interval_s: Annotated[float, msgspec.Meta(ge=0)] = PROGRESS_INTERVAL_S
    report_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # An attempt's start is reported this long after its process starts, or with its end if that comes first:
    # a short job costs one report instead of two. 0: at once.
    started_report_delay_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.05
    upload_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0  # a checkpoint upload's whole retry budget
    warm: bool = True  # keep forked spare children ready; off: fork on demand
    # Packages `module:function` workloads may come from (advertised): None: any installed package (never the
    # standard library; the function must be marked @workload); []: registered names only, no module:function.
    target_modules: tuple[ModuleName, ...] | None = None
    warm_user_workloads: bool = False  # also keep a warm zygote for `module:function` workloads
    max_zygotes: Annotated[int, msgspec.Meta(ge=1, le=16)] = 3
    preload: tuple[str, ...] = ()  # modules every job child has imported already (e.g. "torch")
    dispatch_batch: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 64
    # The GPUs `stoker service install` saw (a JSON list of contracts.events.Gpu): a worker that does not see
    # them waits with backoff and raises an alert after gpu_alert_after_s, instead of working on the CPU.
    expected_gpus_file: str = ""
    gpu_alert_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    # Offer the parameter schemas the registered workloads declare (read once at start in a throwaway
    # interpreter, which imports each workload's module: torch for 2048). Off: submissions go unchecked.
    describe_workloads: bool = True

"""The parameters the 2048 workloads declare (no torch here: a worker reads them to describe its workloads).

Names follow the earlier training API where the meaning is the same: `learning_rate` (was `lr`),
`gamma`, `batch_size` as the gradient minibatch (was `minibatch`; `batch_size` used to be the number of
parallel boards, now `boards`). Jobs submitted before the rename (`params_version` 0) keep their old
meaning through `LEGACY_NAMES`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Old name -> new name, applied in this order to params_version 0 jobs (`batch_size` becomes `boards` before
# `minibatch` becomes `batch_size`).
LEGACY_NAMES = {"lr": "learning_rate", "batch_size": "boards", "minibatch": "batch_size"}

Count = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


def _d(text: str, **bounds: float) -> msgspec.Meta:
    return msgspec.Meta(description=text, **bounds)


class TrainParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Training an afterstate DQN on parallel 2048 boards."""

    learning_rate: Annotated[float, _d("Adam step size", gt=0, le=1)] = 5e-4
    gamma: Annotated[float, _d("discount of future rewards", ge=0, le=1)] = 0.99
    batch_size: Annotated[int, _d("transitions per gradient update (the minibatch)", ge=1, le=65_536)] = 256
    boards: Annotated[int, _d("games played in parallel, each stepped once per iteration", ge=1, le=65_536)] = 128
    hidden: Annotated[int, _d("width of the value network's two hidden layers", ge=1, le=8192)] = 256
    reward_scale: Annotated[float, _d("factor applied to merge rewards", gt=0)] = 0.01
    replay_capacity: Annotated[Count, _d("transitions kept in the replay buffer")] = 50_000
    warmup: Annotated[int, _d("transitions collected before the first update", ge=0, le=10_000_000)] = 1024
    target_every: Annotated[Count, _d("updates between target network syncs")] = 500
    eps_start: Annotated[float, _d("exploration rate at the start", ge=0, le=1)] = 0.1
    eps_end: Annotated[float, _d("exploration rate after eps_decay updates", ge=0, le=1)] = 0.01
    eps_decay: Annotated[Count, _d("updates over which exploration falls to eps_end")] = 2000
    seed: Annotated[int, _d("random seed of the network, the replay and the games", ge=0, le=2**63 - 1)] = 0
    checkpoint_every: Annotated[Count, _d("iterations between checkpoints")] = 500
    report_every: Annotated[Count, _d("iterations between progress reports (rate-limited anyway)")] = 1


class EvalParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Greedy games with a trained checkpoint."""

    seed: Annotated[int, _d("random seed of the tile spawns", ge=0, le=2**63 - 1)] = 0
    parallel: Annotated[int, _d("games played at once", ge=1, le=4096)] = 64
    episode_time: Annotated[float, _d("seconds a game may last; one still going then ends as it stands"
                                      " (0: no limit)", ge=0)] = 0.0
    visualize: Annotated[bool, _d("keep each game's move-by-move log (its replay)")] = True

"""The 2048 training workload: checkpoints, exact resumption, and a short CPU run that really learns."""

from __future__ import annotations

import statistics

import pytest
import torch

from services.trainer.workloads.game2048 import evaluate, train
from services.trainer.workloads.game2048.agent import AfterstateAgent, AgentConfig, greedy_actions, random_actions
from services.trainer.workloads.game2048.evaluate import play
from tests.workload_context import RecordingContext

TINY = {"boards": 8, "batch_size": "16", "hidden": 16, "warmup": 32, "checkpoint_every": 10, "seed": 4}


def test_training_reports_every_iteration_and_checkpoints_on_schedule() -> None:
    ctx = RecordingContext(workload="2048", params=TINY, max_iterations=25)
    result = train.run(ctx)
    assert result["iteration"] == 25 and result["stopped"] is False and result["resumed_from"] is None
    assert [r["iteration"] for r in ctx.reports] == list(range(1, 26))
    assert all(r["loss"] is not None and r["loss"] >= 0 for r in ctx.reports)
    assert [i for i, _ in ctx.checkpoints] == [10, 20, 25]
    ckpt = ctx.checkpoints[-1][1]
    assert ckpt["format"] == "stoker.2048/1" and ckpt["iteration"] == 25
    assert set(ckpt) == {"format", "iteration", "run", "agent", "env", "stats"}


def test_a_stopped_run_resumes_where_it_left_off_and_ends_exactly_like_an_unbroken_one() -> None:
    unbroken = RecordingContext(workload="2048", params=TINY, max_iterations=30)
    train.run(unbroken)
    first = RecordingContext(workload="2048", params=TINY, max_iterations=30, stop_after_reports=13)
    stopped = train.run(first)
    assert stopped["stopped"] is True and stopped["iteration"] == 13
    assert [i for i, _ in first.checkpoints] == [10, 13]
    retry = first.next_attempt()
    resumed = train.run(retry)
    assert resumed["resumed_from"] == 13 and resumed["iteration"] == 30
    assert [r["iteration"] for r in retry.reports] == list(range(14, 31))
    a, b = unbroken.checkpoints[-1][1], retry.checkpoints[-1][1]
    for name, tensor in a["agent"]["model"].items():
        assert torch.equal(tensor, b["agent"]["model"][name]), name
    assert torch.equal(a["env"]["boards"], b["env"]["boards"])
    assert a["stats"] == b["stats"]


def mean_score(policy, games: int = 64) -> float:
    """Mean score of `games` games with the evaluation's fixed spawn seed."""
    return statistics.fmean(g["score"] for g in play(policy, games, seed=11))


@pytest.mark.slow
def test_a_short_cpu_run_plays_far_better_than_random_and_than_its_untrained_self() -> None:
    g = torch.Generator().manual_seed(0)
    random_play = mean_score(lambda o: random_actions(o.valid, g))
    untrained = AfterstateAgent(AgentConfig(seed=0))
    untrained_play = mean_score(lambda o: greedy_actions(untrained.net, o, untrained.config.reward_scale))

    ctx = RecordingContext(workload="2048", params={"seed": 0}, max_iterations=1200)
    train.run(ctx)
    assert ctx.reports[-1]["score"] > 2.0 * random_play  # the training's own recent-episode mean
    evaluation = RecordingContext(kind="eval", episodes=64, params={"seed": 11}, checkpoints=ctx.checkpoints)
    trained_play = evaluate.run(evaluation)["score"]["mean"]

    # Random play scores ~1100, greedy-on-reward ~1500, this run ~4000 after ~15 s on 2 cores.
    assert trained_play > 2.0 * random_play, (trained_play, random_play)
    assert trained_play > 1.5 * untrained_play, (trained_play, untrained_play)

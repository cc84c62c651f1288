"""The evaluation's aggregate figures, its game loop, and the 2048-eval workload on a tiny checkpoint."""

from __future__ import annotations

import itertools
import time

import pytest
import torch

from services.trainer.workloads.game2048 import evaluate
from services.trainer.workloads.game2048.agent import AgentConfig, random_actions
from services.trainer.workloads.game2048.evaluate import aggregate, describe, play
from services.trainer.workloads.game2048.train import RunConfig, Trainer
from tests.workload_context import RecordingContext


def episode(score: float, max_tile: int, moves: int, duration_s: float) -> dict:
    return {"score": score, "max_tile": max_tile, "moves": moves, "duration_s": duration_s}


def test_describe_gives_population_statistics() -> None:
    assert describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == {
        "min": 2.0, "max": 9.0, "mean": 5.0, "median": 4.5, "std": 2.0,
    }
    assert describe([3]) == {"min": 3.0, "max": 3.0, "mean": 3.0, "median": 3.0, "std": 0.0}


def test_aggregate_over_episodes() -> None:
    out = aggregate([
        episode(1000, 128, 100, 1.0),
        episode(3000, 256, 200, 2.0),
        episode(20000, 2048, 900, 6.0),
        episode(40000, 4096, 1500, 11.0),
    ])
    assert out["episodes"] == 4
    assert out["score"] == {"min": 1000.0, "max": 40000.0, "mean": 16000.0, "median": 11500.0,
                            "std": pytest.approx(246_500_000 ** 0.5)}
    assert out["max_tile"]["median"] == 1152.0
    assert out["moves"]["mean"] == 675.0
    assert out["duration_s"]["max"] == 11.0
    assert out["reached_2048"] == 0.5


def test_aggregate_of_nothing_is_all_zeros() -> None:
    out = aggregate([])
    assert out["episodes"] == 0 and out["reached_2048"] == 0.0
    assert out["score"] == {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "std": 0.0}


def test_play_yields_exactly_the_games_asked_for_with_consistent_logs() -> None:
    g = torch.Generator().manual_seed(0)
    games = list(play(lambda o: random_actions(o.valid, g), 5, parallel=2, seed=3))
    assert len(games) == 5
    for game in games:
        log = game["log"]
        assert len(log) == game["moves"] > 0
        assert [m["move"] for m in log] == list(range(1, len(log) + 1))
        assert log[-1]["score"] == game["score"] == sum(m["reward"] for m in log)
        assert {m["action"] for m in log} <= {"left", "right", "up", "down"}
        assert game["max_tile"] >= 4 and game["duration_s"] >= 0


def test_play_numbers_games_in_the_order_they_began_not_as_they_ended() -> None:
    g = torch.Generator().manual_seed(0)
    ended, began = [], {}
    for game in play(lambda o: random_actions(o.valid, g), 8, parallel=3, seed=5):
        now = time.perf_counter()
        ended.append(game["episode"])
        began[game["episode"]] = now - game["duration_s"]
    assert sorted(ended) == list(range(1, 9))  # every number once
    starts = [began[n] for n in range(1, 9)]
    assert all(a <= b + 1e-3 for a, b in itertools.pairwise(starts))  # numbered as begun


def test_a_game_past_episode_time_ends_as_it_stands() -> None:
    g = torch.Generator().manual_seed(0)
    games = list(play(lambda o: random_actions(o.valid, g), 3, parallel=3, episode_time=1e-9, keep_log=False))
    assert [gm["timed_out"] for gm in games] == [1.0, 1.0, 1.0]
    assert all(gm["moves"] <= 1 and gm["log"] == [] for gm in games)
    assert aggregate([{**gm} for gm in games])["timed_out"] == 1.0


def test_play_stops_when_asked() -> None:
    g = torch.Generator().manual_seed(0)
    assert list(play(lambda o: random_actions(o.valid, g), 5, should_stop=lambda: True)) == []


def untrained_checkpoint() -> dict:
    trainer = Trainer(AgentConfig(hidden=16), RunConfig(batch_size=4), "cpu")
    return trainer.checkpoint()


def test_eval_workload_reports_every_episode_and_aggregates() -> None:
    ctx = RecordingContext(kind="eval", episodes=3, params={"seed": 1})
    ctx.save_checkpoint(untrained_checkpoint(), iteration=0)
    result = evaluate.run(ctx)
    assert result["episodes"] == 3 and result["stopped"] is False
    assert [e["episode"] for e in ctx.episode_reports] == [1, 2, 3]
    assert [r["iteration"] for r in ctx.reports] == [1, 2, 3]
    scores = [e["score"] for e in ctx.episode_reports]
    assert result["score"]["mean"] == pytest.approx(sum(scores) / 3)
    assert ctx.reports[-1]["score"] == pytest.approx(sum(scores) / 3)
    assert all(e["log"] and e["log"][-1]["score"] == e["score"] for e in ctx.episode_reports)


def test_eval_workload_respects_stop() -> None:
    ctx = RecordingContext(kind="eval", episodes=50, stop_after_reports=1)
    ctx.save_checkpoint(untrained_checkpoint(), iteration=0)
    result = evaluate.run(ctx)
    assert result["stopped"] is True and 1 <= result["episodes"] < 50


def test_eval_workload_without_checkpoint_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        evaluate.run(RecordingContext(kind="eval", episodes=1))

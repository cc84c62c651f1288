"""The "2048-eval" workload: greedy games with a trained checkpoint, each reported with its move log."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from services.trainer.sdk import JobContext, params_of, workload
from services.trainer.workloads.game2048.agent import greedy_actions, load_policy
from services.trainer.workloads.game2048.env import ACTIONS, AllMoves, Batch2048Env
from services.trainer.workloads.game2048.params import EvalParams

LOG_LIMIT = 5000  # moves logged per episode; a strong game runs ~1000-2000 moves
PARALLEL = 64  # boards played at once
FIGURES = ("score", "max_tile", "moves", "duration_s")

Policy = Callable[[AllMoves], torch.Tensor]


def describe(values: list[float]) -> dict[str, float]:
    """min/max/mean/median/std (population) of a non-empty list; zeros for an empty one."""
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "std": 0.0}
    return {"min": float(min(values)), "max": float(max(values)), "mean": statistics.fmean(values),
            "median": float(statistics.median(values)), "std": statistics.pstdev(values)}


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation result: per-figure statistics and the share of games that reached 2048."""
    out: dict[str, Any] = {"episodes": len(episodes)}
    for name in FIGURES:
        out[name] = describe([e[name] for e in episodes])
    reached = sum(1 for e in episodes if e["max_tile"] >= 2048)
    out["reached_2048"] = reached / len(episodes) if episodes else 0.0
    if any("timed_out" in e for e in episodes):  # with an episode_time: the share of games cut short
        out["timed_out"] = sum(e.get("timed_out", 0.0) for e in episodes) / len(episodes)
    return out


def play(policy: Policy, episodes: int, *, device: str = "cpu", seed: int = 0, parallel: int = PARALLEL,
         should_stop: Callable[[], bool] | None = None, episode_time: float = 0.0,
         keep_log: bool = True) -> Iterator[dict[str, Any]]:
    """Play `episodes` games with `policy`, yielding each when it ends (with its move log).

    Each game carries `episode`: its number in the order games *began* (1..episodes), so a short game that
    ends early does not take a low number from a long one begun before it. A game still going after
    `episode_time` seconds (0: no limit) ends as it stands, with `timed_out` 1.
    """
    if episodes <= 0:
        return
    env = Batch2048Env(min(parallel, episodes), device, seed)
    n = env.batch_size
    logs: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    scores, started = [0] * n, [time.perf_counter()] * n
    numbers: list[int] = list(range(1, n + 1))
    live, begun, finished = [True] * n, n, 0
    while finished < episodes and not (should_stop and should_stop()):
        actions = policy(env.options)
        step = env.step(actions)
        now = time.perf_counter()
        for b, (a, r) in enumerate(zip(actions.tolist(), step.reward.tolist(), strict=True)):
            scores[b] += r
            if keep_log and live[b] and len(logs[b]) < LOG_LIMIT:
                logs[b].append({"move": len(logs[b]) + 1, "action": ACTIONS[a], "reward": r, "score": scores[b],
                                "t": round(now - started[b], 4)})  # seconds into the game
        ended = [(e, 0.0) for e in step.episodes]
        if episode_time > 0:
            late = [b for b in range(n) if live[b] and now - started[b] >= episode_time
                    and b not in {e["board"] for e, _ in ended}]
            ended += [(e, 1.0) for e in env.end(late)]
        for e, timed_out in ended:
            b = e["board"]
            if live[b]:
                finished += 1
                game = {"episode": numbers[b], "score": e["score"], "max_tile": e["max_tile"], "moves": e["moves"],
                        "duration_s": now - started[b], "log": logs[b]}
                yield {**game, "timed_out": timed_out} if episode_time > 0 else game
            # A board whose game ended starts another only while more games are wanted.
            live[b] = begun < episodes
            begun += live[b]
            numbers[b] = begun
            logs[b], scores[b], started[b] = [], 0, time.perf_counter()


@workload(params=EvalParams)
def run(ctx: JobContext) -> dict[str, Any]:
    """Play `ctx.episodes` greedy games with the checkpoint's network and report each one, numbered as begun."""
    ckpt = ctx.load_checkpoint()
    if ckpt is None:
        raise ValueError("2048-eval needs a checkpoint: give the job a source training job that saved one")
    if not isinstance(ckpt, dict) or "agent" not in ckpt:
        raise ValueError("2048-eval: the checkpoint is not a 2048 training checkpoint")
    net, scale = load_policy(ckpt["agent"], ctx.device)
    p = params_of(ctx, EvalParams)
    wanted = int(ctx.episodes if ctx.episodes is not None else 10)
    done: list[dict[str, Any]] = []
    total = 0.0
    for game in play(lambda options: greedy_actions(net, options, scale), wanted, device=ctx.device, seed=p.seed,
                     parallel=p.parallel, should_stop=lambda: ctx.should_stop, episode_time=p.episode_time,
                     keep_log=p.visualize):
        done.append({k: game[k] for k in (*FIGURES, "timed_out") if k in game})
        total += game["score"]
        ctx.report_episode(game["episode"], log=game["log"] or None, **done[-1])
        ctx.report(iteration=len(done), score=total / len(done))
    return {**aggregate(done), "stopped": len(done) < wanted}

"""The "2048" training workload: an afterstate DQN on a batch of parallel boards."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from services.trainer.sdk import JobContext, params_of, workload
from services.trainer.workloads.game2048.agent import AfterstateAgent, AgentConfig
from services.trainer.workloads.game2048.env import Batch2048Env
from services.trainer.workloads.game2048.params import LEGACY_NAMES, TrainParams

RECENT = 100  # episodes averaged into the reported score


@dataclass
class RunConfig:
    """Loop settings as checkpoints store them (`batch_size` here is the parallel boards: the `boards` param)."""

    batch_size: int = 128  # parallel boards, each stepped once per iteration
    checkpoint_every: int = 500
    report_every: int = 1  # the SDK rate-limits anyway; raise it only to save the call itself
    seed: int = 0


def job_params(ctx: JobContext) -> TrainParams:
    """The job's declared params; a job submitted before the rename reads its old names (params.LEGACY_NAMES)."""
    return params_of(ctx, TrainParams, renamed=LEGACY_NAMES if ctx.params_version == 0 else None)


def configs(p: TrainParams) -> tuple[AgentConfig, RunConfig]:
    """The agent's and the loop's settings from the declared params (their checkpointed names differ)."""
    agent = AgentConfig(hidden=p.hidden, lr=p.learning_rate, gamma=p.gamma, reward_scale=p.reward_scale,
                        minibatch=p.batch_size, replay_capacity=p.replay_capacity, warmup=p.warmup,
                        target_every=p.target_every, eps_start=p.eps_start, eps_end=p.eps_end,
                        eps_decay=p.eps_decay, seed=p.seed)
    return agent, RunConfig(batch_size=p.boards, checkpoint_every=p.checkpoint_every,
                            report_every=p.report_every, seed=p.seed)


class EpisodeStats:
    """Finished-episode figures: a window of recent ones plus all-time totals."""

    def __init__(self) -> None:
        self.scores: deque[int] = deque(maxlen=RECENT)
        self.tiles: deque[int] = deque(maxlen=RECENT)
        self.episodes = 0
        self.best_score = 0
        self.best_tile = 0

    def add(self, episodes: list[dict[str, Any]]) -> None:
        """Take in the episodes an env step finished."""
        for e in episodes:
            self.scores.append(e["score"])
            self.tiles.append(e["max_tile"])
            self.best_score = max(self.best_score, e["score"])
            self.best_tile = max(self.best_tile, e["max_tile"])
        self.episodes += len(episodes)

    def summary(self) -> dict[str, float]:
        """Metrics for `ctx.report` and the result; the recent means only once an episode ended."""
        out = {"episodes": float(self.episodes), "best_score": float(self.best_score),
               "best_tile": float(self.best_tile)}
        if self.scores:
            out["score"] = sum(self.scores) / len(self.scores)
            out["max_tile"] = sum(self.tiles) / len(self.tiles)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and lists, for checkpoints."""
        return {"scores": list(self.scores), "tiles": list(self.tiles), "episodes": self.episodes,
                "best_score": self.best_score, "best_tile": self.best_tile}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.scores.extend(state["scores"])
        self.tiles.extend(state["tiles"])
        self.episodes = int(state["episodes"])
        self.best_score = int(state["best_score"])
        self.best_tile = int(state["best_tile"])


class Trainer:
    """One agent, its env and its stats; the unit that is checkpointed."""

    def __init__(self, agent_config: AgentConfig, run_config: RunConfig, device: str) -> None:
        self.run_config = run_config
        self.agent = AfterstateAgent(agent_config, device)
        self.env = Batch2048Env(run_config.batch_size, device, seed=run_config.seed)
        self.stats = EpisodeStats()

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str) -> Trainer:
        """Rebuild a trainer exactly as it was when `checkpoint` was taken."""
        trainer = cls(AgentConfig(**ckpt["agent"]["config"]), RunConfig(**ckpt["run"]), device)
        trainer.agent.load_state_dict(ckpt["agent"])
        trainer.env.load_state_dict(ckpt["env"])
        trainer.stats.load_state_dict(ckpt["stats"])
        return trainer

    def checkpoint(self) -> dict[str, Any]:
        """The whole training state as a plain dict of tensors, numbers and lists."""
        return {"format": "stoker.2048/1", "iteration": self.agent.iteration,
                "run": vars(self.run_config).copy(), "agent": self.agent.state_dict(),
                "env": self.env.state_dict(), "stats": self.stats.state_dict()}

    def collect(self) -> None:
        """Step every board once and keep the transitions."""
        step = self.env.step(self.agent.act(self.env.options))
        self.agent.observe(step)
        self.stats.add(step.episodes)

    def iterate(self) -> float:
        """One iteration: collect one env step (more while the replay warms up) and do one update."""
        self.collect()
        while not self.agent.ready:
            self.collect()
        return float(self.agent.update())


@workload(params=TrainParams)
def run(ctx: JobContext) -> dict[str, Any]:
    """Train until `ctx.max_iterations` updates (one iteration = one gradient update) or a stop request.

    A resumed job takes its model, game and seed settings from the checkpoint and continues from the
    checkpoint's iteration; `checkpoint_every` and `report_every` always come from the current params.
    """
    agent_config, run_config = configs(job_params(ctx))
    ckpt = ctx.load_checkpoint()
    if ckpt is not None:
        trainer = Trainer.from_checkpoint(ckpt, ctx.device)
    else:
        trainer = Trainer(agent_config, run_config, ctx.device)
    start = trainer.agent.iteration
    stopped = _loop(ctx, trainer, run_config)
    return {"iteration": trainer.agent.iteration, "resumed_from": start if ckpt is not None else None,
            "stopped": stopped, **trainer.stats.summary()}


def _loop(ctx: JobContext, trainer: Trainer, settings: RunConfig) -> bool:
    """Iterate, report and checkpoint until done or asked to stop; True if stopped."""
    limit = ctx.max_iterations if ctx.max_iterations is not None else math.inf
    every, report_every = max(1, settings.checkpoint_every), max(1, settings.report_every)
    saved, stopped = trainer.agent.iteration, False
    while trainer.agent.iteration < limit:
        if ctx.should_stop:
            stopped = True
            break
        loss = trainer.iterate()
        i = trainer.agent.iteration
        if i % report_every == 0 or i >= limit:
            ctx.report(iteration=i, loss=loss, epsilon=trainer.agent.epsilon, **trainer.stats.summary())
        if i % every == 0:
            ctx.save_checkpoint(trainer.checkpoint(), iteration=i)
            saved = i
    if trainer.agent.iteration != saved:
        ctx.save_checkpoint(trainer.checkpoint(), iteration=trainer.agent.iteration)
    return stopped

"""An afterstate DQN for 2048: a network values the board left after a move, before the random tile.

Q(s, a) = reward(s, a) + V(afterstate(s, a)), so the network only has to learn what a position is worth
and the known, deterministic part of a move comes for free; this learns several times faster on CPU than
a plain Q(s, ·) network (see the workload's notes). Everything else is classic DQN: epsilon-greedy
acting with invalid moves masked, a replay buffer, a periodically synced target network, Huber loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from services.trainer.workloads.game2048.env import AllMoves, Step, all_moves, restore_generator

CHANNELS = 16  # exponents 0..15 one-hot; a 65536 tile is read as 32768, which no short run reaches
MASKED = -1e9


@dataclass
class AgentConfig:
    """Hyperparameters of `AfterstateAgent`; plain numbers so they live in checkpoints."""

    hidden: int = 256
    lr: float = 5e-4
    gamma: float = 0.99
    reward_scale: float = 0.01
    minibatch: int = 256
    replay_capacity: int = 50_000
    warmup: int = 1024
    target_every: int = 500
    eps_start: float = 0.1
    eps_end: float = 0.01
    eps_decay: int = 2000
    seed: int = 0


def encode(boards: torch.Tensor) -> torch.Tensor:
    """One-hot exponents: (..., 4, 4) ints -> (..., 256) floats."""
    cells = boards.flatten(-2).clamp(max=CHANNELS - 1)
    return nn.functional.one_hot(cells, CHANNELS).float().flatten(-2)


def value_net(hidden: int) -> nn.Module:
    """The afterstate value network: one-hot board in, one number out."""
    return nn.Sequential(
        nn.Linear(16 * CHANNELS, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 1),
    )


def q_values(net: nn.Module, options: AllMoves, reward_scale: float) -> torch.Tensor:
    """(B, 4) action values of the boards whose moves are `options`; invalid moves get -1e9."""
    n = options.after.shape[0]
    with torch.no_grad():
        value = net(encode(options.after.reshape(-1, 4, 4))).view(n, 4)
    return (options.reward * reward_scale + value).masked_fill(~options.valid, MASKED)


def greedy_actions(net: nn.Module, options: AllMoves, reward_scale: float) -> torch.Tensor:
    """The best valid move of each board."""
    return q_values(net, options, reward_scale).argmax(1)


def random_actions(valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random valid move of each board (any move where none is valid)."""
    noise = torch.rand(valid.shape, generator=generator, device=valid.device)
    return noise.masked_fill(~valid, -1.0).argmax(1)


class Replay:
    """A ring buffer of (afterstate, next board, next board is final) kept as int8 on the device."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.after = torch.zeros(capacity, 4, 4, dtype=torch.int8, device=device)
        self.next = torch.zeros(capacity, 4, 4, dtype=torch.int8, device=device)
        self.done = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.ptr = 0
        self.size = 0

    def add(self, after: torch.Tensor, nxt: torch.Tensor, done: torch.Tensor) -> None:
        """Append a batch of transitions, overwriting the oldest."""
        cap = self.done.shape[0]
        idx = (torch.arange(after.shape[0], device=after.device) + self.ptr) % cap
        self.after[idx] = after.to(torch.int8)
        self.next[idx] = nxt.to(torch.int8)
        self.done[idx] = done
        self.ptr = (self.ptr + after.shape[0]) % cap
        self.size = min(cap, self.size + after.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n transitions drawn uniformly with replacement."""
        idx = torch.randint(self.size, (n,), generator=generator, device=self.done.device)
        return self.after[idx].long(), self.next[idx].long(), self.done[idx]

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer and its cursor."""
        return {"after": self.after[: self.size].cpu(), "next": self.next[: self.size].cpu(),
                "done": self.done[: self.size].cpu(), "ptr": self.ptr, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        n = int(state["size"])
        self.after[:n] = state["after"].to(self.after.device)
        self.next[:n] = state["next"].to(self.next.device)
        self.done[:n] = state["done"].to(self.done.device)
        self.ptr, self.size = int(state["ptr"]), n


class AfterstateAgent:
    """Acts on a `Batch2048Env`, learns from replay; `iteration` counts gradient updates."""

    def __init__(self, config: AgentConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        # Seed the weight init without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = value_net(config.hidden).to(self.device)
        self.target = value_net(config.hidden).to(self.device)
        self.target.load_state_dict(self.net.state_dict())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.replay = Replay(config.replay_capacity, self.device)
        self.iteration = 0

    @property
    def epsilon(self) -> float:
        """The exploration rate now: linear decay over `eps_decay` updates."""
        c = self.config
        frac = min(1.0, self.iteration / max(1, c.eps_decay))
        return c.eps_start + frac * (c.eps_end - c.eps_start)

    @property
    def ready(self) -> bool:
        """Whether the replay buffer holds enough transitions to learn from."""
        return self.replay.size >= max(self.config.warmup, 1)

    def act(self, options: AllMoves) -> torch.Tensor:
        """Epsilon-greedy valid moves for the boards whose moves are `options`."""
        greedy = greedy_actions(self.net, options, self.config.reward_scale)
        explore = random_actions(options.valid, self.generator)
        coin = torch.rand(greedy.shape[0], generator=self.generator, device=self.device)
        return torch.where(coin < self.epsilon, explore, greedy)

    def observe(self, step: Step) -> None:
        """Store the transitions of one env step."""
        self.replay.add(step.afterstates, step.boards, step.done)

    def update(self) -> torch.Tensor:
        """One gradient step on a replay minibatch; returns the (detached) loss."""
        c = self.config
        after, nxt, done = self.replay.sample(c.minibatch, self.generator)
        options = all_moves(nxt)
        with torch.no_grad():
            n = nxt.shape[0]
            future = self.target(encode(options.after.reshape(-1, 4, 4))).view(n, 4)
            best = (options.reward * c.reward_scale + c.gamma * future).masked_fill(~options.valid, MASKED)
            # The next board of a finished game is a fresh one; the game's own future is worth nothing.
            target = torch.where(done | ~options.valid.any(1), 0.0, best.amax(1))
        loss = nn.functional.smooth_l1_loss(self.net(encode(after)).squeeze(1), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        if self.iteration % c.target_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue learning exactly, as a plain dict (tensors copied to CPU)."""
        return snapshot({
            "iteration": self.iteration,
            "config": asdict(self.config),
            "model": self.net.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "generator": self.generator.get_state(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s output (its config must match this agent's)."""
        self.net.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.iteration = int(state["iteration"])
        restore_generator(self.generator, state["generator"], self.config.seed + self.iteration)


def load_policy(state: dict[str, Any], device: str | torch.device = "cpu") -> tuple[nn.Module, float]:
    """The value network and reward scale of an agent checkpoint, ready for greedy play."""
    config = AgentConfig(**state["config"])
    net = value_net(config.hidden).to(device)
    net.load_state_dict(state["model"])
    net.eval()
    return net, config.reward_scale


def snapshot(obj: Any) -> Any:
    """A deep copy with every tensor detached, cloned and moved to the CPU, so later steps cannot alter it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj

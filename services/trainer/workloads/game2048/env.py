"""Vectorised 2048: a batch of boards as a (B, 4, 4) tensor of log2 exponents, every move a tensor op."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

ACTIONS = ("left", "right", "up", "down")
SIZE = 4
FOUR_PROBABILITY = 0.1


class AllMoves(NamedTuple):
    """The four possible moves of every board: afterstates (B, 4, 4, 4), rewards (B, 4), valid (B, 4)."""

    after: torch.Tensor
    reward: torch.Tensor
    valid: torch.Tensor


class Step(NamedTuple):
    """What `Batch2048Env.step` returns; `boards` are already reset where `done`."""

    boards: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    afterstates: torch.Tensor
    episodes: list[dict[str, Any]]


def compress_left(rows: torch.Tensor) -> torch.Tensor:
    """Slide the non-empty cells of each (N, 4) row to the left, keeping their order."""
    filled = rows != 0
    # Each tile goes to the count of tiles before it; empties go to a spare column that is dropped.
    target = torch.where(filled, filled.cumsum(1) - 1, SIZE)
    out = torch.zeros(rows.shape[0], SIZE + 1, dtype=rows.dtype, device=rows.device)
    return out.scatter_(1, target, rows)[:, :SIZE]


def slide_merge_left(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the 2048 "left" rule to (N, 4) exponent rows; return the new rows and the merge reward."""
    c = compress_left(rows)
    same = (c[:, 1:] == c[:, :-1]) & (c[:, 1:] > 0)
    # A tile merges at most once: a pair merges unless its left tile was just absorbed.
    m0 = same[:, 0]
    m1 = same[:, 1] & ~m0
    m2 = same[:, 2] & ~m1
    merged = torch.stack([m0, m1, m2], dim=1)
    absorbed = torch.zeros_like(c, dtype=torch.bool)
    absorbed[:, 1:] = merged
    grown = c.clone()
    grown[:, :-1] += merged.to(c.dtype)
    grown = grown.masked_fill(absorbed, 0)
    gain = torch.where(merged, torch.ones_like(c[:, 1:]) << (c[:, :-1] + 1), 0).sum(1)
    return compress_left(grown), gain


def _orient(boards: torch.Tensor) -> torch.Tensor:
    """Stack each board four ways so that every action becomes a move to the left: (B, 4, 4, 4)."""
    t = boards.transpose(-1, -2)
    return torch.stack([boards, boards.flip(-1), t, t.flip(-1)], dim=1)


def _unorient(views: torch.Tensor) -> torch.Tensor:
    """Undo `_orient` on each of the four views."""
    return torch.stack(
        [views[:, 0], views[:, 1].flip(-1), views[:, 2].transpose(-1, -2),
         views[:, 3].flip(-1).transpose(-1, -2)],
        dim=1,
    )


def all_moves(boards: torch.Tensor) -> AllMoves:
    """Compute all four moves of every board at once."""
    n = boards.shape[0]
    rows, gain = slide_merge_left(_orient(boards).reshape(-1, SIZE))
    after = _unorient(rows.view(n, 4, SIZE, SIZE))
    reward = gain.view(n, 4, SIZE).sum(-1)
    valid = (after != boards.unsqueeze(1)).flatten(2).any(-1)
    return AllMoves(after, reward, valid)


def move(boards: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each board in its own direction: (new_boards, reward, changed); no tile is spawned."""
    moves = all_moves(boards)
    idx = torch.arange(boards.shape[0], device=boards.device)
    return moves.after[idx, actions], moves.reward[idx, actions], moves.valid[idx, actions]


def spawn(boards: torch.Tensor, where: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Put a 2 (p=0.9) or a 4 on a uniformly chosen empty cell of each board selected by `where`."""
    flat = boards.flatten(1).clone()
    empty = flat == 0
    noise = torch.rand(flat.shape, generator=generator, device=flat.device).masked_fill(~empty, -1.0)
    cell = noise.argmax(1, keepdim=True)
    four = torch.rand(flat.shape[0], 1, generator=generator, device=flat.device) < FOUR_PROBABILITY
    tile = four.to(flat.dtype) + 1
    ok = (where & empty.any(1)).unsqueeze(1)
    flat.scatter_(1, cell, torch.where(ok, tile, flat.gather(1, cell)))
    return flat.view_as(boards)


def new_boards(n: int, generator: torch.Generator, device: str | torch.device = "cpu") -> torch.Tensor:
    """Fresh boards with two random tiles each."""
    boards = torch.zeros(n, SIZE, SIZE, dtype=torch.long, device=device)
    everywhere = torch.ones(n, dtype=torch.bool, device=device)
    return spawn(spawn(boards, everywhere, generator), everywhere, generator)


def restore_generator(generator: torch.Generator, state: torch.Tensor, fallback_seed: int) -> None:
    """Set a saved RNG state; a state from another device type cannot apply, so reseed instead."""
    try:
        # The platform may load checkpoints onto the job's device; RNG states are always CPU bytes.
        generator.set_state(state.to("cpu", torch.uint8))
    except (RuntimeError, ValueError, TypeError):
        # A CUDA checkpoint resumed on CPU (or back): exact replay is impossible there anyway.
        generator.manual_seed(fallback_seed)


def max_tile(boards: torch.Tensor) -> torch.Tensor:
    """The largest tile value (not exponent) of each board; 0 for an empty board."""
    top = boards.flatten(1).amax(1)
    return torch.where(top > 0, torch.ones_like(top) << top, 0)


class Batch2048Env:
    """B independent games advanced together; finished games restart at once and their stats are returned."""

    def __init__(self, batch_size: int, device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.reset()

    def reset(self) -> torch.Tensor:
        """Start B new games; return the boards."""
        n, dev = self.batch_size, self.device
        self.boards = new_boards(n, self.generator, dev)
        self.score = torch.zeros(n, dtype=torch.long, device=dev)
        self.moves = torch.zeros(n, dtype=torch.long, device=dev)
        self.options = all_moves(self.boards)
        return self.boards

    @property
    def valid(self) -> torch.Tensor:
        """(B, 4) mask of the moves that change each current board."""
        return self.options.valid

    def step(self, actions: torch.Tensor) -> Step:
        """Play one move on every board; an invalid move leaves its board unchanged and costs nothing."""
        idx = torch.arange(self.batch_size, device=self.device)
        after = self.options.after[idx, actions]
        reward = self.options.reward[idx, actions]
        changed = self.options.valid[idx, actions]
        self.boards = spawn(after, changed, self.generator)
        self.score += reward
        self.moves += changed.to(self.moves.dtype)
        self.options = all_moves(self.boards)
        done = ~self.options.valid.any(1)
        episodes = self._restart(done) if bool(done.any()) else []
        return Step(self.boards, reward, done, after, episodes)

    def end(self, boards: list[int]) -> list[dict[str, Any]]:
        """End these boards' games as they stand (their stats, as a finished game's) and start new ones."""
        done = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        done[boards] = True
        return self._restart(done) if boards else []

    def _restart(self, done: torch.Tensor) -> list[dict[str, Any]]:
        """Record the finished games' stats and replace them with new games."""
        idx = done.nonzero().squeeze(1)
        stats = zip(idx.tolist(), self.score[idx].tolist(), max_tile(self.boards[idx]).tolist(),
                    self.moves[idx].tolist(), strict=True)
        episodes = [{"board": b, "score": s, "max_tile": t, "moves": m} for b, s, t, m in stats]
        fresh = new_boards(idx.numel(), self.generator, self.device)
        self.boards = self.boards.index_put((idx,), fresh)
        self.score[idx] = 0
        self.moves[idx] = 0
        fresh_moves = all_moves(fresh)
        self.options = AllMoves(*(
            old.index_put((idx,), new) for old, new in zip(self.options, fresh_moves, strict=True)
        ))
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """The games in progress and the spawn RNG, as plain tensors."""
        return {"boards": self.boards.cpu(), "score": self.score.cpu(), "moves": self.moves.cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the games saved by `state_dict`."""
        self.boards = state["boards"].to(self.device)
        self.score = state["score"].to(self.device)
        self.moves = state["moves"].to(self.device)
        self.batch_size = self.boards.shape[0]
        restore_generator(self.generator, state["generator"], int(self.score.sum()))
        self.options = all_moves(self.boards)

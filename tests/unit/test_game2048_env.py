"""The 2048 rules on hand-made boards, checked against a plain-Python reference with hypothesis."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.trainer.workloads.game2048.env import (
    ACTIONS,
    Batch2048Env,
    all_moves,
    max_tile,
    move,
    new_boards,
    restore_generator,
    slide_merge_left,
    spawn,
)

LEFT, RIGHT, UP, DOWN = (ACTIONS.index(a) for a in ("left", "right", "up", "down"))


def exps(tiles: list) -> torch.Tensor:
    """Tile values (0 = empty) to an exponent tensor of the same shape."""
    t = torch.tensor(tiles, dtype=torch.long)
    return torch.where(t > 0, torch.log2(t.clamp(min=1).double()).round().long(), 0)


def tiles(exponents: torch.Tensor) -> list:
    """Exponents back to tile values, as nested lists."""
    return torch.where(exponents > 0, torch.ones_like(exponents) << exponents, 0).tolist()


def reference_left(row: list[int]) -> tuple[list[int], int]:
    """The rule written the obvious way, on exponents: slide, merge each pair once, slide."""
    packed = [x for x in row if x]
    out, gain, i = [], 0, 0
    while i < len(packed):
        if i + 1 < len(packed) and packed[i] == packed[i + 1]:
            out.append(packed[i] + 1)
            gain += 2 ** (packed[i] + 1)
            i += 2
        else:
            out.append(packed[i])
            i += 1
    return out + [0] * (4 - len(out)), gain


@pytest.mark.parametrize(
    ("row", "expected", "score"),
    [
        ([2, 2, 2, 2], [4, 4, 0, 0], 8),
        ([2, 2, 4, 0], [4, 4, 0, 0], 4),
        ([0, 2, 0, 2], [4, 0, 0, 0], 4),
        ([4, 2, 2, 0], [4, 4, 0, 0], 4),
        ([8, 8, 8, 0], [16, 8, 0, 0], 16),
        ([4, 4, 2, 2], [8, 4, 0, 0], 12),
        ([2, 4, 8, 16], [2, 4, 8, 16], 0),
        ([0, 0, 0, 2], [2, 0, 0, 0], 0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0),
        ([2, 0, 0, 2], [4, 0, 0, 0], 4),
        ([1024, 1024, 2, 2], [2048, 4, 0, 0], 2052),
    ],
)
def test_left_on_single_rows(row: list[int], expected: list[int], score: int) -> None:
    new, gain = slide_merge_left(exps([row]))
    assert tiles(new) == [expected]
    assert gain.tolist() == [score]


BOARD = [[2, 2, 0, 0],
         [0, 0, 0, 0],
         [0, 0, 0, 2],
         [4, 0, 0, 2]]


@pytest.mark.parametrize(
    ("action", "expected", "score"),
    [
        (LEFT, [[4, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 2, 0, 0]], 4),
        (RIGHT, [[0, 0, 0, 4], [0, 0, 0, 0], [0, 0, 0, 2], [0, 0, 4, 2]], 4),
        (UP, [[2, 2, 0, 4], [4, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], 4),
        (DOWN, [[0, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0], [4, 2, 0, 4]], 4),
    ],
)
def test_each_direction_on_a_board(action: int, expected: list, score: int) -> None:
    new, reward, changed = move(exps([BOARD]), torch.tensor([action]))
    assert tiles(new) == [expected]
    assert reward.tolist() == [score]
    assert changed.tolist() == [True]


def test_a_move_that_changes_nothing_is_flagged_invalid() -> None:
    board = exps([[[2, 4, 0, 0], [8, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    new, reward, changed = move(board, torch.tensor([LEFT]))
    assert torch.equal(new, board)
    assert reward.tolist() == [0] and changed.tolist() == [False]
    assert all_moves(board).valid.tolist() == [[False, True, False, True]]


def test_game_over_only_when_full_and_nothing_merges() -> None:
    dead = exps([[[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 4, 2]]])
    alive = exps([[[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 8, 8]]])
    assert all_moves(dead).valid.tolist() == [[False] * 4]
    assert all_moves(alive).valid.tolist() == [[True, True, False, False]]


def test_spawn_fills_one_empty_cell_with_a_2_or_4_only_where_asked() -> None:
    g = torch.Generator().manual_seed(3)
    boards = exps([BOARD] * 2000)
    where = torch.arange(2000) % 2 == 0
    out = spawn(boards, where, g)
    diff = out != boards
    assert torch.equal(diff.flatten(1).sum(1), where.long())
    assert bool((boards[diff] == 0).all())
    placed = out[diff]
    assert set(placed.tolist()) == {1, 2}
    assert 0.05 < (placed == 2).float().mean().item() < 0.15


def test_new_boards_have_two_tiles_and_are_reproducible() -> None:
    a = new_boards(50, torch.Generator().manual_seed(7))
    b = new_boards(50, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert (a > 0).flatten(1).sum(1).tolist() == [2] * 50
    assert max_tile(exps([BOARD])).tolist() == [4]


def test_env_finishes_a_dead_game_reports_it_and_restarts_it() -> None:
    env = Batch2048Env(2, seed=1)
    state = env.state_dict()
    state["boards"][0] = exps([[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 4, 128]])
    state["score"][0], state["moves"][0] = 1234, 56
    env.load_state_dict(state)
    step = env.step(torch.tensor([LEFT, int(env.valid[1].long().argmax())]))
    assert step.done.tolist() == [True, False]
    assert step.reward[0].item() == 0
    assert step.episodes == [{"board": 0, "score": 1234, "max_tile": 128, "moves": 56}]
    assert (env.boards[0] > 0).sum().item() == 2
    assert env.score[0].item() == 0 and env.moves[0].item() == 0


def test_env_score_is_the_sum_of_rewards_and_play_is_reproducible() -> None:
    def play(seed: int) -> tuple[list, torch.Tensor]:
        env, g = Batch2048Env(16, seed=seed), torch.Generator().manual_seed(0)
        total, episodes = torch.zeros(16, dtype=torch.long), []
        for _ in range(400):
            actions = torch.rand(16, 4, generator=g).masked_fill(~env.valid, -1).argmax(1)
            step = env.step(actions)
            total += step.reward
            for e in step.episodes:
                assert e["score"] == total[e["board"]].item()
                total[e["board"]] = 0
            episodes += step.episodes
        assert torch.equal(total, env.score)
        return episodes, env.boards

    first, second = play(5), play(5)
    assert first[0] and first[0] == second[0] and torch.equal(first[1], second[1])


def test_env_state_dict_resumes_the_exact_same_games() -> None:
    env = Batch2048Env(8, seed=2)
    actions = [torch.tensor([i % 4] * 8) for i in range(60)]
    for a in actions[:30]:
        env.step(a)
    twin = Batch2048Env(8, seed=99)
    twin.load_state_dict(env.state_dict())
    for a in actions[30:]:
        assert torch.equal(env.step(a).boards, twin.step(a).boards)


def test_a_generator_state_from_another_device_type_falls_back_to_a_seed() -> None:
    g = torch.Generator()
    restore_generator(g, torch.zeros(16, dtype=torch.uint8), fallback_seed=5)  # a CUDA-sized state
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(5)))


rows = st.lists(st.integers(0, 15), min_size=4, max_size=4)
boards = st.lists(st.lists(st.integers(0, 11), min_size=4, max_size=4), min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=8))
def test_left_matches_the_reference(batch: list[list[int]]) -> None:
    new, gain = slide_merge_left(torch.tensor(batch))
    expected = [reference_left(r) for r in batch]
    assert new.tolist() == [e[0] for e in expected]
    assert gain.tolist() == [e[1] for e in expected]


def tile_sum(b: torch.Tensor) -> int:
    """Sum of the tile values on a board."""
    return int(torch.where(b > 0, torch.ones_like(b) << b, 0).sum())


@settings(max_examples=150, deadline=None)
@given(boards)
def test_moves_conserve_tiles_and_are_mirror_images(board: list[list[int]]) -> None:
    b = torch.tensor([board])
    options = all_moves(b)
    for a in range(4):
        after = options.after[0, a]
        assert tile_sum(after) == tile_sum(b[0])
        # Each merge removes one tile and scores at least 4.
        merges = int((b > 0).sum() - (after > 0).sum())
        assert options.reward[0, a].item() >= 4 * merges >= 0
        assert options.valid[0, a].item() == (not torch.equal(after, b[0]))
    assert torch.equal(options.after[0, RIGHT], all_moves(b.flip(-1)).after[0, LEFT].flip(-1))
    assert torch.equal(options.after[0, DOWN], all_moves(b.flip(-2)).after[0, UP].flip(-2))


@settings(max_examples=150, deadline=None)
@given(boards)
def test_a_move_merges_each_tile_at_most_once(board: list[list[int]]) -> None:
    b = torch.tensor([board])
    for a in range(4):
        after, _, _ = move(b, torch.tensor([a]))
        # A line of n tiles can lose at most n // 2 of them in one move.
        lines = b[0] if a in (LEFT, RIGHT) else b[0].T
        most = int(((lines > 0).sum(1) // 2).sum())
        assert int((b > 0).sum() - (after > 0).sum()) <= most
        # One move slides all the way: the same move again can only change the board by merging.
        _, reward, changed = move(after, torch.tensor([a]))
        assert bool(changed) == bool(reward > 0)

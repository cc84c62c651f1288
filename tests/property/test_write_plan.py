"""Reordering buffered read-model writes into executemany groups never changes the outcome."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventstore.stores.base import plan_writes

writes = st.lists(st.tuples(st.sampled_from(["INSERT", "UPDATE a", "UPDATE b", "DELETE"]),
                            st.integers(0, 9).map(lambda n: (n,)),
                            st.one_of(st.none(), st.sampled_from(["j1", "j2", "j3", "j4"]))), max_size=60)


def apply(rows: dict[str, int], sql: str, params: tuple[int], key: str | None) -> None:
    """A stand-in database where no two statements commute on the same row."""
    if key is None:  # a write with no key may touch any row
        for name in rows:
            rows[name] = rows[name] * 7 + params[-1]
        return
    rows[key] = rows.get(key, 1) * 31 + len(sql) * 3 + params[-1]


def run_in_order(items) -> dict[str, int]:
    rows: dict[str, int] = {}
    for sql, params, key in items:
        apply(rows, sql, params, key)
    return rows


@given(writes)
def test_the_plan_ends_in_the_same_rows_as_the_original_order(items) -> None:
    numbered = [(sql, (index, *params), key) for index, (sql, params, key) in enumerate(items)]
    plan = plan_writes(numbered)
    by_index = {params[0]: (sql, params, key) for sql, params, key in numbered}
    replay = [by_index[params[0]] for sql, batch in plan for params in batch]
    assert sorted(w[1][0] for w in replay) == list(range(len(items)))  # every write once
    assert all(by_index[params[0]][0] == sql for sql, batch in plan for params in batch)
    assert run_in_order(replay) == run_in_order(numbered)


def test_same_key_keeps_its_order_and_layers_group_statements() -> None:
    items = [("INSERT", (1,), "a"), ("UPDATE", (2,), "a"), ("INSERT", (3,), "b"), ("UPDATE", (4,), "b")]
    assert plan_writes(items) == [("INSERT", [(1,), (3,)]), ("UPDATE", [(2,), (4,)])]


def test_a_write_without_key_is_a_barrier() -> None:
    items = [("INSERT", (1,), "a"), ("VACUUM", (), None), ("INSERT", (2,), "b")]
    assert plan_writes(items) == [("INSERT", [(1,)]), ("VACUUM", [()]), ("INSERT", [(2,)])]

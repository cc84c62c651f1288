"""The backup archive's manifest checks and the restore's decisions."""

from __future__ import annotations

import pytest

from ops import backup_domain as bd


def manifest(**members: bd.Member) -> bd.Manifest:
    return bd.Manifest(created_at="2026-01-01T00:00:00+00:00", stoker_version="0.1.0", prefix="stoker",
                       source="nats://127.0.0.1:4222", events=bd.Part(count=2, first_seq=1, last_seq=2),
                       buckets={"checkpoints": bd.Part(count=1)}, snapshots=bd.Part(count=0), settings=False,
                       secrets=True, members=members)


def test_the_manifest_round_trips_and_refuses_what_is_not_one() -> None:
    made = manifest(**{bd.EVENTS: bd.Member(10, "ab" * 32)})
    assert bd.decode_manifest(bd.encode_manifest(made)) == made
    with pytest.raises(bd.BadArchive, match="not a stoker backup"):
        bd.decode_manifest(b'{"format": "zip"}')
    with pytest.raises(bd.BadArchive, match="version 9"):
        bd.decode_manifest(b'{"format": "stoker-backup", "version": 9}')


def test_member_problems_name_each_difference() -> None:
    made = manifest(**{bd.EVENTS: bd.Member(10, "a" * 64), "kv/snapshots.jsonl": bd.Member(0, "b" * 64)})
    found = {bd.EVENTS: bd.Member(11, "c" * 64), "extra.bin": bd.Member(1, "d" * 64)}
    problems = bd.member_problems(made, found)
    assert problems == ["kv/snapshots.jsonl is missing", "extra.bin is not in the manifest",
                        f"{bd.EVENTS} differs (SHA-256 cccccccccccc…, 11 bytes; "
                        "the manifest says aaaaaaaaaaaa…, 10 bytes)"]
    assert bd.member_problems(made, dict(made.members)) == []


def test_counts_against_the_manifest() -> None:
    assert bd.count_problems(manifest(), 2, {"checkpoints": 1}, 0) == []
    assert len(bd.count_problems(manifest(), 3, {}, 1)) == 3


def test_only_identity_files_travel_and_come_back_inside_the_data_dir() -> None:
    assert bd.identity_member("credentials/admin.nk") == "files/credentials/admin.nk"
    assert bd.identity_member("readmodels.sqlite3") is None
    assert bd.restored_path("files/tls/ca.pem") == "tls/ca.pem"
    for bad in ("files/../etc/passwd", "files/logs/x.log", "files//root"):
        with pytest.raises(bd.BadArchive):
            bd.restored_path(bad)


def test_a_data_dir_is_empty_enough_with_only_logs_and_a_lock() -> None:
    assert bd.in_the_way(["logs", "stoker.lock"]) == []
    assert bd.in_the_way(["nats", "logs", "credentials"]) == ["credentials", "nats"]


def test_the_restored_local_worker_is_new_when_the_backup_had_its_id() -> None:
    assert bd.fresh_worker_id("host-1", {"host-2"}, "abc") == "host-1"
    assert bd.fresh_worker_id("host-1", {"host-1"}, "abc") == "host-1-abc"

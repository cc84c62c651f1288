"""Checkpoint names, formats, digests, and choosing the newest good checkpoint (pure, no NATS)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from contracts.dispatch import CheckpointRef
from services.trainer.checkpoint_format import choose_format, file_sha256, read_checkpoint, write_checkpoint
from services.trainer.checkpoints import Fetched, checkpoint_name, choose, digest_ok, nats_digest_hex, newest_first


def ref(iteration: int, data: bytes) -> CheckpointRef:
    return CheckpointRef(name=f"job/1-{iteration}", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                         iteration=iteration)


def fetcher(tmp_path: Path, blobs: dict[str, bytes | None]):
    """A fetch over a dict: name → bytes (None: missing)."""
    async def fetch(r: CheckpointRef) -> Fetched | None:
        data = blobs.get(r.name)
        if data is None:
            return None
        path = tmp_path / r.name.replace("/", "_")
        path.write_bytes(data)
        return Fetched(path, hashlib.sha256(data).hexdigest(), "bytes")

    return fetch


def test_checkpoint_names_follow_the_protocol():
    assert checkpoint_name("01JOB", 3, 1200) == "01JOB/3-1200"


@pytest.mark.parametrize(("stored", "expected", "ok"), [
    ("ab" * 32, "ab" * 32, True),
    ("AB" * 32, "ab" * 32, True),
    ("ab" * 32, "cd" * 32, False),
    (None, "ab" * 32, False),
])
def test_digest_ok(stored, expected, ok):
    r = CheckpointRef(name="x", sha256=expected, size=1, iteration=1)
    assert digest_ok(r, stored) is ok


def test_nats_digest_is_read_as_hex():
    import base64

    raw = hashlib.sha256(b"hello").digest()
    assert nats_digest_hex("SHA-256=" + base64.urlsafe_b64encode(raw).decode()) == raw.hex()
    assert nats_digest_hex(None) is None and nats_digest_hex("MD5=abc") is None


async def test_choose_takes_the_newest_good_checkpoint(tmp_path):
    good5, good10 = b"five", b"ten"
    refs = (ref(5, good5), ref(10, good10))
    choice = await choose(refs, fetcher(tmp_path, {"job/1-5": good5, "job/1-10": good10}))
    assert choice.ref == refs[1] and choice.corrupt == []


async def test_choose_skips_corrupt_and_missing_ones_and_names_them(tmp_path):
    refs = (ref(15, b"fifteen"), ref(10, b"ten"), ref(5, b"five"))
    blobs = {"job/1-15": None, "job/1-10": b"garbage", "job/1-5": b"five"}
    choice = await choose(refs, fetcher(tmp_path, blobs))
    assert choice.ref == refs[2]
    assert choice.corrupt == ["job/1-15", "job/1-10"]
    assert not (tmp_path / "job_1-10").exists()  # the corrupt download is not left lying around


async def test_choose_gives_none_when_nothing_is_good(tmp_path):
    choice = await choose((ref(5, b"five"),), fetcher(tmp_path, {"job/1-5": b"truncat"}))
    assert choice.ref is None and choice.fetched is None and choice.corrupt == ["job/1-5"]
    assert (await choose((), fetcher(tmp_path, {}))).ref is None


def test_newest_first_orders_by_iteration():
    refs = [ref(5, b"a"), ref(20, b"b"), ref(10, b"c")]
    assert [r.iteration for r in newest_first(refs)] == [20, 10, 5]


@pytest.mark.parametrize(("obj", "fmt", "back"), [
    (b"raw", "bytes", b"raw"), (bytearray(b"raw"), "bytes", b"raw"),
    ({"iteration": 3, "values": [1.5], "pair": (1, 2), 7: None, "blob": b"x"}, "msgpack",
     {"iteration": 3, "values": [1.5], "pair": [1, 2], 7: None, "blob": b"x"}),  # tuples come back as lists
])
def test_formats_round_trip(tmp_path, obj, fmt, back):
    path = tmp_path / "ckpt"
    written_fmt, digest, size = write_checkpoint(obj, path)
    assert written_fmt == fmt and (digest, size) == file_sha256(path)
    assert read_checkpoint(path, written_fmt) == back


def test_torch_is_used_when_the_checkpoint_holds_a_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    assert choose_format({"w": torch.ones(2)}) == "torch"
    assert choose_format({"step": 4}) == "msgpack"  # torch imported, but nothing of it in the checkpoint
    path = tmp_path / "ckpt"
    fmt, _digest, _size = write_checkpoint({"w": torch.ones(2), "step": 4}, path)
    assert fmt == "torch"
    loaded = read_checkpoint(path, fmt)
    assert loaded["step"] == 4 and torch.equal(loaded["w"], torch.ones(2))

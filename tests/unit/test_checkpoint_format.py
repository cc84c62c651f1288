"""Checkpoints are never pickles: what one may hold, and that a malicious pickle is refused, never executed."""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import msgspec
import pytest

from contracts.dispatch import CheckpointRef
from services.trainer.checkpoint_format import (
    check_torch_pickle,
    read_checkpoint,
    verify,
    write_checkpoint,
)
from services.trainer.checkpoints import Fetched, choose
from services.trainer.sdk import CheckpointCorrupt, UnsupportedCheckpoint


class Boom:
    """Unpickling this creates `marker`: what an attacker would put in the checkpoint bucket."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def payloads(marker: Path) -> dict[str, bytes]:
    """Pickle-bearing files: a bare pickle (old and new protocols), and one inside a torch.save archive."""
    bare2, bare5 = pickle.dumps(Boom(marker), protocol=2), pickle.dumps(Boom(marker), protocol=5)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", bare2)
        z.writestr("archive/version", "3\n")
    return {"bare2": bare2, "bare5": bare5, "archive": archive.getvalue()}


def test_the_payloads_are_live(tmp_path):
    live = tmp_path / "live"
    pickle.loads(payloads(live)["bare2"])  # the test's own bytes: shows the attack would work if unpickled
    assert live.exists()


@pytest.mark.parametrize("payload", ["bare2", "bare5", "archive"])
@pytest.mark.parametrize("fmt", ["pickle", "torch", "msgpack", ""])
def test_a_pickle_bearing_checkpoint_is_refused_and_never_executed(tmp_path, payload, fmt):
    marker = tmp_path / "executed"
    path = tmp_path / "ckpt"
    path.write_bytes(payloads(marker)[payload])
    with pytest.raises(CheckpointCorrupt):
        verify(path, fmt)  # the agent's check before the job starts
    if fmt == "torch":
        pytest.importorskip("torch")
    with pytest.raises(CheckpointCorrupt):
        read_checkpoint(path, fmt)  # the job's own load_checkpoint, should anything get that far
    assert not marker.exists()


def test_an_old_pickle_checkpoint_says_why_it_cannot_be_read(tmp_path):
    path = tmp_path / "ckpt"
    path.write_bytes(pickle.dumps({"iteration": 3}))
    with pytest.raises(CheckpointCorrupt, match=r"format 'pickle' is not one stoker reads \(msgpack, torch, bytes\); "
                                                r"checkpoints that earlier versions wrote as pickles cannot be loaded"):
        verify(path, "pickle")


@pytest.mark.parametrize(("structure", "named"), [
    (pickle.dumps(print, protocol=2), "__builtin__.print"),
    (pickle.dumps(collections.Counter(), protocol=2), "collections.Counter"),
    (pickle.dumps(Path("x"), protocol=2), "pathlib.PosixPath"),
])
def test_a_torch_archive_naming_any_other_object_is_refused(structure, named):
    with pytest.raises(CheckpointCorrupt, match=f"it names {named}"):
        check_torch_pickle(structure)


async def test_a_resume_skips_a_pickle_with_a_recorded_digest_for_the_next_older_checkpoint(tmp_path):
    marker = tmp_path / "executed"
    good = tmp_path / "good"
    fmt, _digest, _size = write_checkpoint({"iteration": 5}, good)
    files = {"job/1-9": (payloads(marker)["bare2"], "pickle"), "job/1-8": (payloads(marker)["archive"], "torch"),
             "job/1-5": (good.read_bytes(), fmt)}
    refs = [CheckpointRef(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                          iteration=int(name.rsplit("-", 1)[1])) for name, (data, _fmt) in files.items()]

    async def fetch(ref: CheckpointRef) -> Fetched:
        data, stored_fmt = files[ref.name]
        path = tmp_path / ref.name.replace("/", "_")
        path.write_bytes(data)
        return Fetched(path, hashlib.sha256(data).hexdigest(), stored_fmt)  # the digests all match

    choice = await choose(refs, fetch)
    assert choice.ref.name == "job/1-5" and choice.corrupt == ["job/1-9", "job/1-8"]
    assert "format 'pickle'" in choice.reasons["job/1-9"] and "it names io.open" in choice.reasons["job/1-8"]
    assert read_checkpoint(choice.fetched.path, choice.fetched.format) == {"iteration": 5}
    assert not marker.exists()


class Opaque:
    pass


@pytest.mark.parametrize(("obj", "message"), [
    ({"a": {1, 2}}, r"checkpoint\['a'\]: a builtins.set is not allowed"),
    ({"model": [1, Opaque()]}, r"checkpoint\['model'\]\[1\]: a tests.unit.test_checkpoint_format.Opaque is not"),
    ({(1, 2): "x"}, r"checkpoint: key \(1, 2\) is a tuple"),
    ({"n": 2**70}, "cannot be stored as msgpack"),
    ({"when": collections.namedtuple("P", "x")(1)}, r"checkpoint\['when'\]: a .*P is not allowed"),
    ({"f": msgspec.Raw(b"1")}, "msgspec.Raw is not allowed"),
])
def test_what_a_checkpoint_may_not_hold_is_refused_when_saved(tmp_path, obj, message):
    with pytest.raises(UnsupportedCheckpoint, match=message):
        write_checkpoint(obj, tmp_path / "ckpt")


def test_a_cycle_is_refused_when_saved(tmp_path):
    loop: list = []
    loop.append(loop)
    with pytest.raises(UnsupportedCheckpoint, match="nested more than 100 deep"):
        write_checkpoint({"loop": loop}, tmp_path / "ckpt")


def test_tensors_and_their_companions_round_trip_through_the_weights_only_loader(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"w": torch.nn.Parameter(torch.ones(2)), "layer": torch.nn.Linear(2, 2).state_dict(),
             "rng": torch.Generator().get_state(), "shape": torch.Size([2, 3]), "dtype": torch.bfloat16,
             "device": torch.device("cpu"), "half": torch.zeros(2, dtype=torch.float8_e4m3fn), "raw": b"\x00",
             "order": collections.OrderedDict(a=1), "pair": (1, 2.5), "none": None}
    path = tmp_path / "ckpt"
    fmt, _digest, _size = write_checkpoint(state, path)
    assert fmt == "torch"
    verify(path, fmt)
    loaded = read_checkpoint(path, fmt)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["rng"], state["rng"])
    assert (loaded["shape"], loaded["dtype"], loaded["device"], loaded["pair"]) == (
        torch.Size([2, 3]), torch.bfloat16, torch.device("cpu"), (1, 2.5))
    assert loaded["layer"].keys() == state["layer"].keys() and loaded["raw"] == b"\x00"


def test_a_tensor_torch_cannot_load_back_safely_is_refused_when_saved(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(UnsupportedCheckpoint, match=r"would not load back: it names torch\._utils\._rebuild_sparse"):
        write_checkpoint({"sparse": torch.zeros(3).to_sparse()}, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(("data", "fmt"), [(b"", "msgpack"), (msgspec.msgpack.encode({"a": [1, 2]})[:-1], "msgpack"),
                                           (b"PK\x03\x04 not really a zip", "torch")])
def test_damaged_files_are_corrupt(tmp_path, data, fmt):
    path = tmp_path / "ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointCorrupt):
        verify(path, fmt)

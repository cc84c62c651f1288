"""What a checkpoint file may hold, how it is written and read, and how a stored one is checked unread.

A checkpoint is never a Python pickle. Its format travels in the object's `Stoker-Format` header:

- `msgpack`: plain data through msgspec: None, bool, int (64-bit), float, str, bytes, lists and
  tuples (read back as lists), dicts with str or int keys.
- `torch`: the same plain data with tensors in it (and torch.Size, torch.dtype, torch.device), through
  `torch.save`; read back only with `torch.load(weights_only=True)`.
- `bytes`: raw bytes, handed back as they are.

A checkpoint holding a tensor is written as `torch`, bytes as `bytes`, anything else as `msgpack`;
what may not be in one is refused when it is saved (UnsupportedCheckpoint). A stored file that is not
one of these (another format, such as the `pickle` of earlier versions; a file that does not match
its format; a torch archive whose pickle names anything but tensors and plain data) is
CheckpointCorrupt: a resuming worker checks that before the job starts (`verify`, which needs no
torch and loads nothing) and falls back to the next older checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from services.trainer.sdk import CheckpointCorrupt, UnsupportedCheckpoint

FORMATS = ("msgpack", "torch", "bytes")
MAX_DEPTH = 100
MAX_PICKLE_BYTES = 256 * 1024 * 1024  # the structure of a torch archive; the tensor data lies beside it
PLAIN = (type(None), bool, int, float, str, bytes)
ALLOWED = "None, bool, int, float, str, bytes, lists, tuples, dicts with str or int keys, and torch tensors"
_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode"), ("torch", "Size"), ("torch", "device"),
            ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
            ("torch._utils", "_rebuild_parameter"), ("torch.storage", "UntypedStorage")}
_TORCH_NAME = re.compile(r"^(?:[A-Za-z0-9]+Storage|u?int(?:8|16|32|64)|float(?:16|32|64)|bfloat16|"
                         r"complex(?:32|64|128)|bool|float8_[a-z0-9]+)$")  # storage classes and dtypes
_OPENS_ANY_OBJECT = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"}
_CHUNK = 1 << 20
_encoder = msgspec.msgpack.Encoder()


def choose_format(obj: Any) -> str:
    """`bytes` for bytes, `torch` when `obj` holds a tensor, else `msgpack`; UnsupportedCheckpoint for the rest."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return "bytes"
    return "torch" if check_content(obj) else "msgpack"


def check_content(obj: Any) -> bool:
    """Whether `obj` holds torch values; raises UnsupportedCheckpoint naming what a checkpoint may not hold."""
    torch = sys.modules.get("torch")  # a job that never imported torch holds no tensors
    torch_types = (torch.Tensor, torch.Size, torch.dtype, torch.device) if torch is not None else ()
    try:
        return _walk(obj, torch_types, 0)
    except _Unsupported as exc:
        where = "".join(f"[{key!r}]" for key in reversed(exc.path))
        raise UnsupportedCheckpoint(f"checkpoint{where}: {exc.problem}; a checkpoint may hold only {ALLOWED}") \
            from None


class _Unsupported(Exception):
    def __init__(self, problem: str) -> None:
        self.problem, self.path = problem, []


def _walk(obj: Any, torch_types: tuple[type, ...], depth: int) -> bool:
    kind = type(obj)
    if kind in PLAIN:
        return False
    if torch_types and isinstance(obj, torch_types):
        return True
    if depth >= MAX_DEPTH:
        raise _Unsupported(f"nested more than {MAX_DEPTH} deep (a cycle?)")
    if kind is list or kind is tuple:
        items = enumerate(obj)
    elif kind is dict or kind is OrderedDict:
        items = obj.items()
    else:
        raise _Unsupported(f"a {kind.__module__}.{kind.__qualname__} is not allowed")
    found = False
    for key, value in items:
        if kind is not list and kind is not tuple and type(key) not in (str, int):
            raise _Unsupported(f"key {key!r} is a {type(key).__name__}")
        try:
            found = _walk(value, torch_types, depth + 1) or found
        except _Unsupported as exc:
            exc.path.append(key)
            raise
    return found


def write_checkpoint_file(obj: Any, out: io.BufferedIOBase, fmt: str) -> None:
    """Write `obj` in format `fmt` (as `choose_format` chose it)."""
    if fmt == "bytes":
        out.write(bytes(obj))
    elif fmt == "msgpack":
        try:
            out.write(_encoder.encode(obj))
        except (OverflowError, TypeError, msgspec.EncodeError) as exc:
            raise UnsupportedCheckpoint(f"checkpoint cannot be stored as msgpack: {exc}") from None
    else:
        import torch

        torch.save(obj, out)


def write_checkpoint(obj: Any, path: Path) -> tuple[str, str, int]:
    """Serialise `obj` into `path`; returns (format, sha256 hex, size)."""
    fmt = choose_format(obj)
    with path.open("wb") as out:
        write_checkpoint_file(obj, out, fmt)
    if fmt == "torch":
        try:
            verify(path, fmt)  # what a resuming worker would refuse is refused now, where the job can see why
        except CheckpointCorrupt as exc:
            path.unlink(missing_ok=True)
            raise UnsupportedCheckpoint(f"checkpoint would not load back: {exc}") from None
    digest, size = file_sha256(path)
    return fmt, digest, size


def read_checkpoint(path: Path, fmt: str, device: str = "cpu") -> Any:
    """Load a checkpoint file written by `write_checkpoint`; CheckpointCorrupt for anything else."""
    if fmt == "torch":
        verify(path, fmt)  # checked by the agent already; cheap, and torch.load would try a bare pickle
    with path.open("rb") as data:
        return read_checkpoint_file(data, fmt, device)


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify(path: Path, fmt: str) -> None:
    """Check a stored checkpoint without loading it (and without torch); raises CheckpointCorrupt."""
    if fmt == "bytes":
        return
    if fmt == "msgpack":
        _verify_msgpack(path)
    elif fmt == "torch":
        _verify_torch(path)
    else:
        raise unknown_format(fmt)


def unknown_format(fmt: str) -> CheckpointCorrupt:
    """The error for a format stoker does not read, such as the `pickle` earlier versions wrote."""
    return CheckpointCorrupt(f"format {fmt or 'none'!r} is not one stoker reads ({', '.join(FORMATS)}); "
                             "checkpoints that earlier versions wrote as pickles cannot be loaded")


def _verify_msgpack(path: Path) -> None:
    import mmap  # the agent checks; job processes import this module too, so keep its start light

    with path.open("rb") as data:
        try:
            view = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise CheckpointCorrupt("empty msgpack checkpoint") from None
        try:
            msgspec.msgpack.decode(view, type=msgspec.Raw)  # walks the whole structure, builds nothing
        except msgspec.DecodeError as exc:
            raise CheckpointCorrupt(f"not msgpack: {exc}") from None
        finally:
            view.close()


def _verify_torch(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [info for info in archive.infolist() if info.filename.rsplit("/", 1)[-1] == "data.pkl"]
            if len(pickles) != 1:
                raise CheckpointCorrupt("not a torch.save archive (it must hold one data.pkl)")
            if pickles[0].file_size > MAX_PICKLE_BYTES:
                raise CheckpointCorrupt(f"its data.pkl is over {MAX_PICKLE_BYTES} bytes")
            structure = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointCorrupt(f"not a torch.save archive: {exc}") from None
    check_torch_pickle(structure)


def check_torch_pickle(structure: bytes) -> None:
    """Refuse a torch archive's pickle unless every object it names is a tensor-rebuilding or plain one.

    It reads the opcodes (pickletools, which executes nothing); the loader is torch's weights-only
    unpickler anyway, and this lets a worker skip such a file before its job starts.
    """
    import pickletools

    try:
        opcodes = [(opcode.name, arg) for opcode, arg, _pos in pickletools.genops(structure)]
    except (ValueError, EOFError) as exc:
        raise CheckpointCorrupt(f"its pickle is malformed: {exc}") from None
    for name, arg in opcodes:
        if name in _OPENS_ANY_OBJECT:
            raise CheckpointCorrupt(f"its pickle uses {name}, which torch.save never writes")
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            if (module, attr) not in _GLOBALS and not (module == "torch" and _TORCH_NAME.match(attr)):
                raise CheckpointCorrupt(f"it names {module}.{attr}: a checkpoint may hold only {ALLOWED}")


def read_checkpoint_file(data: io.BufferedIOBase, fmt: str, device: str = "cpu") -> Any:
    """Read back what `write_checkpoint_file` wrote; CheckpointCorrupt for anything else. Never unpickles."""
    if fmt == "bytes":
        return data.read()
    if fmt == "msgpack":
        try:
            return msgspec.msgpack.decode(data.read())
        except msgspec.DecodeError as exc:
            raise CheckpointCorrupt(f"not msgpack: {exc}") from None
    if fmt == "torch":
        import torch

        try:
            return torch.load(data, map_location=device, weights_only=True)
        except Exception as exc:  # the weights-only unpickler refused it, or it is no torch archive
            raise CheckpointCorrupt(f"torch.load(weights_only=True) refused it: {exc}") from None
    raise unknown_format(fmt)

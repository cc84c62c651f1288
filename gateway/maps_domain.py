"""Maps' decider and their input rules: pure, no I/O, no clock.

A map is a file runs use, uploaded once and referenced by its number (`map_id`). Its number is its
aggregate (`map.<n>`): an upload claims a number nobody has used (the append expects version 0), a
delete ends it, and a number is never given again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath

from contracts import events as ev
from contracts.errors import Conflict, InvalidCommand, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.()+-]*$")
FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
MAX_NAME, MAX_FILENAME = 100, 200


def check_filename(raw: str | None) -> str:
    """The uploaded file's name as given, when it is a plain file name; InvalidCommand otherwise."""
    if not raw:
        raise InvalidCommand("the upload has no file name")
    if PurePosixPath(raw).name != raw or PureWindowsPath(raw).name != raw or ".." in raw:
        raise InvalidCommand(f"file name {raw[:80]!r} is a path: give a plain file name")
    if len(raw) > MAX_FILENAME or not FILENAME.match(raw):
        raise InvalidCommand(f"file name {raw[:80]!r} must be 1-{MAX_FILENAME} letters, digits, '_', '.', '+', '-' "
                             "and start with a letter or digit")
    return raw


def check_name(raw: str | None, filename: str) -> str:
    """The map's display name (the file name without its suffix when none or an empty one is given, as a
    form's empty field sends); InvalidCommand if bad."""
    name = (raw.strip() if raw and raw.strip() else filename.rsplit(".", 1)[0] or filename).strip()
    if ".." in name or "/" in name or "\\" in name:
        raise InvalidCommand(f"map name {name[:80]!r} may not contain '/', '\\' or '..'")
    if not name or len(name) > MAX_NAME or not NAME.match(name):
        raise InvalidCommand(f"map name {name[:80]!r} must be 1-{MAX_NAME} letters, digits, spaces, '_', '.', "
                             "'(', ')', '+', '-' and start with a letter or digit")
    return name


def check_size(size: int, limit: int) -> None:
    """An empty file or one over the limit is refused."""
    if size <= 0:
        raise InvalidCommand("the file is empty")
    if size > limit:
        raise InvalidCommand(f"the file is {size} bytes, over the limit of {limit} bytes (maps_max_bytes)")


MapState = ev.MapUploaded | ev.MapDeleted | None  # a number's newest event (None: never used)


def evolve(state: MapState, event: ev.Event) -> MapState:
    """A map number after one of its events."""
    return event if isinstance(event, ev.MapUploaded | ev.MapDeleted) else state


def decide_upload(state: MapState, upload: ev.MapUploaded) -> list[ev.Event]:
    """Claim the number: only one nobody has used."""
    if state is not None:
        raise Conflict(f"map number {upload.map_id} is taken")
    return [upload]


def decide_delete(state: MapState, deletion: ev.MapDeleted, users: Sequence[str]) -> list[ev.Event]:
    """Delete a map no queued or running job uses."""
    if not isinstance(state, ev.MapUploaded):
        raise NotFound(f"no map {deletion.map_id}")
    if users:
        raise Conflict(f"map {deletion.map_id} is used by unfinished jobs: {', '.join(users[:20])}; "
                       "stop them or wait for them to finish")
    return [deletion]

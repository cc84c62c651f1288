"""Bodies of /api/v1/maps: field-compatible with the earlier API's maps."""

from __future__ import annotations

from datetime import datetime

from gateway.schemas.common import Reply


class MapUploadedReply(Reply, kw_only=True):
    """A stored map; `file_url` downloads it (with a viewer's token)."""

    id: int
    name: str
    filename: str
    file_url: str
    uploaded_at: datetime
    size_bytes: int
    sha256: str


class MapView(Reply, kw_only=True):
    """One map and how many training and evaluation runs used it."""

    id: int
    name: str
    filename: str
    uploaded_at: datetime
    size_bytes: int
    train_count: int
    test_count: int
    sha256: str
    file_url: str


class MapList(Reply, kw_only=True):
    """Every map, oldest first."""

    maps: list[MapView]
    total: int


class MapDeletedReply(Reply, kw_only=True):
    """A deleted map."""

    id: int
    deleted: bool
    message: str

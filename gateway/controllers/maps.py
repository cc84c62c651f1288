"""/api/v1/maps: upload, list, download and delete maps (files runs use, referenced by `map_id`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, FromPath, Parameter

from contracts.base import MAX_SAFE_INT
from contracts.errors import DomainError, NotFound
from eventstore.readmodels.maps import get_map, list_maps
from gateway.auth import OPERATOR, VIEWER
from gateway.controllers.common import GW, errors
from gateway.maps import delete_map, upload_map
from gateway.schemas.common import ErrorBody
from gateway.schemas.maps import MapDeletedReply, MapList, MapUploadedReply, MapView

MapNumber = Annotated[int, Parameter(ge=1, le=MAX_SAFE_INT)]


@dataclass
class MapUpload:
    """The multipart form: the file, and optionally a display name (default: the file name without suffix)."""

    file: UploadFile
    name: str | None = None


def json_error(_request: Request, exc: Exception) -> Response[ErrorBody]:
    """An error of the file route as JSON, like every other error (the route itself answers bytes)."""
    if isinstance(exc, DomainError):
        code, detail, headers = exc.code, exc.message, None
    else:
        code, detail = getattr(exc, "status_code", 500), getattr(exc, "detail", "internal error")
        headers = getattr(exc, "headers", None)
    return Response(ErrorBody(status_code=code, detail=detail), status_code=code, media_type=MediaType.JSON,
                    headers=headers)


def file_url(map_id: int) -> str:
    """Where a map's bytes are downloaded."""
    return f"/api/v1/maps/{map_id}/file"


def map_view(row: dict[str, Any]) -> MapView:
    """A maps row as the API shows it."""
    return MapView(id=row["id"], name=row["name"], filename=row["filename"],
                   uploaded_at=datetime.fromisoformat(row["uploaded_at"]), size_bytes=row["size_bytes"],
                   train_count=row["train_count"], test_count=row["test_count"], sha256=row["sha256"],
                   file_url=file_url(row["id"]))


async def live_map(gw: GW, map_id: int) -> dict[str, Any]:
    """A map that exists and is not deleted; NotFound otherwise."""
    row = await get_map(gw.store, map_id)
    if row is None or row["deleted_at"] is not None:
        raise NotFound(f"no map {map_id}")
    return row


class MapsController(Controller):
    """Maps: uploaded once, referenced by runs through `map_id`."""

    path = "/maps"
    tags = ["maps"]

    @post("/upload", opt=OPERATOR, status_code=201, responses=errors(400, 413, 503))
    async def upload(self, gw: GW,
                     data: Annotated[MapUpload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> MapUploadedReply:
        """Store a map (multipart `file`, optional `name`); its bytes are kept under their SHA-256."""
        content = await data.file.read()
        event, seq = await upload_map(gw.log, gw.store, gw.map_files, content, data.file.filename, data.name,
                                      gw.settings.gateway.maps_max_bytes)
        await gw.wait_projected(seq, "maps")
        return MapUploadedReply(id=event.map_id, name=event.name, filename=event.filename,
                                file_url=file_url(event.map_id), uploaded_at=event.uploaded_at,
                                size_bytes=event.size, sha256=event.sha256)

    @get("/", opt=VIEWER, responses=errors())
    async def list(self, gw: GW) -> MapList:
        """Every map, with how many training and evaluation runs used each."""
        maps = [map_view(row) for row in await list_maps(gw.store)]
        return MapList(maps=maps, total=len(maps))

    @get("/{map_id:int}", opt=VIEWER, responses=errors(400, 404))
    async def one(self, gw: GW, map_id: FromPath[MapNumber]) -> MapView:
        """One map."""
        return map_view(await live_map(gw, map_id))

    @get("/{map_id:int}/file", opt=VIEWER, responses=errors(400, 404), media_type="application/octet-stream",
         exception_handlers={HTTPException: json_error, DomainError: json_error})
    async def file(self, gw: GW, map_id: FromPath[MapNumber]) -> Response[bytes]:
        """The map's bytes, checked against its SHA-256."""
        row = await live_map(gw, map_id)
        content = await gw.map_files.get(row["sha256"])
        return Response(content, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{row["filename"]}"',
                                 "X-Content-SHA256": row["sha256"]})

    @delete("/{map_id:int}", opt=OPERATOR, status_code=200, responses=errors(400, 404, 409, 503))
    async def remove(self, gw: GW, map_id: FromPath[MapNumber]) -> MapDeletedReply:
        """Delete a map (409 naming the queued or running jobs that use it)."""
        await live_map(gw, map_id)
        seq = await delete_map(gw.log, gw.store, map_id)
        await gw.wait_projected(seq, "maps")
        return MapDeletedReply(id=map_id, deleted=True, message=f"map {map_id} deleted")

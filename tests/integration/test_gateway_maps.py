"""/api/v1/maps on a real gateway: upload (multipart, as a browser form), list with run counts, download, delete."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
import pytest_asyncio
from click.testing import CliRunner

from contracts import events as ev
from ops.cli import main
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import assert_error, gateway_stack
from tests.integration.test_gateway_runs import assert_shape, upload_map

LIMIT = 4096


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, maps_max_bytes=LIMIT) as running:
        yield running


async def test_upload_list_train_delete_round_trip(stack) -> None:
    content = b"\x00level bytes\xff" * 10
    async with stack.client("operator") as client:
        uploaded = await upload_map(client, content, "e1m1.wad", name="E1M1 (easy)")
        assert_shape(uploaded, {"id": int, "name": str, "filename": str, "file_url": str, "uploaded_at": str,
                                "size_bytes": int})
        assert (uploaded["name"], uploaded["filename"]) == ("E1M1 (easy)", "e1m1.wad")
        assert uploaded["size_bytes"] == len(content)
        assert uploaded["sha256"] == hashlib.sha256(content).hexdigest()
        download = await client.get(uploaded["file_url"])
        assert download.status_code == 200 and download.content == content
        assert download.headers["x-content-sha256"] == uploaded["sha256"]
        second = await upload_map(client, b"other", "e1m2.wad")
        assert second["id"] == 2
        train = (await client.post("/api/v1/training/start", json={"map_id": 1, "max_iterations": 5})).json()
        listed = (await client.get("/api/v1/maps")).json()
        assert listed["total"] == 2 and [m["id"] for m in listed["maps"]] == [1, 2]
        for row in listed["maps"]:
            assert_shape(row, {"id": int, "name": str, "filename": str, "uploaded_at": str, "size_bytes": int,
                               "train_count": int, "test_count": int})
        assert (listed["maps"][0]["train_count"], listed["maps"][0]["test_count"]) == (1, 0)
        assert listed["maps"][1]["train_count"] == 0
        # Used by a queued run: refused, naming it.
        assert_error(await client.delete("/api/v1/maps/1"), 409, train["training_id"])
        await client.post("/api/v1/training/stop", json={"training_id": train["training_id"]})
        async def stopped() -> bool:  # the delete check reads the jobs read model
            status = await client.get(f"/api/v1/training/{train['training_id']}/status")
            return status.json()["status"] == "stopped"  # queued, on no worker: stopped at once
        await eventually(stopped, what="the stopped run in the read model")
        gone = await client.delete("/api/v1/maps/1")
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert [m["id"] for m in (await client.get("/api/v1/maps")).json()["maps"]] == [2]
        assert_error(await client.delete("/api/v1/maps/1"), 404, "no map 1")
        assert_error(await client.get("/api/v1/maps/1/file"), 404)
        assert_error(await client.post("/api/v1/training/start", json={"map_id": 1, "max_iterations": 5}),
                     404, "no map 1")
        third = await upload_map(client, content, "e1m1.wad")
        assert third["id"] == 3  # a number is never given again
    events, _ = await stack.log.load("map", "1")
    assert [type(s.event) for s in events] == [ev.MapUploaded, ev.MapDeleted]


@pytest.mark.parametrize(("filename", "content", "form", "words"), [
    ("empty.wad", b"", {}, ("empty",)),
    ("big.wad", b"x" * (LIMIT + 1), {}, ("over the limit",)),
    ("../etc.wad", b"x", {}, ("path",)),
    ("a/b.wad", b"x", {}, ("path",)),
    (".hidden", b"x", {}, ("file name",)),
    ("ok.wad", b"x", {"name": "../up"}, ("name", "..")),
    ("ok.wad", b"x", {"name": "x" * 101}, ("name",)),
])
async def test_bad_uploads_are_400_and_store_nothing(stack, filename, content, form, words) -> None:
    async with stack.client("operator") as client:
        reply = await client.post("/api/v1/maps/upload", files={"file": (filename, content)}, data=form)
        assert_error(reply, 400, *words)
        assert (await client.get("/api/v1/maps")).json() == {"maps": [], "total": 0}


async def test_a_body_far_over_the_limit_is_refused_before_it_is_read(stack) -> None:
    async with stack.client("operator") as client:
        reply = await client.post("/api/v1/maps/upload", files={"file": ("huge.wad", b"x" * (LIMIT + 100_000))})
    assert reply.status_code == 413, reply.text


async def test_roles_and_unknown_maps(stack) -> None:
    async with stack.client("viewer") as client:
        assert_error(await client.post("/api/v1/maps/upload", files={"file": ("a.wad", b"x")}), 403)
        assert (await client.get("/api/v1/maps")).status_code == 200
        assert_error(await client.get("/api/v1/maps/99"), 404, "no map 99")
        assert_error(await client.get("/api/v1/maps/0"), 400)
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/maps/upload", data={"name": "no file"}), 400)
        assert_error(await client.post("/api/v1/testing/start", json={"map_id": 7, "checkpoint": "x", "episodes": 1}),
                     404)


async def cli(stack, url: str, tmp_path, *args: str):
    """`stoker …` against the stack's NATS and read models (the CLI runs its own event loop: in a thread)."""
    base = ["--data-dir", str(tmp_path), "--nats", url]
    env = {"STOKER_PREFIX": stack.topology.prefix, "STOKER_GATEWAY_MAPS_MAX_BYTES": str(LIMIT)}
    return await asyncio.to_thread(CliRunner().invoke, main, [*base, *args], env=env)


async def test_the_cli_uploads_lists_and_removes_maps_like_the_api(stack, nats_server, tmp_path) -> None:
    level = tmp_path / "level-2.cfg"
    level.write_bytes(b"walls: 4\n")
    uploaded = await cli(stack, nats_server.url, tmp_path, "--json", "maps", "upload", str(level), "--name", "Level 2")
    assert uploaded.exit_code == 0, uploaded.output
    made = json.loads(uploaded.output)
    assert made["name"] == "Level 2" and made["sha256"] == hashlib.sha256(b"walls: 4\n").hexdigest()
    await stack.projected()
    async with stack.client("operator") as client:
        assert [m["name"] for m in (await client.get("/api/v1/maps")).json()["maps"]] == ["Level 2"]
        download = await client.get(f"/api/v1/maps/{made['id']}/file")
        assert download.content == b"walls: 4\n"
        train = (await client.post("/api/v1/training/start", json={"map_id": made["id"], "max_iterations": 3})).json()
    listed = await cli(stack, nats_server.url, tmp_path, "maps")
    assert listed.exit_code == 0 and "Level 2" in listed.output and "level-2.cfg" in listed.output
    refused = await cli(stack, nats_server.url, tmp_path, "maps", "rm", str(made["id"]))
    assert refused.exit_code == 1 and train["training_id"] in refused.output
    (tmp_path / "empty.cfg").write_bytes(b"")
    empty = await cli(stack, nats_server.url, tmp_path, "maps", "upload", str(tmp_path / "empty.cfg"))
    assert empty.exit_code == 1 and "empty" in empty.output
    big = tmp_path / "big.cfg"
    big.write_bytes(b"x" * (LIMIT + 1))
    over = await cli(stack, nats_server.url, tmp_path, "maps", "upload", str(big))
    assert over.exit_code == 1 and "over the limit" in over.output

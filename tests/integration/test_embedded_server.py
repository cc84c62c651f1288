"""The embedded nats-server of `stoker up`: a taken port is replaced and recorded for other processes."""

from __future__ import annotations

import socket

import pytest

from eventstore.connect import connect
from eventstore.server import NoPlatform, find_nats_server, read_record, resolve_nats_url, start_embedded


async def test_taken_port_is_replaced_and_recorded(tmp_path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = await start_embedded(tmp_path, port=taken, http_port=taken)
    try:
        assert not server.url.endswith(f":{taken}")
        record = read_record(tmp_path)
        assert record is not None and record["url"] == server.url
        assert resolve_nats_url("", tmp_path) == server.url
        assert resolve_nats_url("nats://elsewhere:4222", tmp_path) == "nats://elsewhere:4222"
        nc = await connect(server.url, "test")
        assert (await nc.jetstream().account_info()).limits is not None
        await nc.close()
    finally:
        server.stop()
    assert read_record(tmp_path) is None  # the recorded process is gone: no platform, and no default either
    with pytest.raises(NoPlatform):
        resolve_nats_url("", tmp_path)


def test_binary_from_the_wheel_or_the_environment(tmp_path) -> None:
    assert find_nats_server({}).endswith("nats-server")
    fake = tmp_path / "nats-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_nats_server({"STOKER_NATS_SERVER": str(fake)}) == str(fake)

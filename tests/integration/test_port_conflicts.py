"""A configured port held by a real socket: named (psutil), replaced by a free one, kept, given back; and what
`stoker up` lists as bound (the run state's `listeners`)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from eventstore.config import CommonSettings, NatsSettings
from ops import ports
from ops.cli import Cli
from ops.commands.platform import Up


def test_a_real_occupied_port_is_named_replaced_and_kept(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        wanted = taken.getsockname()[1]
        choice = ports.choose(tmp_path, "gateway", wanted, "127.0.0.1")
        assert choice.moved and choice.port != wanted
        if os.geteuid() == 0 or os.name != "posix":  # psutil sees our own sockets; as root, anyone's
            assert choice.holder is not None and f"(pid {os.getpid()})" in choice.holder
        ports.record(tmp_path, [choice])
        kept = json.loads((tmp_path / ports.PORTS_FILE).read_text())["gateway"]
        assert (kept["wanted"], kept["port"]) == (wanted, choice.port)
        again = ports.choose(tmp_path, "gateway", wanted, "127.0.0.1")
        assert again.port == choice.port  # the same replacement next time: firewall rules and URLs stay valid
    back = ports.choose(tmp_path, "gateway", wanted, "127.0.0.1")
    assert not back.moved  # the configured port is free again: back to it, and the kept one forgotten
    ports.record(tmp_path, [back])
    assert ports.remembered(tmp_path) == {}


def test_stoker_up_takes_another_nats_port_and_lists_what_it_binds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("STOKER_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("STOKER_GATEWAY_HOST", "0.0.0.0")
    cli = Cli(settings=CommonSettings(data_dir=str(tmp_path)))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        wanted = taken.getsockname()[1]
        up = Up(cli, wanted, 1, False, 10.0, NatsSettings())
    [nats] = [c for c in up.port_choices if c.name == "nats"]
    assert nats.moved and up.nodes[0].spec.port == nats.port and f":{nats.port}" in up.nats_url
    listed = {item["name"]: item for item in up.listeners()}
    assert listed["nats"] == {"name": "nats", "host": "127.0.0.1", "port": nats.port, "wanted": wanted,
                              "holder": nats.holder}
    assert listed["gateway"]["host"] == "0.0.0.0" and listed["gateway"]["port"] == up.gateway.port

    cluster = Up(cli, wanted, 3, False, 10.0, NatsSettings())
    names = {item["name"]: item for item in cluster.listeners()}
    assert {"nats-0", "nats-1", "nats-2", "nats-route-0", "nats-route-1", "nats-route-2"} <= set(names)
    assert all(names[f"nats-route-{i}"]["host"] == "127.0.0.1" for i in range(3))  # local routes: no opening

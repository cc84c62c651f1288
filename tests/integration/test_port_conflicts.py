"""A configured port held by a real socket: named (psutil), replaced by a free one, kept, and given back."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ops import ports


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

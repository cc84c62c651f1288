"""A new LAN address, end to end: a fake interface source → discovery's NetworkChanged in a real log → a new
phone link and QR code over the gateway's WebSocket and from GET /api/v1/network/qr. The QR code is decoded
back to its URL with zxing-cpp (a real QR reader), not compared with what made it."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from datetime import timedelta

import pytest
import segno
from websockets.asyncio.client import connect

from contracts.base import utcnow
from contracts.network import host_id
from eventstore.follow import cancel_and_wait
from eventstore.network import last_network_change
from gateway.phone import PHONE_TOKEN_NAME, qr_svg
from gateway.tokens import load_registry
from services.discovery.adapter import DiscoveryService
from services.discovery.network import Interface
from services.discovery.settings import DiscoverySettings
from tests.integration.fake_worker import InProcess, eventually
from tests.integration.gateway_support import gateway_stack
from tests.integration.test_gateway_ws import next_of

zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp decodes the QR code (pip install zxing-cpp)")

FAST = DiscoverySettings(lease_ttl_s=0.6, tick_s=0.1, network_check_s=0.05)
HOST = host_id(socket.gethostname())


def read_qr(rows: list[list[bool]], scale: int = 4) -> str:
    """Read a QR code, given as rows of dark/light modules, with zxing-cpp (drawn `scale` pixels a module)."""
    pixels = [bytes(0 if dark else 255 for dark in row for _ in range(scale)) for row in rows for _ in range(scale)]
    [found] = zxingcpp.read_barcodes(memoryview(b"".join(pixels)).cast("B", (len(pixels), len(pixels[0]))))
    return found.text


def svg_modules(svg: str) -> list[list[bool]]:
    """The modules an SVG from gateway.phone.qr_svg draws: its light square's size, and the dark runs of its
    line path (`M x y` / `m dx dy` moves, `h n` runs of n modules along row y - 0.5)."""
    size = int(re.search(r'd="M0 0h(\d+)', svg).group(1))
    rows = [[False] * size for _ in range(size)]
    x = y = 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", re.search(r'class="qrline"[^>]*d="([^"]+)"',
                                                                              svg).group(1)):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            for column in range(int(x), int(x + float(a))):
                rows[int(y)][column] = True
            x += float(a)
    return rows


def decode_qr(text: str) -> str:
    """The QR code the gateway draws for `text` (its SVG), read back with zxing-cpp."""
    return read_qr(svg_modules(qr_svg(text)))


class Interfaces:
    """An interface source a test changes: eth0 with one address, beside loopback and a docker bridge."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(self) -> list[Interface]:
        return [Interface(name="lo", addresses=("127.0.0.1",)), Interface(name="docker0", addresses=("172.17.0.1",)),
                Interface(name="eth0", addresses=(self.address,))]


def test_a_qr_code_reads_back_as_its_url() -> None:
    url = "http://192.168.77.20:8000/#token=stk_" + "A" * 43
    assert decode_qr(url) == url
    assert svg_modules(qr_svg(url)) == [list(row) for row in segno.make(url, error="m").matrix_iter(border=4)]


async def test_a_new_address_is_recorded_and_reaches_the_phone_panel_live(nats_server, nc, topology, tmp_path) -> None:
    source = Interfaces("192.168.77.20")  # recorded, never contacted: nothing is sent to it

    def discovery(ctx, settings):
        return DiscoveryService(ctx, settings, interfaces=source)

    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, host="0.0.0.0") as stack, \
            InProcess(nats_server.url, topology, discovery, FAST, "discovery") as service:
        await eventually(lambda: service.lan is not None and service.lan.checked.is_set(), what="first check")
        first, _ = await last_network_change(stack.log, HOST)
        assert first is not None and first.preferred == "192.168.77.20" and first.old == ()
        assert {(a.interface, a.skipped) for a in first.new} == {("lo", "loopback"), ("eth0", ""),
                                                                ("docker0", "container or VM bridge")}
        port = int(stack.url.rsplit(":", 1)[1])
        async with connect(stack.ws_url + f"?token={stack.tokens['viewer']}") as conn:
            await conn.send(json.dumps({"type": "subscribe", "topics": ["network"]}))
            now = await next_of(conn, "network")
            assert now["preferred"] == "192.168.77.20"
            assert now["url"].startswith(f"http://192.168.77.20:{port}/#token=stk_")
            assert read_qr(svg_modules(now["svg"])) == now["url"]  # what the panel shows reads as the link

            source.address = "192.168.77.37"  # the DHCP lease changed
            moved = await next_of(conn, "network")
        assert moved["preferred"] == "192.168.77.37" and moved["url"].startswith(f"http://192.168.77.37:{port}/#")
        assert read_qr(svg_modules(moved["svg"])) == moved["url"]
        change, _ = await last_network_change(stack.log, HOST)
        assert (change.old_preferred, change.preferred) == ("192.168.77.20", "192.168.77.37")
        assert "192.168.77.20" in {a.address for a in change.old}

        async with stack.client("viewer") as client:
            panel = (await client.get("/api/v1/network/qr")).json()
        assert panel["url"] == moved["url"]  # one phone token per asking token, kept while it is young
        phone = panel["url"].split("#token=")[1]
        record = (await load_registry(stack.log)).authenticate(phone)
        assert record is not None and record.role == "viewer" and record.name == PHONE_TOKEN_NAME
        assert record.expires_at is not None and record.expires_at - utcnow() <= timedelta(minutes=60)
        async with stack.client(token=phone) as client:
            assert (await client.get("/api/v1/jobs")).status_code == 200
            assert (await client.post("/api/v1/jobs", json={"kind": "train", "workload": "noop"})).status_code == 403


async def test_a_gateway_on_loopback_offers_no_phone_link(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False) as stack, \
            stack.client("viewer") as client:
        panel = (await client.get("/api/v1/network/qr")).json()
        assert panel["url"] is None and panel["svg"] is None and "127.0.0.1 only" in panel["reason"]
        assert (await client.get("/api/v1/network/qr", headers={"Authorization": "Bearer nope"})).status_code == 401


def terminal_modules(lines: list[str]) -> list[list[bool]]:
    """The dark modules of a QR code drawn for a terminal (ops.jointoken.qr_text: light modules as half blocks)."""
    halves = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    rows: list[list[bool]] = []
    for line in lines:
        pairs = [halves[c] for c in line]
        rows += [[not top for top, _ in pairs], [not bottom for _, bottom in pairs]]
    return rows


def terminal_qr(text: str) -> str:
    """The URL in the first QR code drawn in `text`."""
    drawn = [line for line in text.splitlines() if line and set(line) <= set("█▀▄ ")]
    return read_qr(terminal_modules(drawn))


async def test_stoker_up_draws_the_phone_link_again_when_the_address_changes(nats_server, nc, topology,
                                                                             event_log) -> None:
    from gateway.settings import GatewaySettings
    from ops.phone import follow_phone_links
    from services.discovery.lan import NetworkWatch

    source = Interfaces("192.168.77.20")
    watch = NetworkWatch(event_log, source, host=HOST)
    await watch.load()
    await watch.check()
    said: list[str] = []
    gateway = GatewaySettings(host="0.0.0.0", port=8123)
    task = asyncio.create_task(follow_phone_links(nats_server.url, None, None, topology.prefix, gateway, "stk_LOGIN",
                                                  said.append))
    try:
        await eventually(lambda: said, what="the first link")
        assert said[0].startswith("  on your phone:     http://192.168.77.20:8123/#token=stk_LOGIN")
        assert terminal_qr(said[0]) == "http://192.168.77.20:8123/#token=stk_LOGIN"
        source.address = "192.168.77.37"
        await watch.check()
        await eventually(lambda: len(said) > 1, what="the new link")
        assert "changed (192.168.77.20 → 192.168.77.37)" in said[1]
        assert terminal_qr(said[1]) == "http://192.168.77.37:8123/#token=stk_LOGIN"
        assert await watch.check() == []  # nothing changed: nothing is recorded (so nothing is drawn)
    finally:
        await cancel_and_wait([task])


async def test_stoker_qr_prints_a_fresh_link_of_the_role_asked(nats_server, topology, event_log, tmp_path,
                                                               monkeypatch) -> None:
    from click.testing import CliRunner

    from ops.cli import main

    monkeypatch.setenv("STOKER_PREFIX", topology.prefix)
    monkeypatch.setenv("STOKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STOKER_GATEWAY_PORT", "8124")

    def stoker(*args: str):
        return asyncio.to_thread(CliRunner().invoke, main, ["--nats", nats_server.url, *args])

    monkeypatch.setenv("STOKER_GATEWAY_HOST", "127.0.0.1")
    refused = await stoker("qr")
    assert refused.exit_code == 1 and "127.0.0.1 only" in refused.output
    monkeypatch.setenv("STOKER_GATEWAY_HOST", "0.0.0.0")
    assert "no usable LAN address" in (await stoker("qr")).output  # discovery has recorded nothing yet
    await record_an_address(event_log)
    assert (await stoker("qr", "--expires", "soon")).exit_code == 2

    made = await stoker("qr", "--role", "operator", "--expires", "15m")
    assert made.exit_code == 0, made.output
    url = made.output.splitlines()[0]
    assert url.startswith("http://192.168.77.20:8124/#token=stk_")
    assert terminal_qr(made.output) == url
    record = (await load_registry(event_log)).authenticate(url.split("#token=")[1])
    assert record.role == "operator" and record.expires_at - record.issued_at == timedelta(minutes=15)


async def test_a_phone_token_never_outlives_the_token_that_asked_for_it(nats_server, nc, topology, tmp_path) -> None:
    from gateway.tokens import issue_token

    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, host="0.0.0.0") as stack:
        await record_an_address(stack.log)
        _short, brief = await issue_token(stack.log, "viewer", "brief", timedelta(minutes=5))
        await eventually(lambda: stack_knows(stack, brief), what="the gateway folds the new token")
        async with stack.client(token=brief) as client:
            panel = (await client.get("/api/v1/network/qr")).json()
        registry = await load_registry(stack.log)
        phone = registry.authenticate(panel["url"].split("#token=")[1])
        asker = registry.authenticate(brief)
        assert phone.expires_at <= asker.expires_at  # not the 60 minutes a phone link may last at most


async def record_an_address(event_log) -> None:
    """What discovery does at its first check: record eth0's 192.168.77.20 for this host."""
    from services.discovery.lan import NetworkWatch

    watch = NetworkWatch(event_log, Interfaces("192.168.77.20"), host=HOST)
    await watch.load()
    await watch.check()


async def stack_knows(stack, token: str) -> bool:
    async with stack.client(token=token) as client:
        return (await client.get("/api/v1/jobs")).status_code == 200

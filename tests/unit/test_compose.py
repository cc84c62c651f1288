"""compose/docker-compose.yml, checked without Docker: its commands, its credentials, its NATS nodes, its ports."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from contracts.subjects import Topology
from eventstore.credentials import (
    CredentialError,
    claim_pool_credential,
    route_config,
    write_compose_credentials,
)
from ops.cli import main

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
SECRETS = "./secrets/"  # where the compose file expects `stoker security compose-credentials compose/secrets`


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> set[str]:
    """Every file the generator writes, relative to its directory, as the compose file names them."""
    root = tmp_path_factory.mktemp("compose-secrets")
    result = CliRunner().invoke(main, ["--data-dir", str(root / "data"), "security", "compose-credentials",
                                       str(root), "--workers", "3"])
    assert result.exit_code == 0, result.output
    return {str(p.relative_to(root)) for p in (root / "credentials").rglob("*")}


def stoker_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "stoker:local"}


def resolve(argv: list[str]) -> click.Command:
    """The click command `stoker ARGV…` runs, with its arguments parsed (click raises on a bad one)."""
    assert argv[0] == "stoker", argv
    command: click.Command = main
    args = argv[1:]
    while isinstance(command, click.Group):
        assert args and not args[0].startswith("-"), argv
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"no such stoker command: {argv}"
        command, args = sub, args[1:]
    command.make_context(command.name or "", list(args))  # options and arguments exist and parse
    return command


def test_every_stoker_service_runs_a_real_stoker_command(compose):
    services = stoker_services(compose)
    assert {"scheduler", "discovery", "projector", "gateway", "monitor", "worker", "streams"} <= set(services)
    for name, service in services.items():
        command = resolve(service["command"])
        if command.name == "run":
            assert service["command"] == ["stoker", "run", name]
            from ops.commands.platform import SERVICES
            assert name in {n for n, _m, _r in SERVICES}


def test_resolve_refuses_what_stoker_does_not_have():
    with pytest.raises((AssertionError, click.UsageError)):
        resolve(["stoker", "no-such-command"])
    with pytest.raises(click.UsageError):
        resolve(["stoker", "worker", "--no-such-option"])


def mounted_credentials(compose: dict) -> list[tuple[str, str, str]]:
    """(service, source under ./secrets/, target) of every credential bind mount."""
    out = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith(SECRETS):
                out.append((name, source[len(SECRETS):], target))
    return out


def test_every_mounted_credential_is_one_the_generator_makes(compose, generated):
    mounts = mounted_credentials(compose)
    assert mounts
    for _service, source, _target in mounts:
        assert source in generated, f"{source} is not made by `stoker security compose-credentials`"


def test_each_service_mounts_its_own_seed_only_and_connects_with_it(compose):
    by_service: dict[str, list[str]] = {}
    for name, source, target in mounted_credentials(compose):
        by_service.setdefault(name, []).append(source)
        if source.endswith(".nk"):
            assert compose["services"][name]["environment"]["STOKER_NATS_CREDENTIALS"] == target
    for role in ("scheduler", "discovery", "projector", "gateway", "monitor"):
        assert by_service[role] == [f"credentials/{role}.nk"]
    assert by_service["worker"] == ["credentials/workers"]
    assert "STOKER_NATS_CREDENTIALS" not in compose["services"]["worker"]["environment"]  # --pool chooses


def test_the_nats_nodes_are_a_durable_three_node_cluster(compose, generated, tmp_path):
    nodes = [name for name, s in compose["services"].items() if str(s.get("image", "")).startswith("nats:")]
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    for node in nodes:
        mounts = dict(v.split(":")[:2] for v in compose["services"][node]["volumes"])
        conf_source = next(src for src, dst in mounts.items() if dst == "/etc/nats/nats.conf")
        conf = (COMPOSE / conf_source).read_text()
        assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
        assert f'server_name: "{node}"' in conf
        # The includes are relative to the config file, and each one is mounted there.
        for include in re.findall(r'include "([^"]+)"', conf):
            assert f"/etc/nats/{include}" in mounts.values(), include
        assert re.search(r"cluster \{[^}]*include \"credentials/route.conf\"", conf, re.S)
    # The generated route.conf routes to the three nodes, with the route password.
    text = route_config("s3cret", nodes)
    assert sorted(re.findall(r"@(nats-\d):6222", text)) == sorted(nodes)
    assert 'password: "s3cret"' in text and text.count("route:s3cret@") == 3
    store = write_compose_credentials(tmp_path, Topology("stoker"), 2, nodes)
    assert sorted(re.findall(r"@(nats-\d):6222", (store.root / "route.conf").read_text())) == sorted(nodes)


def test_services_use_replicated_streams_and_all_three_nodes(compose):
    for service in stoker_services(compose).values():
        env = service["environment"]
        assert env["STOKER_REPLICAS"] == "3"
        assert sorted(env["STOKER_NATS_URL"].split(",")) == [f"nats://nats-{i}:4222" for i in (1, 2, 3)]


def published(compose: dict) -> list[tuple[str, str]]:
    return [(name, str(port)) for name, s in compose["services"].items() for port in s.get("ports", [])]


def test_only_the_gateway_is_published_beyond_loopback(compose):
    ports = published(compose)
    assert ports
    for name, port in ports:
        if name == "gateway":
            continue
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert ("gateway", "8000:8000") in ports
    readme = (COMPOSE.parent / "README.md").read_text()
    assert "gateway" in readme.split("From one machine to three", 1)[1][:3000]


def test_a_pool_credential_is_held_by_one_worker_at_a_time(tmp_path):
    store = write_compose_credentials(tmp_path, Topology("stoker"), 2, ["nats-1"])
    pool = store.workers_dir
    first = claim_pool_credential(pool)
    second = claim_pool_credential(pool)
    try:
        assert (first[0], second[0]) == ("worker-1", "worker-2")
        with pytest.raises(CredentialError, match="in use"):
            claim_pool_credential(pool)
    finally:
        os.close(second[2])
    again = claim_pool_credential(pool)  # a replica that ended gave its credential back
    try:
        assert again[0] == "worker-2"
        assert store.workers().keys() == {"worker-1", "worker-2"}
    finally:
        os.close(again[2])
        os.close(first[2])


def test_an_empty_pool_says_how_to_fill_it(tmp_path):
    with pytest.raises(CredentialError, match="compose-credentials"):
        claim_pool_credential(tmp_path)


def test_the_prometheus_example_scrapes_the_gateway_with_a_mounted_viewer_token(compose):
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]  # not started by a plain `up`
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"] in mounts.values()  # the token file is mounted where it reads
    assert job["static_configs"][0]["targets"] == ["gateway:8000"]
    gateway = compose["services"]["gateway"]
    assert set(prometheus["networks"]) & set(gateway["networks"]) and "8000:8000" in gateway["ports"]

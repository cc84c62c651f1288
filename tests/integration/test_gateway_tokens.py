"""Tokens outside the gateway: `stoker token create|list|revoke`, and the first-run admin token."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest
from click.testing import CliRunner

from contracts.codec import decode_event
from gateway.bootstrap import admin_token_path, ensure_admin_token, read_admin_token
from gateway.tokens import LOGIN_NAME, issue_token, load_registry, revoke_token
from ops.cli import main


@pytest.fixture
def stoker(nats_server, topology, tmp_path, monkeypatch):
    """Run `stoker …` against the test server and this test's prefix; returns (exit code, stdout)."""
    monkeypatch.setenv("STOKER_PREFIX", topology.prefix)
    monkeypatch.setenv("STOKER_DATA_DIR", str(tmp_path))

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["--nats", nats_server.url, *args])
        return result.exit_code, result.output

    return run


def test_token_create_list_revoke(stoker, event_log) -> None:
    code, out = stoker("--json", "token", "create", "--role", "operator", "--name", "ci", "--expires-in", "2h")
    assert code == 0, out
    created = json.loads(out.strip().splitlines()[-1])
    assert created["token"].startswith("stk_") and created["role"] == "operator" and created["expires_at"]
    code, out = stoker("--json", "token", "list")
    listed = json.loads(out.strip().splitlines()[-1])
    assert [(t["token_id"], t["active"]) for t in listed] == [(created["token_id"], True)]
    assert created["token"] not in out
    assert stoker("token", "revoke", created["token_id"])[0] == 0
    code, out = stoker("token", "list")
    assert code == 0 and "revoked" in out
    assert stoker("token", "revoke", "01NOSUCHTOKEN")[0] == 1
    assert stoker("token", "create", "--role", "root")[0] == 2
    assert stoker("token", "create", "--expires-in", "soon")[0] == 1


async def test_first_run_writes_an_admin_token_once(event_log, tmp_path) -> None:
    lines = await ensure_admin_token(event_log, tmp_path, "http://127.0.0.1:8000")
    path = admin_token_path(tmp_path)
    assert str(path) in lines and "http://127.0.0.1:8000/#token=stk_" in lines
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_admin_token(tmp_path)
    registry = await load_registry(event_log)
    assert registry.authenticate(first).role == "admin"
    login = next(r for r in registry.records() if r.role == "viewer")
    assert login.expires_at is not None and login.expires_at > login.issued_at

    await ensure_admin_token(event_log, tmp_path)
    assert read_admin_token(tmp_path) == first  # kept while it works

    await revoke_token(event_log, registry.authenticate(first).token_id)
    await ensure_admin_token(event_log, tmp_path)
    assert read_admin_token(tmp_path) != first  # a revoked one is replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_each_start_leaves_exactly_one_working_login_token(event_log, tmp_path) -> None:
    # One issued as the stoker up of before tokens had a purpose: only its name marks it a login.
    _old, legacy = await issue_token(event_log, "viewer", LOGIN_NAME, timedelta(hours=12))
    _api, api = await issue_token(event_log, "viewer", "phone", timedelta(hours=12))
    links = [await ensure_admin_token(event_log, tmp_path, "http://127.0.0.1:8000") for _ in range(3)]
    secrets = [line.split("#token=")[1].split()[0] for lines in links for line in lines.splitlines()
               if "#token=" in line]
    registry = await load_registry(event_log)
    now = registry.records()[-1].issued_at
    logins = [r for r in registry.records() if r.is_login]
    assert len(logins) == 4 and [r.active(now) for r in logins] == [False, False, False, True]
    assert registry.authenticate(secrets[-1]).purpose == "login"
    assert [registry.authenticate(s) for s in (legacy, *secrets[:-1])] == [None, None, None]
    assert registry.authenticate(api) is not None  # other tokens are left alone
    assert registry.authenticate(read_admin_token(tmp_path)).role == "admin"


def test_a_token_issued_before_purposes_existed_decodes_as_an_api_token() -> None:
    payload = (b'{"type": "TokenIssued", "token_id": "01TOK", "role": "viewer", "token_sha256": "' + b"ab" * 32
               + b'", "name": "phone", "expires_at": null, "issued_at": "2026-01-02T03:04:05Z"}')
    assert decode_event("TokenIssued", 1, payload).purpose == "api"

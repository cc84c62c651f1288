"""The Python client against a real `stoker up`: the README's example, follow across a gateway restart,
a revoked token, a failing workload, and the sync and async flavours agreeing."""

from __future__ import annotations

import asyncio
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from contracts.telemetry import EpisodeReport, JobProgress
from gateway.client import AsyncClient, Client, Forbidden, InvalidRequest, JobFailed, NotFound
from gateway.schemas.jobs import JobView
from tests.e2e.conftest import START_TIMEOUT_S, Platform, _ready, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def readme_example() -> str:
    """The first Python block of the README's "From Python" section."""
    section = (ROOT / "README.md").read_text().split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's From Python section has no python block"
    return found.group(1)


def gateway_process(platform: Platform) -> psutil.Process:
    """The gateway that `stoker up` supervises."""
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        if child.cmdline()[-1:] == ["gateway"] or "gateway.__main__" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no gateway process under stoker up")


def client(platform: Platform, token: str | None = None) -> Client:
    return Client(platform.url, token or platform.admin_token)


def test_the_readme_example_runs(platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # As a user on the machine runs it: no URL or token given, the data dir of `stoker up` says both.
    for name in ("STOKER_URL", "STOKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STOKER_DATA_DIR", str(platform.data_dir))
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("completed ") and printed[1].startswith("Stats(min="), printed


def test_follow_resumes_across_a_gateway_restart_with_every_report_once(platform: Platform) -> None:
    async def follow_async(job_id: str) -> list:
        async with AsyncClient(platform.url, platform.admin_token) as stoker:
            return [update async for update in stoker.follow(job_id)]

    with client(platform) as stoker, ThreadPoolExecutor(1) as pool:
        # a step no shorter than the progress interval: every report is sent, none coalesced away
        run = stoker.submit_training("sleep", max_iterations=40, params={"step_s": 0.5})
        followed_async = pool.submit(asyncio.run, follow_async(run.id))  # both flavours through the same restart
        updates, killed = [], None
        for update in stoker.follow(run.id):
            updates.append(update)
            if killed is None and isinstance(update, JobProgress) and update.iteration == 4:
                killed = gateway_process(platform)
                killed.send_signal(signal.SIGKILL)
        wait_until(lambda: _ready(platform.url), START_TIMEOUT_S, "the gateway back", platform.log_tail)
        assert gateway_process(platform).pid != killed.pid  # it really was restarted under the follow
        history = [s.iteration for s in stoker.logs(run.id)]
        assert followed_async.result(timeout=120) == updates
    final = updates.pop()
    assert isinstance(final, JobView) and final.status == "completed", final
    iterations = [u.iteration for u in updates]
    assert iterations == history  # every report the job made, none twice, in order
    assert iterations == sorted(set(iterations)) and iterations[-1] == 40 and 4 in iterations


def test_a_revoked_token_is_forbidden_on_the_next_call(platform: Platform) -> None:
    with platform.client() as admin:
        created = admin.post("/api/v1/tokens", json={"role": "viewer", "name": "client test"}).json()
    with client(platform) as operator, client(platform, created["token"]) as viewer:
        run = operator.submit_training("sleep", max_iterations=40, params={"step_s": 0.25})
        try:
            updates = viewer.follow(run.id)
            assert isinstance(next(updates), JobProgress)
            with platform.client() as admin:
                assert admin.post(f"/api/v1/tokens/{created['token_id']}/revoke").status_code == 200
            with pytest.raises(Forbidden, match="revoked"):
                for _update in updates:  # the live socket is closed at once
                    pass
            with pytest.raises(Forbidden):
                viewer.jobs(limit=1)
        finally:
            operator.stop(run.id)


def test_wait_on_a_failing_workload_raises_with_its_traceback(platform: Platform) -> None:
    with client(platform) as stoker:
        run = stoker.submit_training("fail", max_iterations=1, params={"message": "the loss went to NaN"})
        with pytest.raises(JobFailed) as failed:
            stoker.wait(run.id, timeout=120)
    assert failed.value.job.status == "failed" and failed.value.job.id == run.id
    assert "RuntimeError: the loss went to NaN" in failed.value.traceback
    assert "Traceback" in str(failed.value) or "basic.py" in str(failed.value)


def test_errors_say_what_went_wrong(platform: Platform) -> None:
    with client(platform) as stoker:
        with pytest.raises(NotFound):
            stoker.job("01JAAAAAAAAAAAAAAAAAAAAAAA")
        with pytest.raises(InvalidRequest, match="workload"):
            stoker.submit_training("no such workload!", max_iterations=1)
        done = stoker.wait(stoker.submit_training("noop", max_iterations=1).id, timeout=120)
        with pytest.raises(InvalidRequest):
            stoker.stop(done.id)  # 409: it is over


def test_sync_and_async_give_the_same_results(platform: Platform) -> None:
    with client(platform) as stoker:
        run = stoker.submit_training("noop", max_iterations=5, params={"checkpoint_every": 5}, labels=(),
                                     idempotency_key="client-sync-async")
        trained = stoker.wait(run.id, timeout=120)
        evaluation = stoker.submit_evaluation(run.id, episodes=2)
        evaluated = stoker.wait(evaluation.id, timeout=120)
        sync = (stoker.job(run.id), stoker.jobs("completed", workload="noop"), stoker.logs(run.id),
                stoker.results(run.id), stoker.results(evaluation.id), list(stoker.follow(run.id)),
                stoker.submit_training("noop", max_iterations=5, idempotency_key="client-sync-async").id)

    async def asynchronously():
        async with AsyncClient(platform.url, platform.admin_token) as stoker:
            return (await stoker.job(run.id), await stoker.jobs("completed", workload="noop"),
                    await stoker.logs(run.id), await stoker.results(run.id), await stoker.results(evaluation.id),
                    [u async for u in stoker.follow(run.id)],
                    (await stoker.submit_training("noop", max_iterations=5, idempotency_key="client-sync-async")).id)

    assert trained.status == evaluated.status == "completed"
    assert asyncio.run(asynchronously()) == sync
    followed = sync[5]
    assert [u.iteration for u in followed[:-1] if isinstance(u, JobProgress)] == [s.iteration for s in sync[2]]
    assert not any(isinstance(u, EpisodeReport) for u in followed) and followed[-1] == trained
    assert sync[6] == run.id


def test_following_a_2048_evaluation_brings_every_episode_once(platform: Platform) -> None:
    # The episodes reach telemetry, the end reaches the event log: whichever came last, follow has each once.
    with client(platform) as stoker:
        trained = stoker.wait(stoker.submit_training("2048", max_iterations=20, params={
            "checkpoint_every": 20, "batch_size": 16}).id, timeout=240)
        assert trained.status == "completed", trained
        evaluation = stoker.submit_evaluation(trained.id, episodes=3)
        updates = list(stoker.follow(evaluation.id))
        reported = stoker.episodes(evaluation.id)
    final = updates.pop()
    assert isinstance(final, JobView) and final.status == "completed", final
    followed = [u for u in updates if isinstance(u, EpisodeReport)]
    assert [u.episode for u in followed] == [e.episode for e in reported] and len(reported) == 3
    assert [u.score for u in followed] == [e.score for e in reported] and all(e.log for e in reported)

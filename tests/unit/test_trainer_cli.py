"""The job commands' pure parts: --param parsing, ids, ETA, and usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from contracts.telemetry import JobProgress
from eventstore.config import CommonSettings, load_settings
from ops.cli import Cli, main
from ops.commands.jobs import check_job_id, estimate_eta, parse_params, progress_line
from ops.commands.worker import worker_process
from ops.joined import Joined, join_dir
from services.trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("items", "expected"), [
    ((), {}),
    (("lr=0.001",), {"lr": 0.001}),
    (("batch_size=128", "name=run one"), {"batch_size": 128, "name": "run one"}),
    (("flag=true", "layers=[64,64]", "empty="), {"flag": True, "layers": [64, 64], "empty": ""}),
    (("url=a=b",), {"url": "a=b"}),
    ((" k =v",), {"k": "v"}),
])
def test_params_parse(items, expected):
    assert parse_params(items) == expected


@pytest.mark.parametrize("bad", ["novalue", "=3", " =x"])
def test_bad_params_are_refused(bad):
    with pytest.raises(ValueError, match="not key=value"):
        parse_params((bad,))


def test_job_ids_are_checked():
    assert check_job_id("01JABC") == "01JABC"
    with pytest.raises(ValueError, match="not a job id"):
        check_job_id("a.b")


def test_the_cli_and_the_gateway_never_read_this_machine_s_workloads():
    # The worker resolves `X` to `X-eval`: the machine a command runs on usually has no workloads. Whatever
    # entry points this installation has, reading any of them fails the test.
    code = ("import importlib.metadata, sys\n"
            "def refuse(*args, **kwargs): raise AssertionError('entry points were read')\n"
            "importlib.metadata.entry_points = refuse\n"
            "import ops.cli, gateway.app, gateway.controllers.testing\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'services'], sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_stoker_worker_runs_the_trainer_as_a_module_with_its_options(tmp_path):
    cli = Cli(settings=CommonSettings(data_dir=str(tmp_path)))
    argv, env = worker_process(cli, "nats://127.0.0.1:4999", "box-1", ("gpu", "eval"), 3)
    assert argv == [sys.executable, "-m", "services.trainer"]
    assert env["STOKER_NATS_URL"] == "nats://127.0.0.1:4999" and env["STOKER_DATA_DIR"] == str(tmp_path)
    settings = load_settings(TrainerSettings, "trainer", env=env)
    assert (settings.worker_id, settings.labels, settings.slots) == ("box-1", ("gpu", "eval"), 3)
    _argv, plain = worker_process(cli, "nats://127.0.0.1:4999", None, (), None)
    assert load_settings(TrainerSettings, "trainer", env=plain) == load_settings(TrainerSettings, "trainer",
                                                                                 env=dict(os.environ))


def test_stoker_worker_on_a_joined_data_dir_works_for_the_platform_it_joined(tmp_path):
    urls = ["tls://192.0.2.1:4222", "tls://192.0.2.2:4222"]
    joined = Joined(platform_id="P", prefix="lab", fingerprint="ab" * 32, urls=urls, worker_id="box-b",
                    labels=["gpu"], token_id="t", joined_at=datetime.now(UTC))
    (join_dir(tmp_path) / "joined.json").write_bytes(msgspec.json.encode(joined))
    cli = Cli(settings=CommonSettings(data_dir=str(tmp_path)))
    _argv, env = worker_process(cli, None, None, (), None)
    assert env["STOKER_NATS_URL"] == "tls://192.0.2.1:4222,tls://192.0.2.2:4222" and env["STOKER_PREFIX"] == "lab"
    assert env["STOKER_NATS_CA"] == str(tmp_path / "join" / "ca.pem")
    assert env["STOKER_NATS_CREDENTIALS"] == str(tmp_path / "join" / "worker.nkey")
    settings = load_settings(TrainerSettings, "trainer", env=env)
    assert (settings.worker_id, settings.labels) == ("box-b", ("gpu",))
    _argv, elsewhere = worker_process(cli, "nats://127.0.0.1:4999", None, ("cpu",), None)  # --nats wins
    assert elsewhere["STOKER_NATS_URL"] == "nats://127.0.0.1:4999" and "STOKER_NATS_CREDENTIALS" not in elsewhere


def sample(iteration: int, seconds: float, total: int | None = 100, **metrics: float) -> JobProgress:
    at = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return JobProgress(job_id="j", attempt=1, worker_id="w", iteration=iteration, total=total, loss=0.25,
                       metrics=metrics, at=at)


def test_eta_comes_from_the_attempt_rate():
    first = (0, sample(0, 0).at)
    assert estimate_eta(sample(50, 10), first) == pytest.approx(10.0)
    assert estimate_eta(sample(50, 10, total=None), first) is None
    assert estimate_eta(sample(0, 10), first) is None


def test_progress_line_shows_bar_counts_loss_score_and_eta():
    line = progress_line(sample(50, 10, score=812.0), (0, sample(0, 0).at))
    assert "50.0%" in line and "50/100" in line and "loss 0.25" in line and "score 812" in line
    assert "ETA 0m10s" in line


@pytest.mark.parametrize("args", [
    ["submit", "train", "noop", "--param", "oops"],
    ["stop"],
    ["stop", "JOB", "--all"],
    ["job", "bad.id"],
])
def test_usage_errors_are_one_line_and_exit_1(args, tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--nats", "nats://127.0.0.1:1", *args])
    assert result.exit_code == 1
    assert result.output.startswith("stoker: ") and result.output.count("\n") == 1


def test_the_rate_and_the_whole_result_of_a_finished_job() -> None:
    from contracts import events as ev
    from ops.commands.jobs import iteration_rate, outcome_lines

    first = (0, sample(0, 0).at)
    assert iteration_rate(sample(50, 10), first) == pytest.approx(5.0)
    assert iteration_rate(sample(0, 0), first) is None and iteration_rate(sample(5, 1), None) is None
    assert "5 it/s" in progress_line(sample(50, 10), first)
    long_value = {"scores": list(range(200))}
    done = ev.JobCompleted(job_id="j", attempt=1, result={"score": 812.5, "detail": long_value},
                           completed_at=sample(0, 0).at)
    lines = outcome_lines(done)
    assert lines[0] == "result:" and "…" not in "".join(lines)
    assert any(line.split() == ["score", "812.5"] for line in lines)
    assert any(msgspec.json.encode(long_value).decode() in line for line in lines)  # in full


def test_a_named_checkpoint_is_found_in_the_jobs_log() -> None:
    from contracts import events as ev
    from eventstore.log import StoredEvent
    from ops.commands.jobs import stored_checkpoint

    def stored(seq: int, iteration: int) -> StoredEvent:
        event = ev.JobCheckpointed(job_id="j", attempt=1, iteration=iteration, name=f"j/1-{iteration}",
                                   sha256="a" * 64, size=3, checkpointed_at=sample(0, 0).at)
        return StoredEvent(seq=seq, subject="x.job.j", aggregate="job", aggregate_id="j", event=event,
                           event_id=str(seq), schema=1, time=None, headers={})

    events = [stored(1, 10), stored(2, 20)]
    ref = stored_checkpoint(events, "j/1-10")
    assert (ref.name, ref.iteration, ref.sha256, ref.size) == ("j/1-10", 10, "a" * 64, 3)
    with pytest.raises(ValueError, match=r"no stored checkpoint 'j/1-30'.*j/1-10, j/1-20"):
        stored_checkpoint(events, "j/1-30")

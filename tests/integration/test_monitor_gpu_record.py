"""The monitor's count of the GPUs a service install recorded, and a sampler's expectation in its samples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.monitor.sampler import PsutilSampler, expected_gpu_count

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_count_comes_from_the_install_record(tmp_path: Path) -> None:
    record = tmp_path / "gpus.json"
    record.write_text('[{"index": 0, "name": "NVIDIA H200", "memory_mb": 143771}]')
    (tmp_path / "bad.json").write_text("not json")
    assert expected_gpu_count(str(record)) == 1
    assert expected_gpu_count("") is None and expected_gpu_count(str(tmp_path / "bad.json")) is None
    assert expected_gpu_count(str(tmp_path / "absent.json")) is None


def test_a_sampler_that_cannot_count_gpus_says_no_expectation(tmp_path: Path) -> None:
    sampler = PsutilSampler("h1", [tmp_path], expected_gpus=1)
    try:
        taken = sampler.sample(T0)
    finally:
        sampler.close()
    assert taken.gpus_expected == (1 if sampler.gpus.installed else None)

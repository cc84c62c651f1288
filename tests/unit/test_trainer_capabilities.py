"""Capability detection's shape, slots and the stable worker id."""

from __future__ import annotations

import socket

import pytest

from contracts.base import is_valid_id
from contracts.codec import decode_event
from contracts.events import Gpu, WorkerCapabilities
from contracts.workloads import offers
from eventstore.credentials import derived_worker_id
from services.trainer.capabilities import detect, worker_id
from services.trainer.settings import TrainerSettings


def test_capabilities_describe_this_host():
    caps = detect(TrainerSettings(), gpus=[])
    assert isinstance(caps, WorkerCapabilities)
    assert caps.hostname == socket.gethostname()[:255] and caps.cpu_cores >= 1 and caps.ram_mb > 0
    assert caps.gpus == () and caps.slots == 1 and caps.labels == ("training", "evaluation")
    assert all(not a.startswith("127.") and a != "::1" for a in caps.addresses)
    assert caps.version


def test_a_worker_advertises_its_registered_workloads_and_whether_it_runs_targets():
    caps = detect(TrainerSettings(), gpus=[])
    assert {"noop", "sleep", "fail", "2048", "2048-eval"} <= set(caps.workloads) and caps.target_modules is None
    assert detect(TrainerSettings(target_modules=("mine",)), gpus=[]).target_modules == ("mine",)


def test_a_registration_from_before_workloads_were_advertised_still_decodes():
    old = (b'{"type":"WorkerRegistered","worker_id":"w","registered_at":"2026-01-02T03:04:05Z",'
           b'"capabilities":{"hostname":"h","cpu_cores":2,"ram_mb":1024,"slots":1,"version":"0.1.0"}}')
    event = decode_event("WorkerRegistered", 1, old)
    caps = event.capabilities
    assert caps.workloads is None and caps.target_modules is None and not event.draining
    assert offers(caps.workloads, caps.target_modules, "anything", "train")  # it did not say: it may run it


@pytest.mark.parametrize(("gpus", "settings", "slots"), [
    (0, {}, 1),
    (0, {"cpu_slots": 3}, 3),
    (2, {}, 2),
    (2, {"slots": 5}, 5),
])
def test_slots_are_one_per_gpu_else_the_cpu_setting(gpus, settings, slots):
    found = [Gpu(index=i, name="GPU", memory_mb=1000) for i in range(gpus)]
    assert detect(TrainerSettings(**settings), gpus=found).slots == slots


def test_labels_come_from_settings():
    assert detect(TrainerSettings(labels=("gpu-a100",)), gpus=[]).labels == ("gpu-a100",)


def test_gpu_detection_can_be_turned_off():
    assert detect(TrainerSettings(detect_gpus=False)).gpus == ()


@pytest.mark.parametrize("hostname", ["box", "box.example.com", "my host!", "x" * 200, "..."])
def test_derived_ids_are_valid_subject_tokens(tmp_path, hostname):
    derived = derived_worker_id(hostname, tmp_path)
    assert is_valid_id(derived) and derived == derived_worker_id(hostname, tmp_path)


def test_derived_ids_differ_per_data_dir(tmp_path):
    assert derived_worker_id("box", tmp_path / "a") != derived_worker_id("box", tmp_path / "b")


def test_worker_id_is_kept_in_the_data_dir(tmp_path, monkeypatch):
    first = worker_id(TrainerSettings(), tmp_path)
    monkeypatch.setattr(socket, "gethostname", lambda: "renamed-host")
    assert worker_id(TrainerSettings(), tmp_path) == first
    assert (tmp_path / "trainer" / "worker-id").read_text().strip() == first


def test_a_configured_worker_id_wins_and_is_checked(tmp_path):
    assert worker_id(TrainerSettings(worker_id="gpu-7"), tmp_path) == "gpu-7"
    with pytest.raises(ValueError, match="worker id"):
        worker_id(TrainerSettings(worker_id="bad.id"), tmp_path)

"""Executors are plugins: loaded by name when the server starts, each with settings of its own, read from the
same environment and configuration file as the rest and named as they always were (``slurm_poll_s`` in the
file, ``LABCLOUD_SLURM_POLL_S`` in the environment)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, login
from jobs_helpers import write_app
from labcloud.api.app import create_app
from labcloud.db.models import Job
from labcloud.execution.executors import PLUGINS, ExecutorConfigError, check
from labcloud.execution.executors.base import Executor
from labcloud.execution.executors.celery.settings import CelerySettings
from labcloud.execution.executors.slurm.settings import SlurmSettings
from labcloud.execution.loops import Loop
from labcloud.registry.spec_parts import Resources
from labcloud.settings import Settings
from live_server import LABCLOUD, eventually
from testing.daemons import clean_env, free_port


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_CONFIG", str(tmp_path / "absent.toml"))
    for name in ("LABCLOUD_EXECUTOR", "LABCLOUD_EXECUTOR_ROUTES", "LABCLOUD_SLURM_POLL_S"):
        monkeypatch.delenv(name, raising=False)


def test_unknown_executors_are_refused_when_the_executors_load() -> None:
    settings = Settings(executor="kubernetes")  # the settings alone do not know which plugins exist
    with pytest.raises(
        ExecutorConfigError, match="unknown executor 'kubernetes' in executor; one of local, pull"
    ):
        check(settings)
    routed = Settings.model_validate(
        {"executor_routes": [{"app": "a", "executor": "slurm"}, {"app": "b", "executor": "lsf"}]}
    )
    with pytest.raises(ExecutorConfigError, match=r"unknown executor 'lsf' in executor_routes\[1\]"):
        check(routed)
    check(Settings(executor="celery"))


def test_a_plugin_s_settings_come_from_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "labcloud.toml"
    config.write_text(
        "local_cpus = 3\n"
        "slurm_poll_s = 7\n"
        'slurm_extra_args = ["--account=lab"]\n'
        'celery_queue_prefix = "lab"\n'
    )
    monkeypatch.setenv("LABCLOUD_CONFIG", str(config))
    monkeypatch.setenv("LABCLOUD_CELERY_BROKER_URL", "amqp://guest:guest@mq:5672//")
    slurm, celery = SlurmSettings(), CelerySettings()
    assert (slurm.poll_s, slurm.extra_args, slurm.rest_api) == (7, ["--account=lab"], "v0.0.38")
    assert (celery.queue_prefix, celery.broker_url) == ("lab", "amqp://guest:guest@mq:5672//")
    assert Settings().local_cpus == 3  # the file's other keys are the server's, as before
    monkeypatch.setenv("LABCLOUD_SLURM_POLL_S", "0.5")  # the environment wins over the file
    assert SlurmSettings().poll_s == 0.5
    assert SlurmSettings(poll_s=2).poll_s == 2  # and what a program gives wins over both


def test_bad_settings_of_an_executor_in_use_are_refused_with_their_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABCLOUD_SLURM_POLL_S", "0")
    check(Settings(executor="local"))  # Slurm is not in use: its settings are not read
    with pytest.raises(ExecutorConfigError, match="slurm_poll_s: Input should be greater than 0"):
        check(Settings(executor="slurm"))
    monkeypatch.setenv("LABCLOUD_SLURM_POLL_S", "1")
    monkeypatch.setenv("LABCLOUD_SLURM_REST_URL", "http://slurmrestd:6820")
    with pytest.raises(
        ExecutorConfigError, match="slurm_rest_url needs slurm_rest_token or slurm_rest_token_file"
    ):
        check(Settings.model_validate({"executor_routes": [{"gpus_min": 1, "executor": "slurm"}]}))


def test_the_server_does_not_start_with_an_executor_that_does_not_exist(tmp_path: Path) -> None:
    env = {**clean_env(), "LABCLOUD_HOME": str(tmp_path / "home"), "LABCLOUD_EXECUTOR": "kubernetes"}
    done = subprocess.run(
        [*LABCLOUD, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "unknown executor 'kubernetes' in executor" in done.stderr
    assert not (tmp_path / "home").exists()  # refused before anything was created


class Recorder(Executor):
    """An executor that only records what it is asked: the scheduler and the server's context drive it
    through the interface alone, as they would a new engine."""

    name = "recorder"
    calls: ClassVar[list[tuple[str, str]]] = []
    open = False

    def duties(self) -> list[Loop]:
        return [Loop("recorder-watch", 0.05, lambda: self.calls.append(("duty", "")), step_first=True)]

    def recover(self) -> None:
        self.calls.append(("recover", ""))

    def max_resources(self) -> dict[str, float]:
        return {"cpus": 2, "memory_mb": 1024, "gpus": 0}

    def fits_now(self, resources: Resources) -> bool:
        return Recorder.open

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        self.calls.append(("submit", str(job_id)))

    def cancel(self, job_id: uuid.UUID) -> None:
        self.calls.append(("cancel", str(job_id)))

    def wait_reason(self, job: Job) -> str:
        return f"the recorder is closed ({job.resources.cpus:g} CPU asked)"


def test_a_new_executor_is_one_class_and_one_line_in_the_plugins(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PLUGINS, "recorder", f"{__name__}:Recorder")
    monkeypatch.setattr(Recorder, "calls", [])
    monkeypatch.setattr(Recorder, "open", False)
    settings.executor = "recorder"
    write_app(settings.effective_apps_dir, "rec", ["true"], resources={"cpus": 1, "memory_mb": 64})
    with TestClient(create_app(settings)) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        eventually(lambda: ("recover", "") in Recorder.calls and ("duty", "") in Recorder.calls, 10, "duties")

        too_big = client.post("/api/v1/jobs", json={"app": "rec", "resources": {"cpus": 3}}, headers=headers)
        assert too_big.status_code == 422, too_big.text  # more than max_resources: refused at submit

        job_id = client.post("/api/v1/jobs", json={"app": "rec"}, headers=headers).json()["id"]
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert (job["state"], job["executor"]) == ("queued", "recorder")
        assert job["message"] == "the recorder is closed (1 CPU asked)"
        with client.app.state.ctx.db.session() as session:  # as if its first attempt's runner was lost
            row = session.get(Job, uuid.UUID(job_id))
            assert row is not None
            row.attempts, row.message = 1, "retrying after worker_lost (attempt 2 of 3)"
            session.commit()
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert job["message"] == "retrying after worker_lost (attempt 2 of 3)"  # the retry, not the capacity

        Recorder.open = True  # the scheduler's next round admits it (staging) and submits it
        eventually(lambda: ("submit", job_id) in Recorder.calls, 10, "the job to be submitted")
        assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["state"] == "staging"
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
        assert ("cancel", job_id) in Recorder.calls

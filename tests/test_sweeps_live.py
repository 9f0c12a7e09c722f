"""A sweep through a live ``labcloud serve`` on the local executor: submitted and followed to its end with
the CLI (``labcloud sweep submit --wait``), shown, listed and cancelled; and from the Python client."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_helpers import write_app
from labcloud.client import Client
from labcloud.settings import Settings
from live_server import ADMIN_EMAIL, ADMIN_PASSWORD, Server, eventually


def test_a_sweep_runs_to_completion_on_the_local_executor_from_the_cli(server: Server) -> None:
    server.login()
    done = server.json(
        "sweep", "submit", "hello", "--grid", "times=1,2,3", "--grid", "name=Ada,Bo", "-p", "times=9",
        "--name", "greetings", "--wait",
    )  # fmt: skip
    assert (done["state"], done["total"], done["counts"], done["done"]) == (
        "succeeded", 6, {"succeeded": 6}, 1.0
    )  # fmt: skip
    assert done["varies"] == ["times", "name"]
    shown = server.ok("sweep", "show", done["id"])
    assert "greetings" in shown and "succeeded" in shown and "times, name" in shown
    assert done["id"] in server.ok("sweep", "list")
    with Client.login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        jobs = list(client.sweeps.get(done["id"]).jobs())
        greeted = sorted((j["params"]["name"], j["params"]["times"]) for j in jobs)
        assert greeted == [("Ada", 1), ("Ada", 2), ("Ada", 3), ("Bo", 1), ("Bo", 2), ("Bo", 3)]
        bo = [j for j in jobs if j["params"]["name"] == "Bo"]
        logs = {"\n".join(client.jobs.get(j["id"]).logs()).count("Hello, Bo!") for j in bo}
        assert logs == {1, 2, 3}


@pytest.fixture
def nap_app(settings: Settings) -> None:
    """An app that sleeps, in the apps folder before the server starts."""
    write_app(
        settings.effective_apps_dir,
        "nap",
        ["sleep", "{params.s}"],
        parameters={"type": "object", "properties": {"s": {"type": "integer", "default": 60}}},
        resources={"cpus": 1, "memory_mb": 64, "timeout_s": 120},
    )


def test_the_cli_names_every_bad_value_and_cancels_a_sweep(nap_app: None, server: Server) -> None:
    server.login()
    bad = server.run("sweep", "submit", "hello", "--grid", "times=1,0,2000", "--json")
    assert bad.returncode != 0
    assert "grid.times.1" in bad.stderr + bad.stdout and "grid.times.2" in bad.stderr + bad.stdout
    with Client.login(server.url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        made = client.sweeps.submit("nap", sets=[{"s": 60}] * 4, name="naps")
        assert made.total == 4
        eventually(lambda: made.refresh().counts.get("running"), 60, "a job of it to run")
        cancelled = server.json("sweep", "cancel", str(made.id))
        assert set(cancelled["counts"]) <= {"cancelled", "cancelling"}, cancelled
        assert made.wait(timeout=60).state == "cancelled"


def test_sets_from_a_file(server: Server, tmp_path: Path) -> None:
    server.login()
    sets = tmp_path / "sets.json"
    sets.write_text('[{"name": "a", "times": 1}, {"name": "b", "times": 2}]')
    done = server.json("sweep", "submit", "hello", "--sets-file", str(sets), "--wait")
    assert (done["state"], done["total"]) == ("succeeded", 2)

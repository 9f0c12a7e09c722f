"""Which executor and queue a job goes to: the entrypoint's own choice, then the first matching route,
then labels (remote workers), then the default executor."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from labcloud.errors import InvalidInput
from labcloud.registry import EntrypointSpec
from labcloud.registry.spec_parts import Resources
from labcloud.services.routing import Destination, executors_in_use, route
from labcloud.settings import Settings

ROUTES = [
    {"app": "gpu-*", "executor": "slurm", "queue": "gpu"},
    {"gpus_min": 1, "executor": "slurm", "queue": "gpu"},
    {"cpus_min": 8, "memory_mb_min": 1000, "executor": "slurm", "queue": "big"},
    {"labels": {"site": "hpc"}, "executor": "slurm"},
    {"app": "batch", "entrypoint": "many", "executor": "celery"},
]


def spec(**extra: Any) -> EntrypointSpec:
    return EntrypointSpec.model_validate({"command": ["true"], **extra})


def settings(**extra: Any) -> Settings:
    return Settings.model_validate({"executor": "local", "executor_routes": ROUTES, **extra})


@pytest.mark.parametrize(
    ("app", "entrypoint", "entry", "resources", "expected"),
    [
        ("gpu-fold", "main", {}, {}, Destination("slurm", "gpu")),
        ("fold", "main", {}, {"gpus": 1}, Destination("slurm", "gpu")),
        ("fold", "main", {}, {"cpus": 8, "memory_mb": 2000}, Destination("slurm", "big")),
        ("fold", "main", {}, {"cpus": 8, "memory_mb": 500}, Destination("local")),  # every condition
        ("fold", "main", {"labels": {"site": "hpc"}}, {}, Destination("slurm")),
        ("fold", "main", {"labels": {"site": "lab"}}, {}, Destination("pull")),  # labels: remote workers
        ("batch", "many", {}, {}, Destination("celery")),
        ("batch", "one", {}, {}, Destination("local")),
        ("gpu-fold", "main", {"executor": "celery", "queue": "q1"}, {}, Destination("celery", "q1")),
        ("fold", "main", {"queue": "special"}, {}, Destination("local", "special")),
    ],
)
def test_routes(
    app: str, entrypoint: str, entry: dict[str, Any], resources: dict[str, Any], expected: Destination
) -> None:
    assert route(settings(), app, entrypoint, spec(**entry), Resources(**resources)) == expected


def test_the_default_executor_is_a_setting() -> None:
    assert route(Settings(executor="celery"), "x", "main", spec(), Resources()) == Destination("celery")
    assert route(Settings(executor="pull"), "x", "main", spec(), Resources()) == Destination("pull")


def test_an_entrypoint_naming_an_executor_not_in_use_is_refused_at_submit() -> None:
    with pytest.raises(InvalidInput, match="'slurm' executor, which this installation does not use"):
        route(Settings(executor="local"), "x", "main", spec(executor="slurm"), Resources())


def test_a_route_with_an_unknown_key_is_refused_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="executor_routes"):
        Settings.model_validate({"executor_routes": [{"app": "x", "executr": "slurm"}]})


def test_routes_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_EXECUTOR_ROUTES", '[{"gpus_min": 1, "executor": "slurm", "queue": "gpu"}]')
    loaded = Settings()
    assert executors_in_use(loaded) == ["local", "pull", "slurm"]
    assert route(loaded, "a", "main", spec(), Resources(gpus=2)) == Destination("slurm", "gpu")

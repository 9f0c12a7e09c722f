"""The container engines of the tests (tests/engines.py) run the busybox image as the container runtime
needs: a command, as an unprivileged user, and under a memory limit that kills it and says so."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from engines import IMAGE, EngineCLI
from testing.engines import import_image

pytestmark = pytest.mark.containers

KINDS = ("docker", "podman")
GREEDY = 'x=a; while true; do x="$x$x"; done'  # doubles a string until the memory limit stops it


@pytest.fixture(params=KINDS, ids=KINDS)
def engine(request: pytest.FixtureRequest) -> EngineCLI:
    cli: EngineCLI = request.getfixturevalue(f"{request.param}_cli")
    return cli


def run_options(engine: EngineCLI) -> list[str]:
    """Never a pull (there is no registry), no network, and what this machine needs."""
    return ["--pull=never", "--network", "none", *engine.run_args]


def test_runs_a_command(engine: EngineCLI) -> None:
    done = engine.run("run", "--rm", *run_options(engine), IMAGE, "true", check=False)
    assert done.returncode == 0, done.stderr


def test_runs_as_nobody(engine: EngineCLI) -> None:
    done = engine.run("run", "--rm", *run_options(engine), "--user", "65534:65534", IMAGE, "id", "-u")
    assert done.stdout.strip() == "65534"


def test_memory_limit_kills_and_is_reported(engine: EngineCLI, tmp_path: Path) -> None:
    name = f"labcloud-oom-{secrets.token_hex(4)}"
    limit = ["--memory", "16m", "--memory-swap", "16m"]
    try:
        done = engine.run(
            "run", "--name", name, *run_options(engine), *limit, IMAGE, "sh", "-c", GREEDY,
            check=False, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 137, done.stderr
        said = engine.run("inspect", "--format", "{{.State.OOMKilled}}", name).stdout.strip()
        if engine.kind == "docker":
            assert said == "true"
        else:
            # Podman 4 leaves State.OOMKilled false: conmon records the kill in a file "oom" in the working
            # directory of `podman run`, where Podman does not look (testing/engines.py); Podman 5 reports it.
            assert said == "true" or (tmp_path / "oom").is_file(), said
    finally:
        engine.run("rm", "--force", name, check=False)


def test_image_is_imported_once(engine: EngineCLI) -> None:
    before = engine.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert import_image(engine) == before  # the same root file system: left as it is

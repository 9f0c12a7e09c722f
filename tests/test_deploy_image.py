"""The deployment kit's image (deploy/Dockerfile), built offline as its header says: from the Debian base made
on this machine (scripts/build-base-image.sh, cached) and a wheelhouse (``pip wheel``, its dependencies
cached), by the suite's private dockerd. The container runs as its own unprivileged user, its server answers
/healthz, and with the allowances deploy/compose.yaml gives the worker, the jobs' sandbox works inside it.

SLOW (marked ``slow``): on the 2-core test machine ``docker build`` alone takes about 3 minutes (copying
and installing 90 MB of wheels, then copying the venv into the final stage), the whole test about 5. The
first run on a machine also builds the base root file system (about 5 minutes, once) and the dependencies'
wheels (about 2 minutes, once per pyproject.toml).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from live_server import eventually
from testing.daemons import free_port
from testing.engines import EngineCLI

pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BASE = "labcloud/debian-python:12"
TAG = "labcloud-deploy-test:latest"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labcloud"


def wheelhouse(docker: EngineCLI, context: Path) -> None:
    """Fill ``context``'s deploy/wheels as the Dockerfile's header says: ``pip wheel`` run by the base
    image's own Python (its version decides which dependencies apply: Debian 12's 3.11.2 needs some that the
    host's Python may not), on the host's network. The dependencies' wheels are kept between runs (once per
    pyproject.toml: then no index is asked); labcloud's own is built from the context every time."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + BASE.encode()).hexdigest()[:16]
    deps = cache() / "wheels" / key
    deps.mkdir(parents=True, exist_ok=True)
    offline = ["--no-index"] if (deps / "ready").exists() else []  # the first time: PyPI
    # The host's certificate authorities (PyPI may be reached through a TLS-inspecting proxy with its own CA)
    authorities = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile or CA_BUNDLE
    docker.run(
        "run", "--rm", "--network=host", "-v", f"{deps}:/deps", "-v", f"{context}:/ctx",
        "-v", f"{authorities}:/host-ca.pem:ro", "-e", "PIP_CERT=/host-ca.pem", "-e", "PIP_DEFAULT_TIMEOUT=60",
        BASE, "sh", "-c",
        "python3 -m venv /tmp/venv && /tmp/venv/bin/pip wheel -q --disable-pip-version-check "
        f"{' '.join(offline)} --find-links /deps --wheel-dir /deps '/ctx' 'setuptools>=77' wheel",
        timeout=1200,
    )  # fmt: skip
    (deps / "ready").touch()
    wheels = context / "deploy" / "wheels"
    for wheel in deps.glob("*.whl"):
        if wheel.name.startswith("labcloud-"):
            shutil.move(wheel, wheels / wheel.name)
        else:
            os.link(wheel, wheels / wheel.name)


def build_context(target: Path) -> Path:
    """The repository as the image build sees it (what .dockerignore lets through), deploy/wheels empty."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (target / "deploy" / "wheels").mkdir(parents=True)
    shutil.copy2(ROOT / "deploy" / "Dockerfile", target / "deploy" / "Dockerfile")
    return target


def test_the_image_builds_offline_and_serves_as_an_unprivileged_user(
    docker_cli: EngineCLI, tmp_path: Path
) -> None:
    base = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-base-image.sh"), "docker", "--", *docker_cli.argv],
        env=docker_cli.environ(), capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert base.returncode == 0, base.stdout + base.stderr
    context = build_context(tmp_path / "context")
    wheelhouse(docker_cli, context)
    started = time.monotonic()
    docker_cli.run(
        "build", "--pull=false", "--network=none", "-f", str(context / "deploy" / "Dockerfile"),
        "--build-arg", f"BASE={BASE}", "-t", TAG, str(context), timeout=900,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"docker build took {took:.0f} s")
    try:
        user = docker_cli.run("image", "inspect", "--format", "{{.Config.User}}", TAG).stdout.strip()
        assert user == "labcloud:labcloud"
        uid = docker_cli.run("run", "--rm", "--network=none", "--entrypoint", "id", TAG, "-u").stdout.strip()
        assert uid != "0" and int(uid) >= 1000, uid

        # The server on this machine's network (the private dockerd has no bridge), its own data dir.
        port = free_port()
        name = f"labcloud-deploy-{port}"
        docker_cli.run(
            "run", "-d", "--name", name, "--network=host", "-e", "LABCLOUD_LOG_LEVEL=warning",
            TAG, "serve", "--host", "127.0.0.1", "--port", str(port),
        )  # fmt: skip
        try:

            def healthy() -> bool:
                running = docker_cli.run("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
                assert running == "true", docker_cli.run("logs", name, check=False).stderr
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            eventually(healthy, 120, "the container's server to answer /healthz", interval=0.2)
            # its data dir is the image's volume, private to its user
            mode = docker_cli.run("exec", name, "stat", "-c", "%U %a", "/var/lib/labcloud").stdout.split()
            assert mode == ["labcloud", "700"], mode
        finally:
            docker_cli.run("rm", "-f", name, check=False)

        # With the worker's allowances in compose.yaml, bubblewrap starts a job sandbox in the container.
        probe = "from labcloud.execution.sandbox import sandbox_problem; print(sandbox_problem())"
        allowed = docker_cli.run(
            "run", "--rm", "--network=none", "--security-opt", "seccomp=unconfined",
            "--security-opt", "systempaths=unconfined", "--entrypoint", "python3", TAG, "-c", probe,
        )  # fmt: skip
        assert allowed.stdout.strip() == "None", allowed.stdout + allowed.stderr
    finally:
        docker_cli.run("rmi", "-f", TAG, check=False)

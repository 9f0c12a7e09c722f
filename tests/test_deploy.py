"""The deployment kit in deploy/: the systemd units (checked by systemd's own tools, and the sandbox they
must allow), the compose file (every cross-reference, and every setting it gives labcloud is one labcloud
reads) and the image (built with the suite's private dockerd from a root file system made here; its server
answers /healthz). The nginx site has a module of its own: tests/test_nginx_proxy.py."""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from labcloud import cli
from labcloud.execution import sandbox
from labcloud.execution.sandbox import SandboxPolicy, wrap_command
from labcloud.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLED = "/opt/labcloud/venv/bin/labcloud"  # where the units expect labcloud
SERVICES = ["labcloud@.service", "labcloud-worker.service", "labcloud-celery-worker.service"]
NOBODY = 65534
# Each of these breaks the jobs' bubblewrap sandbox (see the comment in labcloud@.service).
BREAKS_SANDBOX = (
    "RestrictNamespaces",
    "PrivateUsers",
    "ProtectKernelTunables",
    "ProtectKernelLogs",
    "ProtectProc",
)


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing (Debian package systemd)"
    return found


def unit(name: str) -> dict[str, str]:
    """The [Service] section of a unit (its last value for each key)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return dict(parser["Service"])


@pytest.fixture
def installed_units(tmp_path: Path) -> Path:
    """The units as installed on this machine: labcloud where this test's venv has it (systemd checks that
    ExecStart exists), the server's template instantiated for port 8001."""
    here = Path(sys.executable).parent / "labcloud"
    assert here.exists(), here
    for name in SERVICES:
        text = (UNITS / name).read_text()
        assert INSTALLED in text, f"{name} no longer starts {INSTALLED}"
        target = "labcloud@8001.service" if name == "labcloud@.service" else name
        (tmp_path / target).write_text(text.replace(INSTALLED, str(here)))
    return tmp_path


def installed_names() -> list[str]:
    return ["labcloud@8001.service", "labcloud-worker.service", "labcloud-celery-worker.service"]


def test_systemd_verifies_the_units(installed_units: Path) -> None:
    """``systemd-analyze verify`` loads each unit as systemd would: an unknown key or section, a bad value or
    a missing program is reported (a warning on stderr, or a non-zero exit)."""
    paths = [str(installed_units / name) for name in installed_names()]
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *paths],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stdout + r.stderr


def test_the_units_are_hardened_as_far_as_the_sandbox_allows(installed_units: Path) -> None:
    for name in installed_names():
        # systemd's own exposure score (0 safest, 10 unprotected); above 5.0 fails
        r = subprocess.run(
            [tool("systemd-analyze"), "security", "--offline=yes", "--threshold=50", "--no-pager",
             str(installed_units / name)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    for name in SERVICES:
        service = unit(name)
        assert service["User"] == "labcloud" and service["NoNewPrivileges"] == "yes", name
        assert service["ProtectSystem"] == "strict" and service["CapabilityBoundingSet"] == "", name
        assert service["StateDirectory"].startswith("labcloud"), name
        assert "AF_NETLINK" in service["RestrictAddressFamilies"], name
        assert not [key for key in BREAKS_SANDBOX if key in service], name


def test_the_service_user_is_created_by_sysusers(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    r = subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", str(UNITS / "labcloud.sysusers.conf")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (entry,) = [
        line for line in (tmp_path / "etc/passwd").read_text().splitlines() if line.startswith("labcloud:")
    ]
    assert entry.endswith(":/var/lib/labcloud:/usr/sbin/nologin"), entry
    assert int(entry.split(":")[2]) < 1000  # a system user


@pytest.fixture
def open_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="labcloud-units-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_job_sandbox_starts_without_any_privilege(
    open_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the units leave a server or worker: an ordinary user, no-new-privileges, no capability at all
    (not even in the bounding set). labcloud's own bwrap command line still starts a job there, whose
    folder is writable and nothing else."""
    # The job is a shell command: not the Python labcloud runs from, which this user may not reach here (a
    # test machine's Python can live in root's home; installed as the units expect, it is in /opt).
    monkeypatch.setattr(sandbox, "software_paths", lambda: ())
    job = open_folder / "job"
    job.mkdir()
    canary = open_folder / "canary"
    canary.write_text("untouched")
    canary.chmod(0o666)  # anyone may write it, outside a sandbox
    shutil.chown(job, NOBODY, NOBODY)
    command = wrap_command(
        ["sh", "-c", f"echo ran > {job}/out; echo changed > {canary}; cat /proc/self/status"],
        SandboxPolicy(writable=(job,), hidden=()),
        job,
    )
    unprivileged = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
    ]  # fmt: skip
    r = subprocess.run([*unprivileged, *command], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and (job / "out").read_text() == "ran\n", r.stderr
    assert canary.read_text() == "untouched"
    status = dict(line.split(":\t", 1) for line in r.stdout.splitlines() if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1" and status["CapEff"].strip() == "0" * 16, status


# -- the compose file -------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yaml"
LABCLOUD_IMAGE_SERVICES = ("migrate", "server-1", "server-2", "worker")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    return loaded


def labcloud_reads(command: str) -> set[str]:
    """The LABCLOUD_* variables a labcloud command reads: every setting, and the command's own options."""
    names = {f"LABCLOUD_{name.upper()}" for name in Settings.model_fields}
    group = typer.main.get_command(cli.app)
    for param in group.commands[command].params:  # type: ignore[attr-defined]
        envvar = getattr(param, "envvar", None)
        names |= {envvar} if isinstance(envvar, str) else set(envvar or ())
    return names


def test_the_compose_file_holds_together() -> None:
    """Checked by reading it (no compose tool is on the test machines; where one is, it checks the file
    too): every reference names something the file declares, every setting given to labcloud is one it
    reads, and what nginx's command rewrites is in the site file."""
    spec = compose()
    services: dict[str, Any] = spec["services"]
    assert {"postgres", "seaweedfs", "migrate", "server-1", "server-2", "nginx", "worker"} <= set(services)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), (name, depends)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):  # a file or folder beside compose.yaml
                assert source in ("./tls",) or (DEPLOY / source).exists(), (name, source)
            else:
                assert source in spec["volumes"], (name, source)
        networks = service.get("networks", [])
        assert set(networks) <= set(spec["networks"]), (name, networks)
        assert set(service.get("secrets", [])) <= set(spec.get("secrets", {})), name
    for name in LABCLOUD_IMAGE_SERVICES:
        service = services[name]
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        command = service["command"][0]
        unknown = {key for key in service["environment"] if key.startswith("LABCLOUD_")} - labcloud_reads(
            command
        )
        assert not unknown, f"{name} is given settings labcloud does not read: {sorted(unknown)}"
    # The worker holds no database or storage key: only its server and its token.
    assert not [key for key in services["worker"]["environment"] if "DATABASE" in key or "S3" in key]
    # Only nginx's forwarded headers are believed, and it has that address.
    nginx_address = services["nginx"]["networks"]["front"]["ipv4_address"]
    assert json.loads(services["server-1"]["environment"]["LABCLOUD_TRUSTED_PROXIES"]) == [nginx_address]
    subnet = spec["networks"]["front"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(nginx_address) in ipaddress.ip_network(subnet)
    site = (DEPLOY / "nginx" / "labcloud.conf").read_text()
    rewrite = " ".join(services["nginx"]["command"])
    for original in re.findall(r"s/([^/]+)/", rewrite):
        assert original.replace("\\.", ".") in site, original
    assert "server-1:8000" in rewrite and "server-2:8000" in rewrite
    assert "/etc/ssl/labcloud/fullchain.pem" in site  # where the tls folder is mounted
    # Every variable the file takes from .env is in env.example.
    example = (DEPLOY / "env.example").read_text()
    for variable in set(VARIABLE.findall(COMPOSE.read_text())):
        assert re.search(rf"^#? ?{variable}=", example, re.MULTILINE), variable
    for tool_command in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(tool_command[0])
            and subprocess.run([*tool_command, "version"], capture_output=True).returncode == 0
        ):
            env = {
                **os.environ,
                **dict(line.split("=", 1) for line in example.splitlines() if re.match(r"^[A-Z_]+=.", line)),
            }
            r = subprocess.run(
                [*tool_command, "-f", str(COMPOSE), "config", "--quiet"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            assert r.returncode == 0, r.stderr

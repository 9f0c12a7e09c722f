"""What a newcomer meets first: the README's run command on a fresh copy of the repository, with the relative
default data dir, and ``labcloud admin`` run from another folder. Relative paths in the settings are made
absolute once, when settings load, and the commands say which data dir they use."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import backend, kill_processes_under
from labcloud.execution.executors.slurm.settings import SlurmSettings
from labcloud.settings import Settings, config_path_from_env, home_from_env
from live_server import clean_env, eventually, free_port

REPO = Path(__file__).resolve().parent.parent
LABCLOUD = [sys.executable, "-m", "labcloud.cli"]
FIRST_ADMIN = "admin@labcloud.local"  # the default initial_admin_email


# -- settings ------------------------------------------------------------------------------------------


def test_relative_paths_are_absolute_once_settings_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "start"
    here.mkdir()
    monkeypatch.chdir(here)
    for name in [n for n in os.environ if n.startswith("LABCLOUD_")]:
        monkeypatch.delenv(name)

    default = Settings()
    assert default.home == here / "labcloud-data"
    assert home_from_env() == here / "labcloud-data"
    assert config_path_from_env() == here / "labcloud-data" / "labcloud.toml"
    assert default.effective_database_url == f"sqlite:///{here / 'labcloud-data' / 'labcloud.sqlite3'}"
    assert default.effective_apps_dir == here / "labcloud-data" / "apps"

    (here / "conf.toml").write_text('apps_dir = "my-apps"\n')
    monkeypatch.setenv("LABCLOUD_CONFIG", "conf.toml")
    monkeypatch.setenv("LABCLOUD_HOME", "data/../data2")
    monkeypatch.setenv("LABCLOUD_SLURM_REST_TOKEN_FILE", "secrets/jwt")
    monkeypatch.setenv("LABCLOUD_DATABASE_URL", "sqlite:///db/lab.sqlite3")
    s = Settings()
    assert config_path_from_env() == here / "conf.toml"
    assert home_from_env() == here / "data2"
    assert s.home == here / "data2"
    assert s.apps_dir == here / "my-apps"  # from the file: against the folder of the start, as the others
    assert SlurmSettings().rest_token_file == here / "secrets" / "jwt"  # a plugin's path setting too
    assert s.database_url == f"sqlite:///{here / 'db' / 'lab.sqlite3'}"
    assert s.jobs_dir == here / "data2" / "jobs"

    # once loaded, they no longer depend on the working directory
    monkeypatch.chdir(tmp_path)
    assert s.home == here / "data2" and s.jobs_dir.is_absolute()

    for url in ("sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@h/db", "sqlite:////abs/x.db"):
        assert Settings(database_url=url).database_url == url


def test_the_database_is_named_without_its_password(tmp_path: Path) -> None:
    from labcloud.runtime import database_location

    pg = Settings(home=tmp_path, database_url="postgresql+psycopg://lab:s3cret@db.example.org:5432/lab")
    assert database_location(pg) == "postgresql+psycopg://lab:***@db.example.org:5432/lab"
    in_query = Settings(
        home=tmp_path, database_url="postgresql+psycopg://lab@db/lab?password=s3cret&sslmode=require"
    )
    assert "s3cret" not in database_location(in_query) and "sslmode=require" in database_location(in_query)
    assert database_location(Settings(home=tmp_path)) == str(tmp_path / "labcloud.sqlite3")


# -- labcloud admin from another folder ------------------------------------------------------------------


def test_admin_create_user_from_another_folder_names_the_data_dir_it_wrote_to(tmp_path: Path) -> None:
    """With the default (relative) home, a user created from another folder lands in another database; the
    command says where, and that it made a new one, instead of a bare success."""
    server_folder, other_folder = tmp_path / "server", tmp_path / "elsewhere"
    server_folder.mkdir()
    other_folder.mkdir()
    env = clean_env()

    def create(folder: Path, email: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LABCLOUD, "admin", "create-user", email, "--password-stdin"],
            cwd=folder,
            env=env,
            input="a-long-password\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    try:
        r = create(server_folder, "first@example.org")
        assert r.returncode == 0, r.stderr
        home = server_folder / "labcloud-data"
        assert f"created user first@example.org in {home / 'labcloud.sqlite3'}\n" in r.stderr
        assert f"there was no database in the data dir {home}" in r.stderr
        assert f"  data dir: {home}\n" in r.stderr  # the first-admin banner of the new database names it

        r = create(server_folder, "second@example.org")
        assert r.returncode == 0, r.stderr
        assert f"created user second@example.org in {home / 'labcloud.sqlite3'}\n" in r.stderr
        assert "there was no database" not in r.stderr and "created the first administrator" not in r.stderr

        r = create(other_folder, "lost@example.org")
        assert r.returncode == 0, r.stderr
        elsewhere = other_folder / "labcloud-data"
        assert f"created user lost@example.org in {elsewhere / 'labcloud.sqlite3'}\n" in r.stderr
        assert f"there was no database in the data dir {elsewhere}" in r.stderr
        assert f"  data dir: {elsewhere}\n" in r.stderr
    finally:
        kill_processes_under(tmp_path)


def test_admin_create_user_names_the_configured_database(
    tmp_path: Path, database_url: str, settings: Settings
) -> None:
    """On the suite's database (SQLite file or PostgreSQL), the message names it, never with a password."""
    env = {**clean_env(), "LABCLOUD_HOME": str(settings.home), "LABCLOUD_DATABASE_URL": database_url}
    shown = database_url
    if backend() == "postgresql":  # a password the server does not ask for (trust) must not be printed
        env["LABCLOUD_DATABASE_URL"] = database_url.replace("://postgres@", "://postgres:pw-not-shown@")
        shown = database_url.replace("://postgres@", "://postgres:***@")
    else:
        shown = database_url.removeprefix("sqlite:///")
    r = subprocess.run(
        [*LABCLOUD, "admin", "create-user", "named@example.org", "--password-stdin"],
        cwd=tmp_path,
        env=env,
        input="a-long-password\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"created user named@example.org in {shown}\n" in r.stderr
    assert "pw-not-shown" not in r.stdout + r.stderr
    assert "there was no database" not in r.stderr


# -- the README's run command ------------------------------------------------------------------------------


def fresh_copy(dest: Path) -> Path:
    """The files git tracks, as they are in the working tree (uncommitted edits included), copied to
    ``dest``: what a fresh clone of this code holds, without the .venv, data dir or caches around it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        relative = os.fsdecode(name)
        source = REPO / relative
        if source.is_symlink() or source.is_file():  # deleted files and submodules are not copied
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / relative, follow_symlinks=False)
    return dest


class RunCommand:
    """``bash scripts/run.sh ARGS`` started from the root of ``checkout``, in a process group of its own."""

    def __init__(self, checkout: Path, log: Path, env: dict[str, str]) -> None:
        self.checkout, self.log, self.env = checkout, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "scripts/run.sh", *args],
                cwd=self.checkout,
                env=env or self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float) -> None:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "run.sh exited:\n" + self.output()
            try:
                return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout, "the server of scripts/run.sh to be ready", interval=0.5)

    def stop(self) -> None:
        """TERM to the whole process group (run.sh, pip, the server), then KILL if it lingers."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group lingers
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    root = fresh_copy(tmp_path / "labcloud")
    yield root
    kill_processes_under(root)  # job supervisors outlive the server on purpose


@pytest.mark.db_agnostic
def test_the_readme_run_command_runs_every_demo_app(checkout: Path, tmp_path: Path) -> None:
    """A newcomer's first minutes: ``bash scripts/run.sh`` in a fresh copy (it makes .venv and installs into
    it), the first admin's password from its output, then the CLI of that .venv: log in, upload a sample
    trace, run hello, spikes and lif to success and download their outputs. A second start does not run pip;
    a start after the sources changed installs them again, deleted files gone."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip_log = tmp_path / "pip.log"  # pip appends to $PIP_LOG whenever it runs
    env["PIP_LOG"] = str(pip_log)
    run = RunCommand(checkout, tmp_path / "run.log", env)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    client_env = {**env, "LABCLOUD_CLIENT_CONFIG": str(client_dir / "client.json"), "COLUMNS": "200"}
    home = checkout / "labcloud-data"

    def labcloud(*args: str, stdin: str | None = None) -> str:
        r = subprocess.run(
            [str(checkout / ".venv" / "bin" / "labcloud"), *args],
            cwd=client_dir,
            env=client_env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, (
            f"labcloud {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}\n"
            f"server output:\n{run.output()[-6000:]}"
        )
        return r.stdout

    try:
        run.start("--port", str(port))
        run.wait_ready(url, timeout=900)  # a fresh .venv: pip installs everything (from its cache, mostly)
        first = run.output()
        assert pip_log.exists()
        password = re.search(r"^  password: (\S+)$", first, re.MULTILINE)
        assert password is not None, first

        labcloud(
            "login", "--server", url, "--email", FIRST_ADMIN, "--password-stdin", stdin=password.group(1)
        )
        trace = checkout / "src" / "labcloud_demo" / "samples" / "trace.csv"
        labcloud("upload", str(trace), "--to", "samples")
        submitted = {
            "hello": ["hello", "-p", "name=Newcomer", "-p", "times=2"],
            "spikes": ["spikes", "-i", "trace=samples/trace.csv"],
            "lif": ["lif", "-p", "values=4,8", "-p", "neurons=100", "-p", "duration_ms=200"],
        }
        jobs = {}
        for app, args in submitted.items():  # --wait: exit status 1 unless the job succeeds
            job = json.loads(labcloud("submit", *args, "--wait", "--json"))
            assert (job["app"], job["state"]) == (app, "succeeded"), job
            jobs[app] = job["id"]
        downloaded = {
            app: {
                Path(item["local"]).name: Path(item["local"])
                for item in json.loads(labcloud("download", job_id, str(tmp_path / "out" / app), "--json"))
            }
            for app, job_id in jobs.items()
        }
        assert downloaded["hello"]["greeting.txt"].read_text().count("Newcomer") == 2
        assert json.loads(downloaded["spikes"]["summary.json"].read_text())["n_spikes"] > 0
        assert downloaded["spikes"]["spikes.png"].read_bytes().startswith(b"\x89PNG")
        assert len(downloaded["lif"]["rates.csv"].read_text().strip().splitlines()) == 3  # header and 2 rows
        # the first start named its data dir (absolute), in its log and in the first admin's banner
        assert f"data dir {home}; database {home / 'labcloud.sqlite3'}" in first
        assert f"  data dir: {home}\n" in first
        run.stop()

        # A second start with nothing changed: no pip at all, the same data dir, no new first admin.
        pip_log.unlink()
        run.start("--port", str(port))
        run.wait_ready(url, timeout=120)
        assert not pip_log.exists(), "pip ran on a start with nothing changed:\n" + run.output()
        assert "created the first administrator account" not in run.output()
        listed = json.loads(labcloud("jobs", "--json"))["items"]
        assert sorted((j["id"], j["state"]) for j in listed) == sorted(
            (i, "succeeded") for i in jobs.values()
        )
        run.stop()

        # Sources changed (one file edited, one deleted): the next start installs the checkout as it is.
        init = checkout / "src" / "labcloud" / "__init__.py"
        init.write_text(init.read_text() + "# edited after the first install\n")
        (checkout / "src" / "labcloud_demo" / "samples" / "spike_times.txt").unlink()
        run.start("--help")  # installs, then `labcloud serve --help` ends at once
        assert run.proc is not None and run.proc.wait(timeout=900) == 0, run.output()
        assert pip_log.exists()
        site = next((checkout / ".venv" / "lib").glob("python3*/site-packages"))
        assert (site / "labcloud" / "__init__.py").read_text() == init.read_text()
        assert not (site / "labcloud_demo" / "samples" / "spike_times.txt").exists()
        assert (site / "labcloud_demo" / "samples" / "trace.csv").exists()
    finally:
        run.stop()

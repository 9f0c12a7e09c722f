"""The supervised process layer: real jobs, real signals, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import labcloud
from labcloud.execution.process import (
    Handle,
    LaunchSpec,
    Limits,
    cancel,
    is_alive,
    launch,
    read_result,
)
from labcloud.execution.sandbox import SandboxPolicy, bwrap_path, sandbox_problem
from labcloud.execution.watch import run, watch

PY = sys.executable
SRC = Path(labcloud.__file__).resolve().parents[1]

# Run a test both without and with the sandbox; the sandboxed run fails (not skips) without bwrap.
sandbox_modes = pytest.mark.parametrize(
    "sandboxed",
    [pytest.param(False, id="plain"), pytest.param(True, id="sandbox", marks=pytest.mark.sandbox)],
)


class Recorder:
    """An Observer that keeps everything it is told."""

    def __init__(self, cancel_when: Callable[[Recorder], bool] | None = None) -> None:
        self.chunks: list[str] = []
        self.progress: list[float] = []
        self.cancel_when = cancel_when
        self.cancel_polls = 0

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def on_output(self, text: str) -> None:
        self.chunks.append(text)

    def on_progress(self, fraction: float) -> None:
        self.progress.append(fraction)

    def should_cancel(self) -> bool:
        self.cancel_polls += 1
        return self.cancel_when is not None and self.cancel_when(self)


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def make_spec(
    tmp_path: Path,
    argv: list[str],
    *,
    limits: Limits | None = None,
    sandboxed: bool = False,
    env: dict[str, str] | None = None,
) -> LaunchSpec:
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    if sandboxed:
        assert bwrap_path() is not None, f"bubblewrap is required: {sandbox_problem()}"
    return LaunchSpec(
        argv=argv,
        cwd=job,
        env={"PATH": os.environ.get("PATH", os.defpath), "PYTHONUNBUFFERED": "1", **(env or {})},
        log_path=tmp_path / "job.log",
        status_path=tmp_path / "status.json",
        limits=limits or Limits(timeout_s=30, grace_s=1),
        sandbox=SandboxPolicy(writable=(job,), hidden=()) if sandboxed else None,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``LABCLOUD_TEST_MARK=<marker>`` (zombies have none)."""
    needle = f"LABCLOUD_TEST_MARK={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                continue
    return found


# --- output, progress, exit codes ---------------------------------------------------------------------


def test_exit_code_and_interleaved_output_in_order(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(40):
            stream = sys.stdout if i % 2 == 0 else sys.stderr
            print(f"line {i}", file=stream, flush=True)
    """
    spec = make_spec(tmp_path, py(code))
    rec = Recorder()
    result = run(spec, rec)
    assert result.outcome == "exited"
    assert result.exit_code == 0
    assert result.message == "exited with code 0"
    assert rec.text.splitlines() == [f"line {i}" for i in range(40)]
    assert spec.log_path.read_text() == rec.text
    assert 0 < result.wall_s < 10


def test_progress_lines_are_parsed(tmp_path: Path) -> None:
    code = """
        import time
        for line in ["::progress 0.1", "working", "::progress 0.25", "::progress 1.5", "::progress abc",
                     "::progress -0.1", "::progress nan", "say ::progress 0.3", "::progress 0.5",
                     "  ::progress 0.75  ", "::progress 1"]:
            print(line, flush=True)
            time.sleep(0.01)
    """
    rec = Recorder()
    result = run(make_spec(tmp_path, py(code)), rec)
    assert result.outcome == "exited"
    assert rec.progress == [0.1, 0.25, 0.5, 0.75, 1.0]
    assert rec.progress == sorted(rec.progress)
    assert "::progress 0.25\n" in rec.text  # progress lines stay in the log


def test_nonzero_exit_code_is_kept(tmp_path: Path) -> None:
    result = run(make_spec(tmp_path, ["sh", "-c", "echo failing; exit 3"]), Recorder())
    assert (result.outcome, result.exit_code) == ("exited", 3)
    assert result.message == "exited with code 3"


def test_killed_by_signal_is_a_negative_exit_code(tmp_path: Path) -> None:
    result = run(
        make_spec(tmp_path, py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")), Recorder()
    )
    assert (result.outcome, result.exit_code) == ("exited", -9)
    assert result.message == "killed by SIGKILL"


def test_unterminated_last_line_is_delivered(tmp_path: Path) -> None:
    rec = Recorder()
    run(make_spec(tmp_path, ["printf", "first\\nno newline"]), rec)
    assert rec.text == "first\nno newline"


def test_unterminated_line_is_delivered_while_running(tmp_path: Path) -> None:
    # A prompt or a progress bar redrawn with \r never ends its line; it still shows up after a moment.
    code = """
        import os, sys, time
        sys.stdout.write("Enter value: ")
        sys.stdout.flush()
        while not os.path.exists("go"):
            time.sleep(0.01)
        print("done")
    """
    spec = make_spec(tmp_path, py(code))

    def answer_prompt(rec: Recorder) -> bool:
        if rec.text == "Enter value: ":
            (spec.cwd / "go").touch()
        return False

    rec = Recorder(cancel_when=answer_prompt)
    assert run(spec, rec).outcome == "exited"
    assert rec.chunks[0] == "Enter value: "
    assert rec.text == "Enter value: done\n"


def test_environment_and_cwd_are_the_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_SERVER_SECRET", "do-not-leak")
    code = "import os, json; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
    rec = Recorder()
    spec = make_spec(tmp_path, py(code), env={"JOB_VAR": "42"})
    assert run(spec, rec).outcome == "exited"
    seen = json.loads(rec.text)
    assert seen["cwd"] == str(spec.cwd)
    assert seen["env"]["JOB_VAR"] == "42"
    assert "LABCLOUD_SERVER_SECRET" not in seen["env"]


def test_launch_removes_a_stale_status(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ["sh", "-c", "exit 5"])
    spec.status_path.write_text(json.dumps({"outcome": "exited", "exit_code": 0}))
    assert run(spec, Recorder()).exit_code == 5


# --- start failures -----------------------------------------------------------------------------------


@sandbox_modes
def test_command_not_found_is_start_failed(tmp_path: Path, sandboxed: bool) -> None:
    spec = make_spec(tmp_path, ["labcloud-no-such-command", "--flag"], sandboxed=sandboxed)
    rec = Recorder()
    result = run(spec, rec)
    assert result.outcome == "start_failed"
    assert result.exit_code is None
    assert result.message == "command not found: labcloud-no-such-command"
    assert "[labcloud] command not found: labcloud-no-such-command\n" in spec.log_path.read_text()
    assert "command not found" in rec.text


@sandbox_modes
def test_command_not_executable_is_start_failed(tmp_path: Path, sandboxed: bool) -> None:
    script = tmp_path / "job" / "script.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho hi\n")  # no x bit
    result = run(make_spec(tmp_path, [str(script)], sandboxed=sandboxed), Recorder())
    assert result.outcome == "start_failed"
    assert result.message == f"command not executable: {script}"


def test_missing_working_directory_is_start_failed(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, ["true"])
    spec.cwd.rmdir()
    result = run(spec, Recorder())
    assert result.outcome == "start_failed"
    assert result.message.startswith(f"cannot use working directory {spec.cwd}")


# --- limits -------------------------------------------------------------------------------------------

IGNORE_TERM = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_timeout_sends_term_then_kill(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, py(IGNORE_TERM), limits=Limits(timeout_s=0.5, grace_s=0.5))
    rec = Recorder()
    t0 = time.monotonic()
    result = run(spec, rec)
    elapsed = time.monotonic() - t0
    assert result.outcome == "timeout"
    assert result.exit_code is None
    assert result.message == "time limit of 0.5 s exceeded"
    assert 0.95 <= result.wall_s <= 1.6
    assert elapsed <= 2.0
    log = spec.log_path.read_text()
    assert "ready\n" in log
    assert "[labcloud] time limit of 0.5 s exceeded; sending SIGTERM (SIGKILL in 0.5 s)" in log
    assert "sending SIGKILL" in log


def test_timeout_gives_the_job_its_term(tmp_path: Path) -> None:
    code = """
        import signal, sys, time
        def bye(*_):
            print("got TERM, cleaning up", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
    """
    spec = make_spec(tmp_path, py(code), limits=Limits(timeout_s=0.5, grace_s=5))
    result = run(spec, Recorder())
    assert result.outcome == "timeout"
    assert result.wall_s < 3  # it left on TERM: no need to wait for the grace period
    log = spec.log_path.read_text()
    assert "got TERM, cleaning up" in log
    assert "sending SIGKILL" not in log


def test_memory_limit_kills_the_job(tmp_path: Path) -> None:
    code = """
        import time
        chunks = []
        for _ in range(30):                        # 300 MB, touched, in 10 MB steps
            chunks.append(b"x" * (10 * 2**20))
            time.sleep(0.005)
        print("allocated everything", flush=True)
        time.sleep(30)
    """
    spec = make_spec(tmp_path, py(code), limits=Limits(timeout_s=20, memory_mb=100, grace_s=1))
    result = run(spec, Recorder())
    assert result.outcome == "out_of_memory"
    assert result.message.startswith("memory limit of 100 MB exceeded (using ")
    assert result.peak_memory_mb > 100
    assert result.wall_s < 10
    assert "[labcloud] memory limit of 100 MB exceeded" in spec.log_path.read_text()


@pytest.mark.parametrize("memory_mb", [1000, None])
def test_peak_memory_is_plausible(tmp_path: Path, memory_mb: int | None) -> None:
    code = """
        import time
        block = b"x" * (80 * 2**20)
        time.sleep(0.3)
    """
    result = run(make_spec(tmp_path, py(code), limits=Limits(memory_mb=memory_mb)), Recorder())
    assert result.outcome == "exited"
    assert 80 <= result.peak_memory_mb <= 200


BURN = "import time\nwhile time.process_time() < 0.5: pass"


def test_cpu_time_of_a_busy_loop(tmp_path: Path) -> None:
    result = run(make_spec(tmp_path, py(BURN)), Recorder())
    assert result.outcome == "exited"
    assert 0.3 <= result.cpu_s < 5


@sandbox_modes
def test_cpu_time_includes_orphans_and_leftovers(tmp_path: Path, sandboxed: bool) -> None:
    # The busy grandchild is double-forked into its own session (its parent never waits for it) and is
    # still burning CPU when the job's main process exits; it is killed then, and its CPU time counted.
    code = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while time.process_time() < 0.4:
                    pass
                open("burnt", "w").close()
                while True:
                    pass
            os._exit(0)
        while not os.path.exists("burnt"):
            time.sleep(0.01)
    """
    result = run(make_spec(tmp_path, py(code), sandboxed=sandboxed), Recorder())
    assert result.outcome == "exited"
    assert result.cpu_s >= 0.35
    assert "[labcloud] killed 1 process(es) the job left running" in (tmp_path / "job.log").read_text()


# --- cancel and process trees -------------------------------------------------------------------------


def test_cancel_mid_run_keeps_partial_output(tmp_path: Path) -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (print("stopping early", flush=True), sys.exit(1)))
        for i in range(600):
            print(f"step {i}", flush=True)
            time.sleep(0.05)
    """
    spec = make_spec(tmp_path, py(code), limits=Limits(timeout_s=60, grace_s=2))
    rec = Recorder(cancel_when=lambda r: "step 3\n" in r.text)
    result = run(spec, rec)
    assert result.outcome == "cancelled"
    assert result.message == "cancelled"
    assert result.wall_s < 10
    log = spec.log_path.read_text()
    assert "step 3\n" in log
    assert "step 500" not in log
    assert "stopping early" in log
    assert "[labcloud] cancel requested; sending SIGTERM" in log
    assert rec.text == log  # everything written reached the observer


def test_cancel_function_with_kill_after_grace(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, py(IGNORE_TERM), limits=Limits(timeout_s=60, grace_s=0.3))
    handle = launch(spec)
    assert wait_until(lambda: "ready" in spec.log_path.read_text())
    cancel(handle)
    result = watch(handle, spec, Recorder())
    assert result.outcome == "cancelled"
    assert 0.25 <= result.wall_s < 5
    assert "sending SIGKILL" in spec.log_path.read_text()
    assert not is_alive(handle)
    cancel(handle)  # a no-op once the supervisor is gone


# A job leaving processes behind: a background child, a setsid'd double-forked daemon, and a child
# ignoring SIGTERM; then it either exits at once or waits to be cancelled.
SPAWNER = """
    import os, subprocess, sys, time
    subprocess.Popen(["sleep", "300"])
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        os._exit(0)
    print("spawned", flush=True)
    if sys.argv[1] == "wait":
        time.sleep(300)
"""


@sandbox_modes
@pytest.mark.parametrize("how", ["exit", "cancel", "timeout"])
def test_whole_process_tree_is_killed(tmp_path: Path, sandboxed: bool, how: str) -> None:
    marker = uuid.uuid4().hex
    argv = [*py(SPAWNER), "exit" if how == "exit" else "wait"]
    limits = Limits(timeout_s=1.0 if how == "timeout" else 60, grace_s=0.3)
    spec = make_spec(tmp_path, argv, sandboxed=sandboxed, limits=limits, env={"LABCLOUD_TEST_MARK": marker})
    rec = Recorder(cancel_when=lambda r: how == "cancel" and "spawned" in r.text)
    result = run(spec, rec)
    assert result.outcome == {"exit": "exited", "cancel": "cancelled", "timeout": "timeout"}[how]
    assert "spawned" in rec.text
    # The status is written only once the whole tree is gone and reaped.
    assert marked_processes(marker) == []


# --- surviving the server, re-attaching, losing the supervisor ----------------------------------------

SERVER = """
    import json, sys, time
    from pathlib import Path
    from labcloud.execution.process import LaunchSpec, Limits, launch
    d = json.loads(sys.argv[1])
    spec = LaunchSpec(argv=d["argv"], cwd=Path(d["cwd"]), env=d["env"], log_path=Path(d["log"]),
                      status_path=Path(d["status"]), limits=Limits(timeout_s=30), sandbox=None)
    print(launch(spec).to_json(), flush=True)
    time.sleep(60)
"""


def test_reattach_after_the_server_was_killed(tmp_path: Path) -> None:
    code = """
        import os, time
        print("before", flush=True)
        while not os.path.exists("go"):
            time.sleep(0.01)
        print("after", flush=True)
        raise SystemExit(7)
    """
    spec = make_spec(tmp_path, py(code))
    args = {"argv": spec.argv, "cwd": str(spec.cwd), "env": spec.env, "log": str(spec.log_path)}
    args["status"] = str(spec.status_path)
    server = subprocess.Popen(
        [*py(SERVER), json.dumps(args)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        start_new_session=True,
    )
    assert server.stdout is not None
    try:
        handle = Handle.from_json(server.stdout.readline().decode())
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the whole "server" process group, like a crash
        server.wait()
        server.stdout.close()
    assert is_alive(handle)
    assert wait_until(lambda: "before" in spec.log_path.read_text())

    # A new server: it only has the stored handle and the spec, and resumes the log where it was.
    offset = spec.log_path.stat().st_size
    (spec.cwd / "go").touch()
    rec = Recorder()
    result = watch(Handle.from_json(handle.to_json()), spec, rec, log_offset=offset)
    assert (result.outcome, result.exit_code) == ("exited", 7)
    assert rec.text == "after\n"
    assert not is_alive(handle)


@sandbox_modes
def test_killed_supervisor_is_lost_and_takes_the_job_along(tmp_path: Path, sandboxed: bool) -> None:
    marker = uuid.uuid4().hex
    spec = make_spec(
        tmp_path,
        ["sh", "-c", "sleep 300 & echo started; sleep 301"],
        sandboxed=sandboxed,
        env={"LABCLOUD_TEST_MARK": marker},
    )
    handle = launch(spec)
    assert wait_until(lambda: "started" in spec.log_path.read_text())
    assert len(marked_processes(marker)) >= 2
    os.kill(handle.pid, signal.SIGKILL)
    result = watch(handle, spec, Recorder())
    assert result.outcome == "lost"
    assert result.exit_code is None
    assert read_result(spec.status_path) is None
    assert wait_until(lambda: marked_processes(marker) == [], timeout=5)


# --- the warm launcher --------------------------------------------------------------------------------


WAIT_FOR_GO = """
    import os, time
    print("waiting", flush=True)
    while not os.path.exists("go"):
        time.sleep(0.01)
    raise SystemExit(7)
"""


def test_supervisors_are_forked_by_the_launcher_and_outlive_it(tmp_path: Path) -> None:
    from labcloud.execution import supervise
    from labcloud.execution.process import LAUNCHER

    assert LAUNCHER.enabled
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = make_spec(tmp_path / "first", py(WAIT_FOR_GO))
    handle = launch(first)
    launcher = LAUNCHER._proc
    assert launcher is not None and launcher.poll() is None
    info = supervise.read_stat(handle.pid)
    assert info is not None and info.ppid == launcher.pid
    assert info.session == handle.pid  # a session of its own: not the launcher's, not ours
    assert wait_until(lambda: "waiting" in first.log_path.read_text())

    launcher.kill()  # the launcher dies (a server that stops, or a crash): its supervisors run on
    launcher.wait()
    assert is_alive(handle)
    # The next launch starts another launcher.
    second = make_spec(tmp_path / "second", ["sh", "-c", "echo second"])
    result = run(second, Recorder())
    assert (result.outcome, result.exit_code) == ("exited", 0)
    assert LAUNCHER._proc is not None and LAUNCHER._proc.pid != launcher.pid

    (first.cwd / "go").touch()
    result = watch(handle, first, Recorder())
    assert (result.outcome, result.exit_code) == ("exited", 7)
    assert not is_alive(handle)


def test_without_the_launcher_each_supervisor_is_an_interpreter_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labcloud.execution import supervise
    from labcloud.execution.process import LAUNCHER

    monkeypatch.setattr(LAUNCHER, "enabled", False)
    spec = make_spec(tmp_path, py(WAIT_FOR_GO))
    handle = launch(spec)
    info = supervise.read_stat(handle.pid)
    assert info is not None and info.ppid == os.getpid()
    (spec.cwd / "go").touch()
    result = watch(handle, spec, Recorder())
    assert (result.outcome, result.exit_code) == ("exited", 7)


# --- handles ------------------------------------------------------------------------------------------


def test_handle_identity(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, py(IGNORE_TERM), limits=Limits(timeout_s=60, grace_s=0.1))
    handle = launch(spec)
    try:
        assert is_alive(handle)
        assert Handle.from_json(handle.to_json()) == handle
        # Same pid, different start time: a reused pid is not our supervisor, and is left alone.
        impostor = Handle(pid=handle.pid, create_time=handle.create_time + 1, boot_id=handle.boot_id)
        assert not is_alive(impostor)
        cancel(impostor)
        other_boot = Handle(pid=handle.pid, create_time=handle.create_time, boot_id="another-boot")
        assert not is_alive(other_boot)
        assert is_alive(handle)
    finally:
        cancel(handle)
    assert watch(handle, spec, Recorder()).outcome == "cancelled"
    assert not is_alive(handle)


def test_read_result_without_status(tmp_path: Path) -> None:
    assert read_result(tmp_path / "nothing.json") is None


def test_concurrent_jobs(tmp_path: Path) -> None:
    """Several watchers in threads, as the server runs them."""
    results: dict[int, int | None] = {}

    def one(i: int) -> None:
        d = tmp_path / str(i)
        d.mkdir()
        results[i] = run(make_spec(d, ["sh", "-c", f"echo {i}; exit {i}"]), Recorder()).exit_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i for i in range(8)}


def test_a_sandbox_that_met_a_vanishing_host_mount_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bubblewrap copies the host's mounts; one that goes away meanwhile (a container's) fails that copy
    before anything of the job ran. The supervisor starts the sandbox again, twice at most."""
    from labcloud.execution import supervise

    log = tmp_path / "job.log"
    spec = {"argv": ["true"], "cwd": str(tmp_path), "env": {}, "log_path": str(log), "sandboxed": True}
    spec["status_path"] = str(tmp_path / "status.json")
    vanished = {
        "outcome": "start_failed",
        "message": 'sandbox failed to start: Can\'t remount readonly on "/tmp/x/merged": Invalid argument',
    }
    tries: list[str] = []

    def once(self: supervise.Supervisor) -> dict[str, object]:
        tries.append("try")
        return vanished if len(tries) < 3 else {"outcome": "exited", "exit_code": 0, "message": "ok"}

    monkeypatch.setattr(supervise.Supervisor, "_run_once", once)
    monkeypatch.setattr(supervise, "_prctl", lambda *_: None)
    # (the supervisor's own signal handling is not for the test process)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    monkeypatch.setattr(signal, "set_wakeup_fd", lambda *_, **__: -1)
    assert supervise.Supervisor(spec).run()["outcome"] == "exited"
    assert len(tries) == 3 and log.read_text().count("starting it again") == 2
    tries.clear()
    monkeypatch.setattr(supervise.Supervisor, "_run_once", lambda self: vanished)
    assert supervise.Supervisor(spec).run() == vanished  # a third failure is the job's end
    other = {"outcome": "start_failed", "message": "command not found: nope"}
    monkeypatch.setattr(supervise.Supervisor, "_run_once", lambda self: other)
    assert supervise.Supervisor(spec).run() == other  # not the host's mounts: no second start


def test_the_supervisor_s_bytecode_is_cached_per_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two installations (another path, or other source bytes) never share a compiled supervisor: each
    gets its own cache file, whose bytecode names its own source file (as its tracebacks will)."""
    import marshal

    from labcloud.execution import process, supervise

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = Path(supervise.__file__).read_bytes()
    installs = {
        "first": (tmp_path / "one" / "supervise.py", source),
        "elsewhere": (tmp_path / "two" / "supervise.py", source),  # the same bytes at another path
        "changed": (tmp_path / "three" / "supervise.py", source + b"\n# another version\n"),
    }
    compiled: dict[str, Path] = {}
    for name, (path, data) in installs.items():
        path.parent.mkdir()
        path.write_bytes(data)
        monkeypatch.setattr(process, "SUPERVISOR_SCRIPT", path)
        process.supervisor_program.cache_clear()
        compiled[name] = Path(process.supervisor_program())
    process.supervisor_program.cache_clear()
    monkeypatch.undo()
    process.supervisor_program.cache_clear()  # (the real one again for the tests that follow)

    assert len(set(compiled.values())) == 3, compiled
    for name, pyc in compiled.items():
        assert pyc.parent == tmp_path / "cache" / "labcloud" and pyc.suffix == ".pyc", pyc
        code = marshal.loads(pyc.read_bytes()[16:])
        assert code.co_filename == str(installs[name][0]), (name, code.co_filename)


def test_a_server_with_more_than_1024_descriptors_open_still_runs_jobs(tmp_path: Path) -> None:
    """A busy server (hundreds of instruments long-polling, each a socket) holds descriptors past 1,024,
    where ``select()`` cannot wait. The job's ready pipe and its supervisor's pidfd get such numbers here:
    the job must still start and be followed to its end."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= 1400, f"the hard limit on descriptors is {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:  # the lowest free numbers are all taken: new ones come above
            held.append(os.open(os.devnull, os.O_RDONLY))
        spec = make_spec(tmp_path, py("print('ran past 1024')"))
        rec = Recorder()
        result = run(spec, rec)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.outcome == "exited" and result.exit_code == 0, result.message
    assert rec.text == "ran past 1024\n"

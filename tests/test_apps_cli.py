"""``labcloud apps check``: app files checked as the server loads them, on the author's machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from live_server import LABCLOUD
from testing.daemons import clean_env

GOOD = """\
name: tool
title: A wrapped tool
versions:
  "1.0":
    entrypoints:
      main:
        runtime: container
        image: registry.example.org/lab/tool:1
        command: [tool, --in, "{inputs.data}", --out, "{output}"]
        inputs:
          data: {type: file}
  "2.0":
    default_entrypoint: main
    entrypoints:
      main:
        runtime: container
        image: registry.example.org/lab/tool:2
        command: [tool, --in, "{inputs.data}", --level, "{params.level}", --out, "{output}"]
        parameters:
          type: object
          properties:
            level: {type: integer, default: 3}
        inputs:
          data: {type: file}
        container:
          workdir: /work
          user: "1000:1000"
          env: {TOOL_LEVEL: "{params.level}"}
      plot:
        command: [python, -c, "print('plot')"]
"""

BAD = """\
name: broken
versions:
  "1.0":
    entrypoints:
      noimage:
        runtime: container
        command: [run]
      rooted:
        runtime: container
        image: lab/tool:1
        command: [run]
        container:
          user: "0:0"
      flag:
        runtime: container
        image: "--privileged"
        command: [run]
"""


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABCLOUD, "apps", "check", *map(str, args)],
        env={**clean_env(), "COLUMNS": "80"},  # long lines stay whole, whatever the width
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_good_file_gets_a_line_per_app(tmp_path: Path) -> None:
    good = tmp_path / "tool.yaml"
    good.write_text(GOOD)
    done = check(good)
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == [
        f"{good}: tool — versions 2.0, 1.0 — entrypoints: main (container registry.example.org/lab/tool:2, "
        "container registry.example.org/lab/tool:1), plot (process)"
    ]
    listed = json.loads(check(good, "--json").stdout)
    [entry] = listed["files"]
    assert entry["ok"] is True and entry["app"] == "tool" and listed["problems"] == 0
    assert entry["entrypoints"][0] == {
        "version": "2.0",
        "entrypoint": "main",
        "runtime": "container",
        "image": "registry.example.org/lab/tool:2",
    }


def test_every_problem_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    good, bad = tmp_path / "tool.yaml", tmp_path / "broken.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    done = check(good, bad)
    assert done.returncode == 1, done
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{good}: tool — versions 2.0, 1.0")
    assert lines[1:] == [
        f'{bad}:5: versions["1.0"].entrypoints.noimage: a container entrypoint needs an image '
        "(image: REPOSITORY:TAG or @sha256:...)",
        f'{bad}:13: versions["1.0"].entrypoints.rooted.container.user: containers never run as root '
        "(uid or gid 0)",
        f"{bad}:16: versions[\"1.0\"].entrypoints.flag.image: image '--privileged' is not an image reference "
        "(e.g. registry.example.org/lab/tool:1.2, lab/tool@sha256:<64 hex>, sha256:<64 hex>)",
    ]
    assert "3 problem(s) in 1 of 2 file(s)" in done.stderr
    listed = json.loads(check(bad, "--json").stdout)
    assert listed["problems"] == 3 and [p["line"] for p in listed["files"][0]["problems"]] == [5, 13, 16]


def test_a_folder_is_checked_as_the_server_reads_it(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "a.yaml").write_text(GOOD)
    (apps / "b.yml").write_text(GOOD.replace("title: A wrapped tool", "title: The same app again"))
    (apps / ".swap.yaml").write_text("not: [an app")  # an editor's file, as the server skips it
    (apps / "notes.txt").write_text("not an app")
    done = check(apps)
    assert done.returncode == 1, done
    assert done.stdout.splitlines()[-1] == (
        f"{apps / 'b.yml'}:1: app 'tool' is also declared in a.yaml in the same folder"
    )
    assert len(done.stdout.splitlines()) == 2

    missing = check(tmp_path / "nope.yaml")
    assert missing.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read the file: No such file or directory" in missing.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = check(empty)
    assert nothing.returncode == 1 and "no app files found" in nothing.stderr

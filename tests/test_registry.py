"""The app registry: YAML app files → validated specs, hot reload, parameter checks, argv and environment.

Everything runs on real files in ``tmp_path``; ``min_check_interval_s=0`` makes every read check the
files, so no test sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from labcloud.errors import InvalidInput, NotFound
from labcloud.registry import (
    AppRegistry,
    EntrypointSpec,
    app_to_public,
    bundled_apps_dir,
    job_environment,
    render_command,
    validate_inputs,
    validate_params,
    version_key,
)

LOGGER = "labcloud.apps"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def app_text(
    name: str = "demo", version: str = "1.0", title: str = "Demo", command: str = "[echo, hi]"
) -> str:
    """A minimal valid app file."""
    return f"""
        name: {name}
        title: {title}
        versions:
          "{version}":
            entrypoints:
              run:
                command: {command}
        """


def entrypoint(**fields: Any) -> EntrypointSpec:
    return EntrypointSpec.model_validate({"command": ["echo"], **fields})


def registry(*dirs: Path) -> AppRegistry:
    return AppRegistry(list(dirs), min_check_interval_s=0)


def locs(exc: pytest.ExceptionInfo[InvalidInput]) -> list[list[Any]]:
    assert exc.value.errors is not None
    return [e["loc"] for e in exc.value.errors]


@pytest.fixture(scope="module")
def bundled() -> AppRegistry:
    return AppRegistry([bundled_apps_dir()])


SPIKES_PARAMS = ["threshold", "polarity", "refractory_ms", "rate", "low_hz", "high_hz"]


# -- the bundled demo apps ---------------------------------------------------------------------------


def test_bundled_apps_load_without_problems(bundled: AppRegistry) -> None:
    assert bundled.problems() == []
    assert [a.name for a in bundled.apps()] == ["hello", "lif", "spikes", "wordcount"]
    for app in bundled.apps():
        resolved = bundled.resolve(app.name, None, None)
        assert resolved.version == "1.0"
        assert resolved.entrypoint is app.versions["1.0"].entrypoints[resolved.entrypoint_name]
        assert len(resolved.spec_hash()) == 64
        # Every default of every bundled app passes its own schema.
        validate_params(resolved.entrypoint, {})
    assert bundled.resolve("spikes").entrypoint_name == "detect"


def test_public_view_has_what_a_form_needs(bundled: AppRegistry) -> None:
    view = app_to_public(bundled.get("spikes"))
    json.dumps(view)  # plain JSON data
    assert view["name"] == "spikes" and view["title"] == "Spike detection"
    assert view["latest_version"] == "1.0"
    version = view["versions"]["1.0"]
    assert version["default_entrypoint"] == "detect"
    detect = version["entrypoints"]["detect"]
    assert list(detect["parameters"]["properties"]) == SPIKES_PARAMS  # YAML order kept for the form
    assert detect["parameters"]["properties"]["threshold"]["default"] == 4.5
    assert detect["inputs"]["trace"]["type"] == "file" and detect["inputs"]["trace"]["required"] is True
    assert detect["resources"] == {"cpus": 1.0, "memory_mb": 512, "gpus": 0, "timeout_s": 600}
    assert detect["outputs"] == ["spikes.csv", "summary.json", "spikes.png"]
    assert {"description", "env", "network", "labels", "spec_hash"} <= set(detect)


def test_resolve_errors_name_what_exists(bundled: AppRegistry) -> None:
    with pytest.raises(NotFound, match=r"no app 'nope'; apps: hello, lif, spikes, wordcount"):
        bundled.get("nope")
    with pytest.raises(NotFound) as exc:
        bundled.resolve("spikes", "9.9", None)
    assert exc.value.detail == "App 'spikes' has no version '9.9'; versions: 1.0."
    with pytest.raises(NotFound, match=r"no entrypoint 'sort'; entrypoints: detect"):
        bundled.resolve("spikes", "1.0", "sort")


def test_default_entrypoint_rules(tmp_path: Path) -> None:
    two = """
        name: {name}
        versions:
          "1.0":
            {default}
            entrypoints:
              a: {{command: [echo, a]}}
              b: {{command: [echo, b]}}
        """
    write(tmp_path, "pick.yaml", two.format(name="pick", default="default_entrypoint: b"))
    write(tmp_path, "choose.yaml", two.format(name="choose", default=""))
    reg = registry(tmp_path)
    assert reg.problems() == []
    assert reg.resolve("pick").entrypoint_name == "b"
    assert reg.resolve("choose", None, "a").entrypoint_name == "a"
    with pytest.raises(InvalidInput, match=r"several entrypoints and no default; choose one of: a, b") as exc:
        reg.resolve("choose")
    assert locs(exc) == [["body", "entrypoint"]]
    assert app_to_public(reg.get("choose"))["versions"]["1.0"]["default_entrypoint"] is None


# -- parameters and inputs ---------------------------------------------------------------------------


def test_params_defaults_are_applied(bundled: AppRegistry) -> None:
    detect = bundled.resolve("spikes").entrypoint
    params = validate_params(detect, {"threshold": 6})
    assert params == {
        "threshold": 6,
        "polarity": "neg",
        "refractory_ms": 1.0,
        "rate": 10000,
        "low_hz": 300,
        "high_hz": 3000,
    }


def test_params_each_bad_field_is_named(bundled: AppRegistry) -> None:
    detect = bundled.resolve("spikes").entrypoint
    with pytest.raises(InvalidInput) as exc:
        validate_params(detect, {"threshold": 0.5, "polarity": "up"})
    assert locs(exc) == [["body", "params", "threshold"], ["body", "params", "polarity"]]
    assert "threshold" in exc.value.detail and "polarity" in exc.value.detail
    with pytest.raises(InvalidInput) as exc:
        validate_params(detect, {"threshold": "high", "bogus": 1})
    assert locs(exc) == [["body", "params", "threshold"], ["body", "params", "bogus"]]
    assert exc.value.errors[0]["msg"] == "must be a number"  # type: ignore[index]
    assert "unknown parameter 'bogus'" in exc.value.errors[1]["msg"]  # type: ignore[index]
    with pytest.raises(InvalidInput) as exc:
        validate_params(detect, {"threshold": True})  # a bool is not a number in JSON Schema
    assert locs(exc) == [["body", "params", "threshold"]]


def test_params_required_missing_names_the_field() -> None:
    ep = entrypoint(
        parameters={
            "type": "object",
            "required": ["a", "b"],
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string"},
                "opts": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}}},
            },
        }
    )
    with pytest.raises(InvalidInput) as exc:
        validate_params(ep, {"opts": {}})
    assert locs(exc) == [["body", "params", "a"], ["body", "params", "b"], ["body", "params", "opts", "k"]]
    assert exc.value.errors[0]["msg"] == "missing required parameter 'a'"  # type: ignore[index]


def test_params_errors_are_worded_for_people_in_the_parameters_units() -> None:
    ep = entrypoint(
        parameters={
            "type": "object",
            "properties": {
                "low": {"type": "number", "minimum": 0.5, "maximum": 500, "unit": "Hz"},
                "n": {"type": "integer"},
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$", "examples": ["ABC-12"]},
                "tag": {"type": "string", "pattern": "^x", "patternDescription": "starts with x"},
                "mode": {"enum": ["fast", "exact"]},
                "label": {"type": "string", "maxLength": 3},
                "gain": {"type": "number", "exclusiveMinimum": 0},
            },
        }
    )
    with pytest.raises(InvalidInput) as exc:
        validate_params(
            ep,
            {"low": 900, "n": 2.5, "code": "abc", "tag": "y", "mode": "slow", "label": "long", "gain": 0},
        )
    said = {e["loc"][-1]: e["msg"] for e in exc.value.errors or []}
    assert said == {
        "low": "must be at most 500 Hz",
        "n": "must be a whole number",
        "code": "is not in the expected form (for example ABC-12)",
        "tag": "is not in the expected form: starts with x",
        "mode": "must be one of: fast, exact",
        "label": "must have at most 3 characters",
        "gain": "must be more than 0",
    }
    assert "^[A-Z]" not in exc.value.detail and "of type" not in exc.value.detail


def test_params_integers_and_defaults_are_not_shared() -> None:
    ep = entrypoint(
        parameters={
            "type": "object",
            "properties": {"n": {"type": "integer", "default": 2}, "xs": {"type": "array", "default": [1]}},
        }
    )
    first = validate_params(ep, {"n": 3.0})
    assert first["n"] == 3 and isinstance(first["n"], int)
    first["xs"].append(2)
    assert validate_params(ep, None)["xs"] == [1]
    with pytest.raises(InvalidInput, match="params must be an object"):
        validate_params(ep, [1, 2])  # type: ignore[arg-type]


def test_inputs_are_checked() -> None:
    ep = entrypoint(inputs={"trace": {"type": "file"}, "mask": {"type": "folder", "required": False}})
    assert validate_inputs(ep, {"mask": "m/", "trace": "t.npy"}) == {"trace": "t.npy", "mask": "m/"}
    assert validate_inputs(ep, {"trace": "t.npy"}) == {"trace": "t.npy"}
    with pytest.raises(InvalidInput) as exc:
        validate_inputs(ep, {"mask": "", "other": "x"})
    assert locs(exc) == [["body", "inputs", "mask"], ["body", "inputs", "other"], ["body", "inputs", "trace"]]
    assert "missing required input 'trace'" in exc.value.detail
    assert "unknown input 'other'; inputs: trace, mask" in exc.value.detail


# -- command and environment -------------------------------------------------------------------------


def test_render_command_substitutes_inside_arguments() -> None:
    ep = entrypoint(
        command=[
            "python3",
            "-c",
            "{{literal}} {{{params.name}}}",
            "--x={params.a}:{params.b}",
            "{params.flag}",
            "{params.xs}",
            "--in={inputs.data}",
            "{inputs.extra}",
            "{output}/out.csv",
            "python",
        ],
        parameters={
            "type": "object",
            "required": ["a"],
            "properties": {
                "name": {"type": "string", "default": "n"},
                "a": {"type": "number"},
                "b": {"type": "integer", "default": 10},
                "flag": {"type": "boolean", "default": False},
                "xs": {"type": "array", "default": [1, "two"]},
            },
        },
        inputs={"data": {"type": "file"}, "extra": {"type": "file", "required": False}},
    )
    params = validate_params(ep, {"a": 4.5, "flag": True})
    argv = render_command(ep, params, {"data": "/stage/d.csv"}, "/job/out", python="/opt/py")
    assert argv == [
        "/opt/py",
        "-c",
        "{literal} {n}",
        "--x=4.5:10",
        "true",
        '[1,"two"]',
        "--in=/stage/d.csv",
        "",  # optional input not given
        "/job/out/out.csv",
        "python",  # only the program word is replaced
    ]
    assert render_command(entrypoint(command=["python", "-V"]), {}, {}, "/o")[0] == sys.executable
    assert (
        render_command(
            entrypoint(command=["echo", "{params.x}"], parameters=_x_param(10000.0)), {"x": 10000.0}, {}, "/o"
        )[1]
        == "10000.0"
    )
    with pytest.raises(InvalidInput) as exc:
        render_command(ep, {**params, "name": "a\x00b"}, {"data": "d"}, "/o")
    assert locs(exc) == [["body", "params", "name"]]


def _x_param(default: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": {"type": "number", "default": default}}}


def test_job_environment_allowlist() -> None:
    ep = entrypoint(
        env=["OMP_NUM_THREADS"],
        inputs={"trace": {"type": "file"}},
        parameters={
            "type": "object",
            "properties": {"threshold": {"type": "number"}, "on": {"type": "boolean"}},
        },
    )
    params = {"threshold": 4.5, "on": True}
    env = job_environment(ep, params, {"trace": "/s/t.npy"}, "/job/out", {"OMP_NUM_THREADS": "2"})
    assert env == {
        "OMP_NUM_THREADS": "2",
        "LABCLOUD_OUTPUT": "/job/out",
        "LABCLOUD_INPUT_TRACE": "/s/t.npy",
        "LABCLOUD_PARAM_THRESHOLD": "4.5",
        "LABCLOUD_PARAM_ON": "true",
        "LABCLOUD_PARAMS_JSON": '{"threshold":4.5,"on":true}',
    }
    with pytest.raises(InvalidInput) as exc:
        job_environment(ep, params, {}, "/o", {"LD_PRELOAD": "x.so", "PATH": "/tmp"})
    assert locs(exc) == [["body", "env", "LD_PRELOAD"], ["body", "env", "PATH"]]
    assert "allowed: OMP_NUM_THREADS" in exc.value.detail


# -- load-time checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "properties", "line", "fragment"),
    [
        ('[echo, "{params.nope}"]', "{}", 6, "{params.nope} names no declared parameter"),
        ('[echo, "{inputs.nope}"]', "{}", 6, "{inputs.nope} names no declared input"),
        ('[echo, "a{foo}b"]', "{}", 6, "unknown placeholder {foo}"),
        ('[echo, "a}b"]', "{}", 6, "unmatched '}'"),
        ('[echo, "{params.x}"]', "{x: {type: integer}}", 6, "neither required nor has a default"),
        ("[echo]", '{x: {type: integer, default: "a"}}', 10, "default 'a' of parameter 'x' does not match"),
        ("[echo]", "{x: {type: integr}}", 10, "'integr' is not a JSON Schema type"),
        ("[echo]", "{d: {type: string, default: 2024-01-01}}", 10, "is a YAML date, not JSON data"),
        (
            '["{params.x}"]',
            "{x: {type: string, default: ls}}",
            6,
            "program (first command item) must be fixed",
        ),
    ],
)
def test_load_time_checks_point_at_the_line(
    tmp_path: Path, command: str, properties: str, line: int, fragment: str
) -> None:
    write(
        tmp_path,
        "bad.yaml",
        f"""
        name: bad
        versions:
          "1.0":
            entrypoints:
              run:
                command: {command}
                parameters:
                  type: object
                  properties:
                    {properties}
        """,
    )
    reg = registry(tmp_path)
    [problem] = reg.problems()
    assert problem.path == str(tmp_path / "bad.yaml")
    assert fragment in problem.message
    assert problem.line == line
    assert reg.apps() == []


def test_other_load_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "many.yaml",
        """
        name: many
        versions:
          "1.0":
            entrypoints:
              run:
                runtime: container
                command: [echo]
              two:
                command: [echo]
                parameters: {type: array}
                env: [lower_case, LABCLOUD_X]
          1.10:
            entrypoints: {}
        """,
    )
    reg = registry(tmp_path)
    messages = {(p.line, p.message) for p in reg.problems()}
    assert (
        5,
        'versions["1.0"].entrypoints.run: a container entrypoint needs an image '
        "(image: REPOSITORY:TAG or @sha256:...)",
    ) in messages
    assert any(line == 10 and "must have type: object" in m for line, m in messages)
    assert any(line == 11 and "'lower_case' must match" in m for line, m in messages)
    assert any(line == 12 and 'version 1.10 must be quoted: write "1.10"' in m for line, m in messages)
    assert any(line == 13 and "entrypoints must not be empty" in m for line, m in messages)


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(
        tmp_path,
        "broken.yaml",
        """
        name: broken
        versions:
          "1.0":
            entrypoints:
              run:
                command: [echo, "{output}"
                description: unclosed list above
        """,
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    reg = registry(tmp_path)
    [problem] = reg.problems()
    assert (problem.path, problem.line) == (str(path), 7)
    assert "invalid YAML" in problem.message and "started on line 6" in problem.message
    reg.apps()
    reg.refresh(force=True)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert warnings == [f"Problem in app file {path}:7: {problem.message}"]  # logged once, not per read


def test_broken_file_keeps_last_good_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "demo.yaml", app_text(title="Good"))
    reg = registry(tmp_path)
    assert reg.get("demo").title == "Good" and reg.problems() == []

    caplog.set_level(logging.WARNING, logger=LOGGER)
    write(
        tmp_path,
        "demo.yaml",
        """
        name: demo
        title: Broken
        versions:
          "1.0":
            entrypoints:
              run:
                comand: [echo, hi]
                resources: {cpus: -1}
        """,
    )
    problems = reg.problems()
    assert [(p.path, p.line) for p in problems] == [(str(path), 6), (str(path), 7), (str(path), 8)]
    assert "missing required key 'command'" in problems[0].message
    assert "unknown key 'comand'; did you mean 'command'?" in problems[1].message
    assert "resources.cpus: Input should be greater than 0" in problems[2].message
    assert reg.get("demo").title == "Good"  # the last good version is still served
    assert any("still serving the last good version of app 'demo'" in r.getMessage() for r in caplog.records)

    write(tmp_path, "demo.yaml", app_text(title="Fixed"))
    assert reg.get("demo").title == "Fixed" and reg.problems() == []


def test_files_appear_change_and_disappear(tmp_path: Path) -> None:
    apps_dir = tmp_path / "not-yet"
    reg = registry(apps_dir)  # a folder that does not exist yet is fine
    assert reg.apps() == [] and reg.problems() == []
    write(apps_dir, "one.yaml", app_text("one"))
    write(apps_dir, "two.yml", app_text("two"))
    write(apps_dir, "notes.txt", "not an app")
    assert [a.name for a in reg.apps()] == ["one", "two"]
    # Same size, same second: the content check still notices the edit.
    write(apps_dir, "one.yaml", app_text("one", title="Onf"))
    assert reg.get("one").title == "Onf"
    (apps_dir / "one.yaml").unlink()
    assert [a.name for a in reg.apps()] == ["two"]
    with pytest.raises(NotFound):
        reg.get("one")


def test_interval_limits_checks(tmp_path: Path) -> None:
    reg = AppRegistry([tmp_path], min_check_interval_s=3600)
    write(tmp_path, "late.yaml", app_text("late"))
    assert reg.apps() == []  # not checked again within the interval
    assert [a.name for a in reg.refresh(force=True).apps.values()] == ["late"]


def test_later_dir_overrides_and_same_dir_duplicates(tmp_path: Path) -> None:
    bundled, user = tmp_path / "bundled", tmp_path / "user"
    write(bundled, "demo.yaml", app_text(title="Bundled"))
    write(bundled, "other.yaml", app_text("other"))
    write(user, "a-demo.yaml", app_text(title="User"))
    dup = write(user, "b-demo.yaml", app_text(title="Copy"))
    reg = registry(bundled, user)
    assert reg.get("demo").title == "User"
    assert reg.snapshot().sources["demo"] == str(user / "a-demo.yaml")
    assert [a.name for a in reg.apps()] == ["demo", "other"]
    [problem] = reg.problems()
    assert (problem.path, problem.line) == (str(dup), 1)
    assert "app 'demo' is already declared in a-demo.yaml" in problem.message
    (user / "a-demo.yaml").unlink()
    assert reg.get("demo").title == "Copy" and reg.problems() == []


def test_latest_version_uses_natural_order(tmp_path: Path) -> None:
    assert sorted(["1.9", "1.10", "1.0", "0.9.1", "1.10a", "2"], key=version_key) == [
        "0.9.1",
        "1.0",
        "1.9",
        "1.10",
        "1.10a",
        "2",
    ]
    write(
        tmp_path,
        "v.yaml",
        """
        name: v
        versions:
          "1.9": {entrypoints: {run: {command: [echo, "9"]}}}
          "1.10": {entrypoints: {run: {command: [echo, "10"]}}}
          "1.0": {entrypoints: {run: {command: [echo, "0"]}}}
        """,
    )
    reg = registry(tmp_path)
    assert reg.get("v").latest_version == "1.10"
    assert reg.resolve("v").version == "1.10"
    assert app_to_public(reg.get("v"))["version_order"] == ["1.10", "1.9", "1.0"]


def test_spec_hash_is_canonical() -> None:
    a = entrypoint(command=["echo", "x"], resources={"cpus": 1, "memory_mb": 512})
    b = EntrypointSpec.model_validate({"resources": {"memory_mb": 512}, "command": ["echo", "x"]})
    assert a.spec_hash() == b.spec_hash()  # key order and spelled-out defaults do not matter
    assert entrypoint(command=["echo", "y"]).spec_hash() != a.spec_hash()
    assert json.loads(a.canonical_json())["resources"]["timeout_s"] == 3600


def test_readers_in_threads_see_whole_snapshots(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", app_text(version="1.0"))
    reg = registry(tmp_path)
    seen: set[str] = set()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(200):
                seen.add(reg.resolve("demo").version)
        except BaseException as exc:  # collected and re-raised in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        path = tmp_path / "demo.yaml"
        tmp = tmp_path / ".demo.yaml.tmp"  # hidden: ignored until renamed into place
        tmp.write_text(textwrap.dedent(app_text(version=f"{i % 2 + 1}.0")), encoding="utf-8")
        os.replace(tmp, path)
    for t in threads:
        t.join()
    assert failures == []
    assert seen <= {"1.0", "2.0"}

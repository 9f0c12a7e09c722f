"""Helpers for tests that run real jobs: wait for a job by following its live log, write apps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

TERMINAL = {"succeeded", "failed", "cancelled"}


def follow_log(client: TestClient, job_id: str, headers: dict[str, str], until: str | None = None) -> str:
    """Read the job's live log (server-sent events) until the job ends, or until ``until`` appears."""
    text = []
    with client.stream(
        "GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": "true"}, headers=headers, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "log":
                text.append(line[len("data: ") :])
                if until is not None and text[-1] == until:  # a whole line, not the echoed command
                    break
            elif line.startswith("data: ") and event == "end":
                assert json.loads(line[len("data: ") :])["state"] in TERMINAL
                break
    return "\n".join(text)


def wait_for_end(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    follow_log(client, job_id, headers)
    job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
    assert job["state"] in TERMINAL, job
    return job


def write_app(apps_dir: Path, name: str, command: list[str], **entry: Any) -> None:
    """A one-entrypoint app file in the registry dir."""
    apps_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": name,
        "title": name,
        "versions": {
            "1.0": {
                "entrypoints": {
                    "main": {
                        "description": f"test app {name}",
                        "runtime": "process",
                        "command": command,
                        "parameters": entry.pop("parameters", {"type": "object", "properties": {}}),
                        "resources": entry.pop("resources", {"cpus": 1, "memory_mb": 256, "timeout_s": 60}),
                        **entry,
                    }
                }
            }
        },
    }
    (apps_dir / f"{name}.yaml").write_text(json.dumps(spec))  # JSON is YAML


def py(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]

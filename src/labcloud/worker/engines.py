"""What a worker's heartbeats say of its container engine: its kind and local images, or why it has none
(its settings: :mod:`labcloud.execution.engine_options`)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

from labcloud.execution.containers import Engine
from labcloud.execution.engine_options import MAX_IMAGES, MAX_PROBLEM, MAX_REFERENCE
from labcloud.execution.engine_probe import EngineProbe

CONTENT_ID = re.compile(r"sha256:[0-9a-f]{64}")
IMAGES_REFRESH_S = 30.0  # how often the engine's image list is read again for heartbeats


def local_image_ids(engine: Engine) -> dict[str, str]:
    """The engine's local images: each reference it lists (repository:tag, and repository@sha256:... where
    the engine knows the image's registry digest) with the image's content id (sha256:...). Empty for
    Apptainer or when the engine does not answer."""
    if engine.kind == "apptainer":
        return {}
    fields = "{{.Repository}} {{.Tag}} {{.ID}} {{.Digest}}"
    try:
        done = engine.call("image", "ls", "--no-trunc", "--digests", "--format", fields)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] == "<none>":
            continue
        repository, tag, image_id, digest = parts
        image_id = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        if not CONTENT_ID.fullmatch(image_id):
            continue
        refs = [f"{repository}:{tag}"] if tag != "<none>" else []
        if CONTENT_ID.fullmatch(digest):
            refs.append(f"{repository}@{digest}")
        for ref in refs:
            if len(ref) <= MAX_REFERENCE and ref.isprintable() and len(found) < 2 * MAX_IMAGES:
                found[ref] = image_id
    return found


class EngineReport:
    """What heartbeats say of this machine's engine: ``{"engines": [{"kind", "images"}], "engine_problem"}``.

    The first report is read when asked for; later ones are read again in the background once ``refresh_s``
    have passed, so that a slow engine never delays a heartbeat (which renews the leases)."""

    def __init__(self, probe: EngineProbe | None, refresh_s: float = IMAGES_REFRESH_S) -> None:
        self.probe = probe
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._at = 0.0
        self._reading = False

    def current(self) -> dict[str, Any]:
        with self._lock:
            report = self._report
            if report is not None and not self._reading and time.monotonic() - self._at >= self.refresh_s:
                self._reading = True
                threading.Thread(target=self._refresh, name="engine-report", daemon=True).start()
        return report if report is not None else self._refresh()

    def _refresh(self) -> dict[str, Any]:
        try:
            report = self._read()
        finally:
            with self._lock:
                self._reading = False
        with self._lock:
            self._report, self._at = report, time.monotonic()
        return report

    def _read(self) -> dict[str, Any]:
        if self.probe is None:
            return {"engines": [], "engine_problem": "this worker runs no container apps"}
        engine, problem = self.probe.get()
        if engine is None:
            return {"engines": [], "engine_problem": problem[:MAX_PROBLEM]}
        ids = local_image_ids(engine)
        tagged = sorted(ref for ref in ids if "@" not in ref)[:MAX_IMAGES]
        entry = {"kind": engine.kind, "images": tagged, "image_ids": ids}
        return {"engines": [entry], "engine_problem": ""}


def summary(report: Mapping[str, Any]) -> str:
    """One line: "docker, 3 images" or "none (why)"."""
    engines = report.get("engines") or []
    if not engines:
        return f"none ({report.get('engine_problem') or 'not reported'})"
    parts = []
    for entry in engines:
        count = len(entry.get("images") or [])
        parts.append(f"{entry.get('kind')}, {count} image{'' if count == 1 else 's'}")
    return "; ".join(parts)

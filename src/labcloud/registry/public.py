"""The registry as JSON for the HTTP API and the bundled demo apps folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import labcloud
from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.models import AppSpec


def bundled_apps_dir() -> Path:
    """The folder of the demo apps shipped inside the package (loaded before the user's apps)."""
    return Path(labcloud.__file__).parent / "demo_apps"


def entrypoint_to_public(entrypoint: EntrypointSpec, container_problem: str | None = None) -> dict[str, Any]:
    """Everything a client needs to build a submit form for one entrypoint, as plain JSON data.
    ``container_problem``: why container apps cannot run here (None: they can)."""
    data = entrypoint.canonical_dict()
    unavailable = container_problem if entrypoint.runtime == "container" else None
    return {
        "available": unavailable is None,
        "unavailable_reason": unavailable,
        "description": data["description"],
        "runtime": data["runtime"],
        "image": data.get("image"),
        "command": data["command"],
        "parameters": data["parameters"],
        "inputs": data["inputs"],
        "outputs": data["outputs"],
        "resources": data["resources"],
        "env": data["env"],
        "network": data["network"],
        "labels": data["labels"],
        "spec_hash": entrypoint.spec_hash(),
    }


def app_to_public(app: AppSpec, container_problem: str | None = None) -> dict[str, Any]:
    """An app as JSON; versions are listed newest first (``version_order`` keeps that order for clients
    whose JSON objects do not keep key order)."""
    order = app.sorted_versions()
    return {
        "name": app.name,
        "title": app.title,
        "description": app.description,
        "latest_version": order[0],
        "version_order": order,
        "versions": {
            version: {
                "entrypoints": {
                    name: entrypoint_to_public(ep, container_problem)
                    for name, ep in app.versions[version].entrypoints.items()
                },
                "default_entrypoint": app.versions[version].default_entrypoint_name(),
            }
            for version in order
        },
    }

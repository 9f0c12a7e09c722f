"""``labcloud apps``: the apps you can run, and one in detail."""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from labcloud.cli.client.ui import JSON_OPTION, compact, handle_errors, open_client, out, print_json, table


def _entrypoint_names(app: dict[str, Any], version: str) -> str:
    info = app.get("versions", {}).get(version, {})
    names = list(info.get("entrypoints", {}))
    default = info.get("default_entrypoint")
    return ", ".join(f"{n} (default)" if n == default and len(names) > 1 else n for n in names)


def _param_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "")
    text = "|".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        text += " (" + "|".join(str(v) for v in schema["enum"]) + ")"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        text += f" {'' if low is None else low}..{'' if high is None else high}"
    return text


def _show_app(app: dict[str, Any]) -> None:
    out.print(Text(f"{app['name']} — {app.get('title', '')}", style="bold"))
    if app.get("description"):
        out.print(Text(app["description"]))
    versions = app.get("version_order") or list(app.get("versions", {}))
    for version in versions:
        info = app["versions"][version]
        for ep_name, ep in info.get("entrypoints", {}).items():
            default = " (default)" if ep_name == info.get("default_entrypoint") else ""
            out.print()
            out.print(Text(f"{app['name']}:{version}:{ep_name}{default}", style="bold underline"))
            if ep.get("description"):
                out.print(Text(ep["description"]))
            schema = ep.get("parameters") or {}
            required = set(schema.get("required", []))
            props: dict[str, Any] = schema.get("properties", {})
            if props:
                params = table("parameter", "type", "default", "description", title="parameters")
                for name, prop in props.items():
                    params.add_row(
                        Text(name + (" *" if name in required else "")),
                        Text(_param_type(prop)),
                        Text(compact(prop.get("default"))),
                        Text(prop.get("description", "")),
                    )
                out.print(params)
            inputs: dict[str, Any] = ep.get("inputs") or {}
            if inputs:
                slots = table("input", "type", "required", "description", title="inputs")
                for slot, spec in inputs.items():
                    slots.add_row(
                        Text(slot),
                        Text(str(spec.get("type", ""))),
                        "yes" if spec.get("required") else "no",
                        Text(spec.get("description", "")),
                    )
                out.print(slots)
            res = ep.get("resources") or {}
            if res:
                out.print(Text("resources: " + ", ".join(f"{k}={v}" for k, v in res.items()), style="dim"))
            if ep.get("outputs"):
                out.print(Text("outputs: " + ", ".join(str(o) for o in ep["outputs"]), style="dim"))


@handle_errors
def apps(
    app_name: str | None = typer.Argument(None, metavar="[APP]", help="Show one app in detail."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List the apps you can run, or show one with its versions, entrypoints, parameters and inputs."""
    with open_client() as client:
        if app_name:
            app = client.app(app_name)
            if json_out:
                print_json(app)
            else:
                _show_app(app)
            return
        items = client.apps()
    if json_out:
        print_json({"items": items})
        return
    grid = table("name", "title", "latest", "entrypoints")
    for app in items:
        latest = app.get("latest_version", "")
        grid.add_row(
            Text(app["name"]), Text(app.get("title", "")), Text(latest), _entrypoint_names(app, latest)
        )
    out.print(grid)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(apps)

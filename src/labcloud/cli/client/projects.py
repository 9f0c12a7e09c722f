"""``labcloud projects``: your projects (the lab groups whose members share jobs), their members and roles,
join codes, joining and leaving. Jobs go into a project with ``labcloud submit --project SLUG`` and are
listed with ``labcloud jobs --project SLUG``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer
from rich.text import Text

from labcloud.cli.client.ui import (
    JSON_OPTION,
    err,
    handle_errors,
    key_values,
    local_time,
    open_client,
    out,
    print_json,
    table,
)
from labcloud.client.projects import member_id

projects_app = typer.Typer()

SLUG_ARGUMENT = typer.Argument(..., metavar="SLUG", help="The project's slug (labcloud projects list).")
MEMBER_ARGUMENT = typer.Argument(..., metavar="EMAIL", help="The member's email (or user id).")
ANSWER_JSON = typer.Option(False, "--json", help="Print the server's answer as JSON.")


class Role(StrEnum):
    owner = "owner"
    manager = "manager"
    member = "member"
    viewer = "viewer"


def _role(project: dict[str, Any]) -> str:
    return str(project.get("role") or "")


def _member(project: dict[str, Any], user_id: str) -> dict[str, Any]:
    return next((m for m in project.get("members") or [] if str(m.get("user_id")) == user_id), {})


def show_project(project: dict[str, Any]) -> None:
    """A project, then its members."""
    expires = project.get("join_code_expires_at")
    out.print(
        key_values(
            [
                ("slug", project.get("slug", "")),
                ("name", project.get("name", "")),
                ("description", project.get("description", "")),
                ("your role", _role(project)),
                ("personal", "yes" if project.get("personal") else ""),
                ("join code", f"works until {local_time(expires)}" if expires else ""),
                ("created", local_time(project.get("created_at"))),
            ]
        )
    )
    members = project.get("members") or []
    if not members:
        return
    out.print()
    grid = table("email", "name", "role", "since", title="members")
    for member in members:
        grid.add_row(
            Text(member.get("email", "")),
            Text(member.get("name", "")),
            Text(member.get("role", "")),
            local_time(member.get("since")),
        )
    out.print(grid)


@projects_app.callback(invoke_without_command=True)
def _projects(ctx: typer.Context) -> None:
    """Your projects: lab groups whose members share jobs; members, roles and join codes."""
    if ctx.invoked_subcommand is None:
        list_projects(json_out=False)


@projects_app.command("list")
@handle_errors
def list_projects(json_out: bool = JSON_OPTION) -> None:
    """List your projects with your role in each (your personal one first)."""
    with open_client() as client:
        items: list[dict[str, Any]] = client.projects()
    if json_out:
        print_json({"items": items})
        return
    grid = table("slug", "name", "your role", "personal")
    for project in items:
        grid.add_row(
            Text(project.get("slug", "")),
            Text(project.get("name", "")),
            Text(_role(project)),
            "yes" if project.get("personal") else "",
        )
    out.print(grid)


@projects_app.command("show")
@handle_errors
def show(slug: str = SLUG_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """Show a project and its members."""
    with open_client() as client:
        project = client.project(slug)
    if json_out:
        print_json(project)
    else:
        show_project(project)


@projects_app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., metavar="NAME", help="What the project is called."),
    slug: str | None = typer.Option(
        None, "--slug", help="Its short name: 3 to 40 of a-z, 0-9 and inner '-' (default: made from NAME)."
    ),
    description: str = typer.Option("", "--description", "-d", help="What it is for."),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Create a project; you become its owner."""
    with open_client() as client:
        project = client.create_project(name, slug, description)
    if json_out:
        print_json(project)
        return
    made = project["slug"]
    out.print(made)
    err.print(
        f"created project {made} ({project.get('name', '')}); you are its owner. Add people with "
        f"labcloud projects add {made} EMAIL, or give them a join code: labcloud projects code {made}"
    )


@projects_app.command("add")
@handle_errors
def add(
    slug: str = SLUG_ARGUMENT,
    email: str = typer.Argument(..., metavar="EMAIL", help="The account's email."),
    role: Role = typer.Option(
        Role.member, "--role", "-r", help="viewer reads, member runs jobs, manager adds people, owner all."
    ),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Add someone with an account to a project (managers add viewers and members; owners any role)."""
    with open_client() as client:
        project = client.add_member(slug, email, role.value)
    if json_out:
        print_json(project)
        return
    err.print(f"{email} is {role.value} in project {project.get('slug', slug)}")


@projects_app.command("role")
@handle_errors
def change_role(
    slug: str = SLUG_ARGUMENT,
    member: str = MEMBER_ARGUMENT,
    role: Role = typer.Argument(..., metavar="ROLE", help="owner, manager, member or viewer."),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Change a member's role (a project keeps at least one owner)."""
    with open_client() as client:
        user_id = member_id(client.project(slug), member)
        project = client.set_role(slug, user_id, role.value)
    if json_out:
        print_json(project)
        return
    who = _member(project, user_id).get("email", member)
    err.print(f"{who} is {role.value} in project {project.get('slug', slug)}")


@projects_app.command("remove")
@handle_errors
def remove(slug: str = SLUG_ARGUMENT, member: str = MEMBER_ARGUMENT) -> None:
    """Take a member out of a project (their jobs stay in it)."""
    with open_client() as client:
        project = client.project(slug)
        user_id = member_id(project, member)
        client.remove_member(slug, user_id)
    who = _member(project, user_id).get("email", member)
    err.print(f"removed {who} from project {project.get('slug', slug)}")


@projects_app.command("leave")
@handle_errors
def leave(slug: str = SLUG_ARGUMENT) -> None:
    """Leave a project (its last owner cannot: make someone else owner first)."""
    with open_client() as client:
        me = client.me()
        client.remove_member(slug, str(me["id"]))
    err.print(f"you left project {slug}")


@projects_app.command("code")
@handle_errors
def code(
    slug: str = SLUG_ARGUMENT,
    days: int | None = typer.Option(None, "--days", help="How many days it works (default: two weeks)."),
    revoke: bool = typer.Option(False, "--revoke", help="Make no code work any more instead."),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Managers: a new join code (the previous one stops working).

    It is printed this once; whoever has it joins as a member with labcloud projects join CODE."""
    with open_client() as client:
        if revoke:
            client.drop_join_code(slug)
            err.print(f"no join code works for project {slug} any more")
            return
        made = client.join_code(slug, days)
    if json_out:
        print_json(made)
        return
    out.print(made["code"])
    err.print(
        f"works until {local_time(made.get('expires_at'))}; it is shown only now. "
        f"Whoever has it joins as a member: labcloud projects join CODE"
    )


@projects_app.command("join")
@handle_errors
def join(
    join_code: str = typer.Argument(..., metavar="CODE", help="A join code a manager gave you."),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Join a project with its join code."""
    with open_client() as client:
        project = client.join_project(join_code)
    if json_out:
        print_json(project)
        return
    joined = project.get("slug", "")
    err.print(f"you are {_role(project)} in project {joined} ({project.get('name', '')})")
    if _role(project) != Role.viewer:
        err.print(f"run jobs there with labcloud submit --project {joined} APP ...")


def register(app: typer.Typer) -> None:
    app.add_typer(projects_app, name="projects", rich_help_panel="Client")

"""Helpers shared by the command modules."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from labcloud.settings import Settings

console = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            console.print(f"[red]configuration error[/red] {where}: {err['msg']}")
        raise typer.Exit(2) from None


def say(message: str) -> None:
    """A plain message on standard error: no markup, never wrapped (paths stay whole to copy and grep)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Say what went wrong (as written: no markup read in it, not wrapped, so a path stays whole and a
    script can match the words) and the exit to raise."""
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)

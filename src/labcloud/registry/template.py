"""Command templates: ``{params.NAME}``, ``{inputs.SLOT}``, ``{output}`` and ``{resources.NAME}`` (cpus,
memory_mb, gpus, timeout_s: what the job was given) inside argv strings and container variables.

The grammar follows ``str.format`` closely enough to be familiar (``{{`` and ``}}`` are literal braces)
but is parsed here, never by ``str.format``, so a template cannot reach attributes or format specs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

PlaceholderKind = Literal["params", "inputs", "output", "resources"]
RESOURCE_NAMES = ("cpus", "memory_mb", "gpus", "timeout_s")

# Alternatives are tried left to right, so "{{" wins over "{...}" at the same position.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A command string that cannot be parsed (unknown placeholder, unmatched brace)."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{...}`` reference; ``name`` is ``None`` for ``{output}``."""

    kind: PlaceholderKind
    name: str | None

    def __str__(self) -> str:
        return "{output}" if self.kind == "output" else f"{{{self.kind}.{self.name}}}"


Segment = str | Placeholder


def _parse_reference(content: str) -> Placeholder:
    if content == "output":
        return Placeholder("output", None)
    kinds: tuple[PlaceholderKind, ...] = ("params", "inputs", "resources")
    for kind in kinds:
        prefix = f"{kind}."
        if content.startswith(prefix) and len(content) > len(prefix):
            name = content[len(prefix) :]
            if kind == "resources" and name not in RESOURCE_NAMES:
                raise TemplateError(
                    f"unknown placeholder {{{content}}}; resources are {', '.join(RESOURCE_NAMES)}"
                )
            return Placeholder(kind, name)
    raise TemplateError(
        f"unknown placeholder {{{content}}}; use {{params.NAME}}, {{inputs.SLOT}}, {{output}} or "
        "{resources.cpus} (memory_mb, gpus, timeout_s), and write {{ or }} for a literal brace"
    )


def parse_template(text: str) -> tuple[Segment, ...]:
    """Split ``text`` into literal strings and placeholders; adjacent literals are merged."""
    segments: list[Segment] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos : match.start()])
        token = match.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif match.group(1) is not None:
            if "".join(literal):
                segments.append("".join(literal))
            literal = []
            segments.append(_parse_reference(match.group(1)))
        else:
            raise TemplateError(
                f"unmatched {token!r} at position {match.start()} in {text!r}; "
                "write {{ or }} for a literal brace"
            )
        pos = match.end()
    literal.append(text[pos:])
    if "".join(literal):
        segments.append("".join(literal))
    return tuple(segments)


def placeholders(text: str) -> list[Placeholder]:
    """The placeholders used in ``text`` (raises :class:`TemplateError` if it does not parse)."""
    return [seg for seg in parse_template(text) if isinstance(seg, Placeholder)]


def render_value(value: Any) -> str:
    """Render a parameter value for argv or the environment.

    bool → ``true``/``false`` (JSON spelling, since tools parse it more often than Python's ``True``),
    int/float → ``str()`` (``10``, ``4.5``, ``10000.0``), ``None`` → empty string, list/dict → compact
    JSON, str as-is.
    """
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

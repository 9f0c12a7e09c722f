"""Read one app YAML file into an :class:`AppSpec`, or into problems that name the file and line.

The YAML is composed into a node tree first (which keeps line numbers) and then constructed from that
same tree, so every Pydantic error location can be mapped back to the line of the key it refers to.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.models import AppSpec, VersionSpec
from labcloud.registry.spec_parts import InputSpec, Resources, RetentionSpec, SpecError

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000  # aliases can make a small file expand enormously; app files are never this big
MAX_PROBLEMS_PER_FILE = 20

Loc = tuple[str | int, ...]
_KNOWN_KEYS = sorted(
    {
        name
        for model in (AppSpec, VersionSpec, EntrypointSpec, InputSpec, Resources, RetentionSpec)
        for name in model.model_fields
    }
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """Why (part of) an app file was not loaded. ``line`` is 1-based, ``None`` when unknown."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The outcome of reading one file. ``name`` is the app name as written, even if the file is broken."""

    path: str
    spec: AppSpec | None
    problems: tuple[LoadProblem, ...]
    name: str | None = None
    name_line: int | None = None


class _TooBig(Exception):
    pass


def _line_map(root: yaml.Node) -> tuple[dict[Loc, int], list[tuple[int, str]]]:
    """Map each key path to the 1-based line of its key; also collect duplicate mapping keys."""
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    duplicates: list[tuple[int, str]] = []
    stack: list[tuple[Loc, yaml.Node]] = [((), root)]
    visited = 0
    while stack:
        path, node = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise _TooBig
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in first_seen and key != "<<":
                    duplicates.append((line, f"key {key!r} appears twice (first on line {first_seen[key]})"))
                first_seen.setdefault(key, line)
                lines.setdefault((*path, key), line)
                stack.append(((*path, key), value_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*path, index), item.start_mark.line + 1)
                stack.append(((*path, index), item))
    return lines, duplicates


def _line_for(lines: dict[Loc, int], loc: Loc) -> int | None:
    """Line of the longest prefix of ``loc`` that exists in the file (a missing key → its parent)."""
    for end in range(len(loc), -1, -1):
        prefix = tuple(p if isinstance(p, int) else str(p) for p in loc[:end])
        if prefix in lines:
            return lines[prefix]
    return None


def format_loc(loc: Loc) -> str:
    """``versions["1.0"].entrypoints.detect.command[3]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _describe(error: Any) -> tuple[Loc, str]:
    """Turn one Pydantic error into (location, human message)."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SpecError):
        loc = (*loc, *cause.subloc)
        message = str(cause)
    elif kind == "value_error" and cause is not None:
        message = str(cause)
    elif kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1, cutoff=0.75)
        if close:
            message += f"; did you mean {close[0]!r}?"
    elif kind == "too_short" and loc and loc[-1] in ("versions", "entrypoints", "command"):
        message = f"{loc[-1]} must not be empty"
    elif kind == "missing":
        message = f"missing required key {loc[-1]!r}"
        loc = loc[:-1]
        return loc, f"{format_loc(loc)}: {message}" if loc else message
    else:
        message = error["msg"]
    return loc, f"{format_loc(loc)}: {message}" if loc else message


def _unquoted_versions(root: yaml.Node, data: dict[Any, Any], path: str) -> list[LoadProblem]:
    """Report version keys that YAML read as numbers (``1.10:`` is the float 1.1), with the text the
    author wrote, and key ``data["versions"]`` by that text so the rest of the file is still checked."""
    versions_node = next(
        (
            v
            for k, v in getattr(root, "value", [])
            if isinstance(k, yaml.ScalarNode) and k.value == "versions"
        ),
        None,
    )
    versions = data.get("versions")
    if not isinstance(versions_node, yaml.MappingNode) or not isinstance(versions, dict):
        return []
    key_nodes = [k for k, _ in versions_node.value]
    problems = []
    for k in key_nodes:
        if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:str":
            problems.append(
                LoadProblem(
                    path,
                    k.start_mark.line + 1,
                    f'version {k.value} must be quoted: write "{k.value}": '
                    f"(unquoted, YAML reads it as {_plain_value(k)!r}, not as the text {k.value!r})",
                )
            )
    # Re-key only when node and dict keys correspond one to one (no merge keys).
    if (
        problems
        and len(key_nodes) == len(versions)
        and all(isinstance(k, yaml.ScalarNode) for k in key_nodes)
    ):
        data["versions"] = {k.value: value for k, value in zip(key_nodes, versions.values(), strict=True)}
    return problems


def _plain_value(node: yaml.ScalarNode) -> Any:
    try:
        return yaml.safe_load(node.value)
    except yaml.YAMLError:
        return node.value


def parse_app(text: str, path: str) -> LoadResult:
    """Parse and validate the text of one app file."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            # e.g. an unclosed "[" is detected lines later; say where the construct began.
            began = f" started on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what = f"{exc.problem} ({exc.context}{began})"
        return LoadResult(
            path, None, (LoadProblem(path, mark.line + 1 if mark else None, f"invalid YAML: {what}"),)
        )
    except yaml.YAMLError as exc:
        return LoadResult(path, None, (LoadProblem(path, None, f"invalid YAML: {exc}"),))
    finally:
        loader.dispose()

    if root is None or data is None:
        return LoadResult(
            path, None, (LoadProblem(path, None, "the file is empty; expected an app (name, versions)"),)
        )
    if not isinstance(data, dict):
        kind = type(data).__name__
        return LoadResult(
            path,
            None,
            (LoadProblem(path, 1, f"expected a mapping (name, title, versions) at the top, found {kind}"),),
        )
    try:
        lines, duplicates = _line_map(root)
    except _TooBig:
        return LoadResult(
            path, None, (LoadProblem(path, None, f"the YAML expands to more than {MAX_NODES} nodes"),)
        )

    name = data.get("name") if isinstance(data.get("name"), str) else None
    name_line = lines.get(("name",))
    if duplicates:
        problems = tuple(LoadProblem(path, line, msg) for line, msg in sorted(duplicates))
        return LoadResult(path, None, problems, name, name_line)
    found = _unquoted_versions(root, data, path)
    spec: AppSpec | None = None
    try:
        spec = AppSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, message = _describe(error)
            found.append(LoadProblem(path, _line_for(lines, loc), message))
    if found:
        found.sort(key=lambda p: (p.line or 0, p.message))
        if len(found) > MAX_PROBLEMS_PER_FILE:
            extra = len(found) - MAX_PROBLEMS_PER_FILE
            found = [
                *found[:MAX_PROBLEMS_PER_FILE],
                LoadProblem(path, None, f"... and {extra} more problems"),
            ]
        return LoadResult(path, None, tuple(found), name, name_line)
    assert spec is not None
    return LoadResult(path, spec, (), spec.name, name_line)


def load_app_file(path: Path) -> LoadResult:
    """Read and parse one file; unreadable files become problems too."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return LoadResult(
            where, None, (LoadProblem(where, None, f"cannot read the file: {exc.strerror or exc}"),)
        )
    return parse_app_bytes(raw, where)


def parse_app_bytes(raw: bytes, path: str) -> LoadResult:
    """Decode (UTF-8) and parse the bytes of one app file."""
    if len(raw) > MAX_FILE_BYTES:
        return LoadResult(
            path, None, (LoadProblem(path, None, f"the file is larger than {MAX_FILE_BYTES} bytes"),)
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return LoadResult(path, None, (LoadProblem(path, line, "the file is not valid UTF-8"),))
    return parse_app(text, path)

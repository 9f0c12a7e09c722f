"""User paths: normalised, relative, and confined to the user's space."""

from __future__ import annotations

import unicodedata
from pathlib import Path, PurePosixPath

from starlette.convertors import Convertor, register_url_convertor

from labcloud.errors import InvalidPath

MAX_PATH_LENGTH = 1024


def clean_path(raw: str, loc: list[str | int]) -> PurePosixPath:
    """A safe relative path, or InvalidInput at ``loc``. Refuses '..', absolute paths and control bytes."""
    path = unicodedata.normalize("NFC", raw.strip())
    problem = None
    if not path:
        problem = "the path is empty"
    elif len(path) > MAX_PATH_LENGTH:
        problem = f"the path is longer than {MAX_PATH_LENGTH} characters"
    elif any(ord(ch) < 32 or ch == "\x7f" for ch in path):
        problem = "the path contains control characters"
    elif path.startswith("/") or "\\" in path:
        problem = "the path must be relative to your space, with '/' between folders"
    else:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            problem = "the path must not contain '..'"
        elif not parts:
            problem = "the path is empty"
    if problem:
        raise InvalidPath.field(loc, problem)
    return PurePosixPath(*[p for p in path.split("/") if p not in ("", ".")])


def confined(root: Path, rel: PurePosixPath) -> Path:
    """``root/rel``, refusing anything that resolves outside ``root`` (e.g. through a symlink)."""
    target = (root / rel).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise InvalidPath.field(["path"], "the path leaves your space")
    return target


class AnyPathConvertor(Convertor[str]):
    """Like Starlette's ``path``, but matching control characters too, so that a path holding a newline
    reaches the handler and gets a clear 400 rather than a bare 404 from the router."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPathConvertor())

"""A job run as a sequence of container steps (a GA4GH TES task): where its files lie, what is mounted
where, and which of the files it leaves are its outputs. Plain data and path arithmetic, no database.

Every path a task names is a path inside its containers. Each such path ``/a/b`` has a place in the
attempt's work folder, ``work/root/a/b``: inputs are staged there, volumes and the folders of outputs are
made there, and each is bind-mounted at its own path in every step's container. So a file one step writes
into a volume is there for the next, and what the steps leave where the outputs point is collected from
there, by :meth:`labcloud.execution.attempt.AttemptDir.collect` (which follows no link).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labcloud.execution.runner import InputSource

ROOT = "root"  # the folder under the attempt's work folder that mirrors the containers' paths
WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class Step:
    """One executor: a container run of its own, after the one before it."""

    image: str
    command: list[str]
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""  # container paths (in a mounted folder), or empty
    stdout: str = ""
    stderr: str = ""
    ignore_error: bool = False


@dataclass(frozen=True)
class TaskOutput:
    """An output: a file, a folder, or a pattern (with the prefix its matches lose)."""

    path: str
    directory: bool = False
    path_prefix: str = ""

    @property
    def is_pattern(self) -> bool:
        return has_wildcards(self.path)


@dataclass(frozen=True)
class Mount:
    path: str  # inside the container; its place in the attempt's folder is under work/root
    readonly: bool


@dataclass
class TaskInput:
    path: str  # inside the container
    directory: bool
    source: InputSource  # its name is the path's last part


@dataclass
class TaskLayout:
    """What a task runs and where its files go."""

    steps: list[Step]
    inputs: list[TaskInput] = field(default_factory=list)
    outputs: list[TaskOutput] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str = "65534:65534"
    network: str = "none"  # "none", "default" (the engine's) or "host"

    def writable_folders(self) -> list[str]:
        """The folders the steps may write: volumes, the folder of each output (a pattern's fixed part),
        and those of the files standard output and error go to; none inside another."""
        folders = list(self.volumes)
        for out in self.outputs:
            if out.is_pattern:
                folders.append(fixed_part(out.path))
            else:
                folders.append(out.path if out.directory else parent(out.path))
        for step in self.steps:
            folders += [parent(p) for p in (step.stdout, step.stderr) if p]
        return outermost(folders)

    def mounts(self) -> list[Mount]:
        """Every bind mount, parents before what lies inside them: the writable folders, and each input
        that none of them holds (read-only)."""
        writable = self.writable_folders()
        found = [Mount(p, False) for p in writable]
        covered = list(writable)
        for item in sorted(self.inputs, key=lambda i: depth(i.path)):
            if not any(inside(item.path, folder) for folder in covered):
                found.append(Mount(item.path, True))
                if item.directory:
                    covered.append(item.path)
        return sorted(found, key=lambda m: depth(m.path))

    def wanted(self, rel: PurePosixPath, is_dir: bool) -> bool:
        """Whether collecting goes into the folder (``is_dir``) or keeps the file at ``rel`` (relative to
        the mirror of the containers' root)."""
        path = "/" + rel.as_posix()
        for out in self.outputs:
            if is_dir and may_hold(out, path):
                return True
            if not is_dir and match(out, path) is not None:
                return True
        return False

    def missing(self, rels: list[str]) -> list[str]:
        """The file outputs (no folder, no pattern) that are not among the collected files ``rels``."""
        have = {"/" + rel for rel in rels}
        return [
            out.path
            for out in self.outputs
            if not out.directory and not out.is_pattern and out.path not in have
        ]

    def to_wire(self) -> dict[str, Any]:
        """The layout as a remote runner gets it with its job (the inputs' sources go as URLs, apart)."""
        return {
            "steps": [asdict(step) for step in self.steps],
            "outputs": [asdict(out) for out in self.outputs],
            "volumes": list(self.volumes),
            "user": self.user,
            "network": self.network,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any], inputs: list[TaskInput]) -> TaskLayout:
        """A layout sent by :meth:`to_wire`, with its inputs' sources made by the runner."""

        def known(kind: type, item: dict[str, Any]) -> dict[str, Any]:
            names = {f.name for f in fields(kind)}
            return {k: v for k, v in item.items() if k in names}

        return cls(
            steps=[Step(**known(Step, step)) for step in data.get("steps") or []],
            inputs=inputs,
            outputs=[TaskOutput(**known(TaskOutput, out)) for out in data.get("outputs") or []],
            volumes=[str(v) for v in data.get("volumes") or []],
            user=str(data.get("user") or "65534:65534"),
            network=str(data.get("network") or "none"),
        )

    def place(self, rel: str) -> list[tuple[int, str]]:
        """Each output the collected file at ``rel`` belongs to, with its path below the output's url
        ("" for a file output, which is its url)."""
        path = "/" + rel
        found = []
        for index, out in enumerate(self.outputs):
            below = match(out, path)
            if below is not None:
                found.append((index, below))
        return found


# --- paths ------------------------------------------------------------------------------------------------


def has_wildcards(path: str) -> bool:
    return any(c in WILDCARDS for c in path)


def depth(path: str) -> int:
    return len(PurePosixPath(path).parts)


def parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


def inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies in it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def outermost(folders: list[str]) -> list[str]:
    """The folders that lie in none of the others (each once), shallow first."""
    kept: list[str] = []
    for folder in sorted(set(folders), key=lambda f: (depth(f), f)):
        if not any(inside(folder, k) for k in kept):
            kept.append(folder)
    return kept


def fixed_part(pattern: str) -> str:
    """The folder of a pattern's leading parts without wildcards: ``/out/*.txt`` → ``/out``."""
    parts = PurePosixPath(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if has_wildcards(part):
            break
        fixed.append(part)
    return str(PurePosixPath(*fixed)) if fixed else "/"


def relative(path: str) -> str:
    """A container path's place under the mirror root: ``/data/x`` → ``data/x``."""
    return path.lstrip("/")


def _glob_parts(pattern: str, path: str) -> int | None:
    """How many parts of ``path`` the pattern matches (POSIX glob: a wildcard never matches '/'), counting
    its folder matches too; None when they differ."""
    want = PurePosixPath(pattern).parts
    have = PurePosixPath(path).parts
    if len(have) < len(want):
        return None
    for w, h in zip(want, have, strict=False):
        if not fnmatch.fnmatchcase(h, w) or (h.startswith(".") and not w.startswith(".") and w != h):
            return None
    return len(want)


def match(out: TaskOutput, path: str) -> str | None:
    """Where the file at ``path`` goes below the output's url: "" for the output's own file, the rest of
    its path for a file in an output folder or matched by a pattern (without ``path_prefix``); None when
    it is none of the output's."""
    if out.is_pattern:
        if _glob_parts(out.path, path) is None:
            return None
        prefix = out.path_prefix.rstrip("/")
        if prefix and inside(path, prefix):
            return path[len(prefix) :].lstrip("/")
        return path.lstrip("/")
    if out.directory:
        if not inside(path, out.path) or path == out.path:
            return None
        return path[len(out.path.rstrip("/")) :].lstrip("/")
    return "" if path == out.path else None


def may_hold(out: TaskOutput, folder: str) -> bool:
    """Whether files of the output may lie in ``folder`` or below it."""
    if out.is_pattern:
        want = PurePosixPath(out.path).parts
        have = PurePosixPath(folder).parts
        if len(have) >= len(want):  # a folder the pattern matches: its files belong to the output
            return _glob_parts(out.path, folder) is not None
        return all(fnmatch.fnmatchcase(h, w) for w, h in zip(want, have, strict=False))
    target = out.path if out.directory else parent(out.path)
    return inside(target, folder) or inside(folder, target)

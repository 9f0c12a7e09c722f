"""How a sandbox shows the host's file system (read-only), and whether anything is mounted below the
folders it hides: :mod:`labcloud.execution.sandbox` builds bwrap's command line from these."""

from __future__ import annotations

import functools
import os
import re
import time
from pathlib import Path

VIEW_TTL_S = 2.0  # how long a listing of the host's folders serves the sandboxes that start


def host_view(cut: set[Path]) -> list[str]:
    """:func:`_listed_view`, listed again at most every :data:`VIEW_TTL_S` (each job's start needs it)."""
    return list(_listed_view(frozenset(cut), int(time.monotonic() // VIEW_TTL_S)))


@functools.lru_cache(maxsize=8)
def _listed_view(cut: frozenset[Path], _period: int) -> tuple[str, ...]:
    """bwrap arguments that show the host's file system read-only, without the folders in ``cut``.

    ``--ro-bind / /`` would copy every mount of the host, those under hidden folders too, and then remount
    each read-only. Container engines keep their containers' overlays and name spaces there (under /run,
    /var/lib, a home or /tmp), and one that changes or goes away meanwhile fails the sandbox's start (bwrap:
    "Unable to apply mount flags: remount ... Invalid argument"), for as long as that engine is busy. Instead,
    every folder above a hidden one is made afresh in the sandbox's root (same mode) and its other entries are
    bound one by one: nothing under a hidden folder is ever copied, so no mount there can get in the way.
    """
    above = {parent for c in cut for parent in c.parents}
    args: list[str] = []

    def walk(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:  # cannot list it: show it whole, as before; the hidden folders are covered anyway
            args.extend(["--ro-bind-try", str(folder), str(folder)])
            return
        for entry in entries:
            path = Path(entry.path)
            if path in cut or path in _FRESH:
                continue
            try:
                if entry.is_symlink():
                    args.extend(["--symlink", os.readlink(path), str(path)])
                elif path in above and entry.is_dir(follow_symlinks=False):
                    mode = entry.stat(follow_symlinks=False).st_mode & 0o7777
                    args.extend(["--perms", f"{mode:04o}", "--dir", str(path)])
                    walk(path)
                else:
                    args.extend(["--ro-bind-try", str(path), str(path)])
            except OSError:  # gone since it was listed
                continue

    walk(Path("/"))
    return tuple(args)


_FRESH = (Path("/dev"), Path("/proc"))  # the sandbox's own
WHOLE_ROOT = ["--ro-bind", "/", "/"]


def mounts_below(folders: set[Path]) -> bool:
    """Whether anything is mounted at or below one of ``folders`` (in this process's mount table)."""
    if not folders:
        return False
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return True  # cannot tell: the way that is safe either way
    prefixes = [os.fsencode(folder) for folder in folders]
    for line in table.splitlines():
        fields = line.split(b" ", 5)
        if len(fields) < 5:
            continue
        point = fields[4]
        if b"\\" in point:  # spaces, tabs, newlines and backslashes are written as \ooo
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), point)
        if any(point == prefix or point.startswith(prefix + b"/") for prefix in prefixes):
            return True
    return False

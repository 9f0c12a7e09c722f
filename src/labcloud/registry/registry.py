"""The app registry: every app file in a list of folders, reloaded when the files change.

Readers always get an immutable :class:`RegistrySnapshot`; a refresh builds a new one and swaps it in,
so a request never sees half of a reload. Broken files are reported as :class:`LoadProblem` and the
last version of that file that loaded keeps being served, so a typo in production does not take an app
offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from labcloud.errors import InvalidInput, NotFound
from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.loader import LoadProblem, LoadResult, parse_app_bytes
from labcloud.registry.models import AppSpec

log = logging.getLogger("labcloud.apps")

APP_FILE_SUFFIXES = (".yaml", ".yml")
# A file rewritten within the filesystem's timestamp granularity can keep its mtime and size; files
# modified this recently are therefore compared by content too (the "racy git" problem).
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class ResolvedEntrypoint:
    """An app, version and entrypoint chosen for a job."""

    app: AppSpec
    version: str
    entrypoint_name: str
    entrypoint: EntrypointSpec

    @property
    def app_name(self) -> str:
        return self.app.name

    def spec_hash(self) -> str:
        return self.entrypoint.spec_hash()


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry at one moment. Never changes after it is built."""

    apps: Mapping[str, AppSpec] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    problems: tuple[LoadProblem, ...] = ()

    def get(self, name: str) -> AppSpec:
        """The app called ``name``; :class:`NotFound` names the apps that exist."""
        try:
            return self.apps[name]
        except KeyError:
            raise NotFound(f"There is no app {name!r}; apps: {_names(self.apps)}.") from None

    def pick_version(self, name: str, version: str | None = None) -> tuple[AppSpec, str]:
        """The app and the version asked for (the latest if omitted); :class:`NotFound` names the others."""
        app = self.get(name)
        if version is None:
            return app, app.latest_version
        if version not in app.versions:
            raise NotFound(
                f"App {name!r} has no version {version!r}; versions: {_names(app.sorted_versions())}."
            )
        return app, version

    def resolve(
        self, name: str, version: str | None = None, entrypoint: str | None = None
    ) -> ResolvedEntrypoint:
        """Pick the version (latest if omitted) and entrypoint (the default one if omitted)."""
        app, version = self.pick_version(name, version)
        spec = app.versions[version]
        if entrypoint is None:
            chosen = spec.default_entrypoint_name()
            if chosen is None:
                raise InvalidInput.field(
                    ["body", "entrypoint"],
                    f"App {name!r} version {version!r} has several entrypoints and no default; "
                    f"choose one of: {_names(spec.entrypoints)}.",
                )
            entrypoint = chosen
        elif entrypoint not in spec.entrypoints:
            raise NotFound(
                f"App {name!r} version {version!r} has no entrypoint {entrypoint!r}; "
                f"entrypoints: {_names(spec.entrypoints)}."
            )
        return ResolvedEntrypoint(app, version, entrypoint, spec.entrypoints[entrypoint])


@dataclass(slots=True)
class _FileState:
    signature: tuple[int, int, int, int]
    sha256: str
    result: LoadResult
    last_good: AppSpec | None

    @property
    def served(self) -> AppSpec | None:
        return self.result.spec if self.result.spec is not None else self.last_good


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class AppRegistry:
    """App files from ``dirs``; a later folder overrides an earlier one for the same app name."""

    def __init__(self, dirs: list[Path], *, min_check_interval_s: float = 1.0) -> None:
        # The same folder given twice would report every file twice; keep its first place.
        unique: dict[Path, None] = {}
        for d in dirs:
            unique.setdefault(Path(d).absolute(), None)
        self._dirs = tuple(unique)
        self._interval_ns = int(min_check_interval_s * 1e9)
        self._lock = threading.Lock()
        self._files: dict[Path, _FileState] = {}
        self._snapshot = RegistrySnapshot()
        self._last_check_ns: int | None = None
        self._dir_problems: tuple[LoadProblem, ...] = ()
        self.refresh(force=True)

    @property
    def dirs(self) -> tuple[Path, ...]:
        return self._dirs

    def _due(self) -> bool:
        return self._last_check_ns is None or time.monotonic_ns() - self._last_check_ns >= self._interval_ns

    def snapshot(self) -> RegistrySnapshot:
        """The current apps, after checking the files if the last check is older than the interval."""
        # A reader never waits for another thread's reload: it takes the snapshot that is there.
        if self._due() and self._lock.acquire(blocking=False):
            try:
                if self._due():
                    self._refresh_locked()
            finally:
                self._lock.release()
        return self._snapshot

    def refresh(self, force: bool = False) -> RegistrySnapshot:
        """Check the files now (``force``) or if the interval has passed, and reload what changed."""
        with self._lock:
            if force or self._due():
                self._refresh_locked()
            return self._snapshot

    def apps(self) -> list[AppSpec]:
        """All apps, sorted by name."""
        return list(self.snapshot().apps.values())

    def get(self, name: str) -> AppSpec:
        return self.snapshot().get(name)

    def pick_version(self, name: str, version: str | None = None) -> tuple[AppSpec, str]:
        return self.snapshot().pick_version(name, version)

    def resolve(
        self, name: str, version: str | None = None, entrypoint: str | None = None
    ) -> ResolvedEntrypoint:
        return self.snapshot().resolve(name, version, entrypoint)

    def problems(self) -> list[LoadProblem]:
        return list(self.snapshot().problems)

    # -- loading --------------------------------------------------------------------------------------

    def _list_dir(
        self, folder: Path, problems: list[LoadProblem]
    ) -> list[tuple[Path, os.stat_result]] | None:
        """The app files in ``folder`` with their stat; ``None`` if the folder cannot be read now."""
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            return []  # not created yet: picked up on a later check
        except OSError as exc:
            problems.append(
                LoadProblem(str(folder), None, f"cannot list the apps folder: {exc.strerror or exc}")
            )
            return None
        found = []
        for entry in entries:
            # Hidden files are editor swap/lock files more often than apps.
            if entry.name.startswith(".") or not entry.name.endswith(APP_FILE_SUFFIXES):
                continue
            try:
                if entry.is_file():
                    found.append((Path(entry.path), entry.stat()))
            except OSError:
                continue  # vanished between listing and stat: it is gone
        return found

    def _check_file(self, path: Path, st: os.stat_result) -> bool:
        """Update the state of one file; True if its content changed."""
        old = self._files.get(path)
        signature = _signature(st)
        racy = time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS
        if old is not None and old.signature == signature and not racy:
            return False
        try:
            raw = path.read_bytes()
        except OSError as exc:
            if old is not None and not path.exists():
                return False  # deleted since the listing; the next check removes it
            problem = LoadProblem(str(path), None, f"cannot read the file: {exc.strerror or exc}")
            result = LoadResult(str(path), None, (problem,))
            self._files[path] = _FileState(signature, "", result, old.last_good if old else None)
            return True
        sha = hashlib.sha256(raw).hexdigest()
        if old is not None and old.sha256 == sha:
            old.signature = signature
            return False
        try:
            result = parse_app_bytes(raw, str(path))
        except Exception as exc:  # a bug in validation must not stop the other apps from loading
            log.exception("Unexpected error while loading %s", path)
            result = LoadResult(str(path), None, (LoadProblem(str(path), None, f"internal error: {exc!r}"),))
        last_good = result.spec if result.spec is not None else (old.last_good if old else None)
        self._files[path] = _FileState(signature, sha, result, last_good)
        if result.spec is not None:
            log.info(
                "Loaded app %r (versions: %s) from %s",
                result.spec.name,
                ", ".join(result.spec.versions),
                path,
            )
        return True

    def _refresh_locked(self) -> None:
        self._last_check_ns = time.monotonic_ns()
        dir_problems: list[LoadProblem] = []
        listing: list[list[Path]] = []
        changed = False
        for folder in self._dirs:
            entries = self._list_dir(folder, dir_problems)
            if entries is None:
                # A folder that cannot be read for a moment (permissions, NFS) keeps its apps.
                listing.append(sorted(p for p in self._files if p.parent == folder))
                continue
            listing.append([path for path, _ in entries])
            for path, st in entries:
                changed = self._check_file(path, st) or changed
        present = {path for paths in listing for path in paths}
        for gone in set(self._files) - present:
            log.info("App file %s was removed", gone)
            del self._files[gone]
            changed = True
        if changed or tuple(dir_problems) != self._dir_problems:
            self._dir_problems = tuple(dir_problems)
            self._publish(listing, dir_problems)

    def _publish(self, listing: list[list[Path]], dir_problems: list[LoadProblem]) -> None:
        """Build the snapshot from the file states and swap it in; log problems that are new."""
        apps: dict[str, AppSpec] = {}
        sources: dict[str, str] = {}
        problems = list(dir_problems)
        notes: dict[LoadProblem, str] = {}
        for paths in listing:
            declared_here: dict[str, Path] = {}
            for path in paths:
                state = self._files[path]
                problems.extend(state.result.problems)
                app = state.served
                if state.result.spec is None and app is not None:
                    for problem in state.result.problems:
                        notes[problem] = f" (still serving the last good version of app {app.name!r})"
                if app is None:
                    continue
                if app.name in declared_here:
                    problems.append(
                        LoadProblem(
                            str(path),
                            state.result.name_line,
                            f"app {app.name!r} is already declared in {declared_here[app.name].name} "
                            "in the same folder; this file is ignored",
                        )
                    )
                    continue
                declared_here[app.name] = path
                apps[app.name] = app
                sources[app.name] = str(path)
        previous = set(self._snapshot.problems)
        for problem in problems:
            if problem not in previous:
                log.warning("Problem in app file %s%s", problem, notes.get(problem, ""))
        ordered = dict(sorted(apps.items()))
        self._snapshot = RegistrySnapshot(
            apps=MappingProxyType(ordered),
            sources=MappingProxyType({name: sources[name] for name in ordered}),
            problems=tuple(problems),
        )

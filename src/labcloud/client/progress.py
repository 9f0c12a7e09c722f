"""Showing transfers: progress bars (rich, imported only when a bar is shown; they work in a terminal and
in a notebook), or a function of yours called with the bytes done and the total."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labcloud.client.errors import ClientError
from labcloud.client.uploads import Progress, UploadWatcher

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bars

# ``progress=`` of uploads and downloads: True for bars, or a function called with (bytes done, total)
ProgressCallback = Callable[[int, int | None], None]
ShowProgress = bool | ProgressCallback


def human_size(size: int | float | None) -> str:
    """``1536`` → ``1.5 KiB``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def transfer_progress(console: Console | None = None) -> Bars:
    """Bars for bytes going up or down, on ``console`` (default: standard error), gone when done; none
    when the console is not a terminal or a notebook (logs, pipes)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = console or Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (console.is_terminal or console.is_jupyter),
    )


class UploadBars(UploadWatcher):
    """A bar per file being uploaded and one for all of them, a line per stored file, notes dimmed."""

    def __init__(self, bars: Bars, plan: list[tuple[Path, str]]) -> None:
        self.bars = bars
        self.sizes = [local.stat().st_size for local, _ in plan]
        self.overall = bars.add_task(
            f"↑ {len(plan)} file{'s' if len(plan) != 1 else ''}", total=sum(self.sizes)
        )
        self.tasks: dict[int, Any] = {}

    def started(self, index: int, local: Path, remote: str, size: int) -> None:
        self.tasks[index] = self.bars.add_task(f"  {local.name}", total=size)

    def moved(self, index: int, count: int) -> None:
        self.bars.advance(self.tasks[index], count)
        self.bars.advance(self.overall, count)

    def note(self, message: str) -> None:
        from rich.text import Text

        self.bars.console.print(Text(message, style="dim"))

    def finished(self, index: int, stored: dict[str, Any]) -> None:
        from rich.text import Text

        self.bars.remove_task(self.tasks.pop(index))
        size, sha256 = human_size(stored["size"]), stored["sha256"][:12]
        self.bars.console.print(
            Text(f"uploaded {stored['local']} → {stored['path']} ({size}, sha256 {sha256}…)")
        )

    def failed(self, index: int, error: ClientError) -> None:
        if index in self.tasks:
            self.bars.remove_task(self.tasks.pop(index))


class UploadCallback(UploadWatcher):
    """Calls ``callback(bytes done, total bytes)`` of all the files as they go up."""

    def __init__(self, callback: ProgressCallback, plan: list[tuple[Path, str]]) -> None:
        self.callback = callback
        self.total = sum(local.stat().st_size for local, _ in plan)
        self.done = 0
        self.lock = threading.Lock()

    def moved(self, index: int, count: int) -> None:
        with self.lock:
            self.done += count
            done = self.done
        self.callback(done, self.total)


@contextlib.contextmanager
def upload_watcher(show: ShowProgress, plan: list[tuple[Path, str]]) -> Iterator[UploadWatcher | None]:
    """What watches uploads of ``plan`` for ``progress=show``: bars, your function, or nothing."""
    if callable(show):
        yield UploadCallback(show, plan)
    elif show:
        with transfer_progress() as bars:
            yield UploadBars(bars, plan)
    else:
        yield None


@contextlib.contextmanager
def download_progress(show: ShowProgress, name: str, total: int | None) -> Iterator[Progress | None]:
    """The ``on_progress`` of a download of ``total`` bytes (None: unknown) for ``progress=show``."""
    if callable(show):
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n
            show(done, total)

        yield count
    elif show:
        with transfer_progress() as bars:
            task = bars.add_task(f"↓ {name}", total=total)
            yield lambda n: bars.advance(task, n)
    else:
        yield None

"""Your file space in the typed clients: :class:`Files` of :class:`~labcloud.client.Client` and its asyncio
twin :class:`AsyncFiles`: list, upload (resumable), download, move, delete, storage use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from labcloud.client import calls
from labcloud.client.common import (
    FilesUpload,
    LocalPath,
    StoredFiles,
    file_target,
    no_such_file,
    upload_plan,
    upload_settings,
    uploaded,
)
from labcloud.client.downloads import check_download
from labcloud.client.errors import check_options
from labcloud.client.models import FileInfo, StorageUsage
from labcloud.client.progress import ShowProgress, download_progress, upload_watcher

if TYPE_CHECKING:
    from labcloud.client.aclient import AsyncClient
    from labcloud.client.client import Client

__all__ = ["AsyncFiles", "Files"]


class Files:
    """Your file space: list, upload (resumable), download, move, delete."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, prefix: str = "") -> Iterator[FileInfo]:
        """The files and folders of a folder of your space (default the top), by name, all pages."""
        for item in self._client.connection.files(prefix):
            yield FileInfo.model_validate(item)

    def info(self, path: str) -> FileInfo | None:
        """The file at ``path`` (``type`` file, with size and SHA-256), a folder (``type`` folder) or None."""
        found = self._client.connection.file_info(path)
        return None if found is None else FileInfo.model_validate({"size": 0, **found})

    def upload(
        self, paths: LocalPath | Sequence[LocalPath], to: str = "", **options: Unpack[FilesUpload]
    ) -> StoredFiles:
        """Upload files or folders (a folder keeps its name and layout) into the folder ``to`` of your
        space; the stored files, each checked by SHA-256.

        Uploads are resumable: after a network failure each file goes on where it stopped (``retries``
        failures in a row end it), and with ``resume`` (the default) an upload that was interrupted (a
        crash, a restarted notebook) continues when it is run again. ``progress=True`` shows bars; a
        function is called with (bytes done, total). ``parallel`` files go at a time (4), in requests of
        ``chunk_size`` bytes."""
        check_options("upload", options, FilesUpload)
        plan = upload_plan(paths, to)
        progress, settings = upload_settings(options)
        with upload_watcher(progress, plan) as watcher:
            done, failed = self._client.connection.upload_many(plan, watcher=watcher, **settings)
        return uploaded(done, failed)

    def download(self, path: str, dest: LocalPath | None = None, *, progress: ShowProgress = False) -> Path:
        """Download a file (checked by its SHA-256) or a folder (as a zip) of your space to ``dest`` (a
        file, or a folder to put it in; default the current folder); returns the file written."""
        info = self._client.connection.file_info(path)
        if info is None:
            raise no_such_file(path)
        target = file_target(info, dest)
        with download_progress(progress, target.name, info.get("size")) as moved:
            self._client.connection.download_file(str(info["path"]), target, moved)
        check_download(target, str(info["path"]), info.get("sha256"))
        return target

    def move(self, source: str, destination: str) -> FileInfo:
        """Move or rename a file or folder; ``destination`` must not exist yet."""
        return FileInfo.model_validate(self._client.connection.call(calls.move_file(source, destination)))

    def delete(self, path: str) -> None:
        """Delete a file, or a folder with everything in it."""
        self._client.connection.call(calls.delete_file(path))

    def usage(self) -> StorageUsage:
        """How much of your storage limit you use."""
        return StorageUsage.model_validate(self._client.connection.call(calls.storage_usage()))


class AsyncFiles:
    """Your file space: list, upload (resumable), download, move, delete."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, prefix: str = "") -> AsyncIterator[FileInfo]:
        """The files and folders of a folder of your space (default the top), by name, all pages."""
        async for item in self._client.connection.pages("/files", {"prefix": prefix} if prefix else {}):
            yield FileInfo.model_validate(item)

    async def info(self, path: str) -> FileInfo | None:
        """The file at ``path``, a folder (``type`` folder), or None."""
        found = await self._client.connection.file_info(path)
        return None if found is None else FileInfo.model_validate({"size": 0, **found})

    async def upload(
        self, paths: LocalPath | Sequence[LocalPath], to: str = "", **options: Unpack[FilesUpload]
    ) -> StoredFiles:
        """Upload files or folders into the folder ``to`` of your space, resumably (see
        :meth:`labcloud.client.Files.upload`)."""
        check_options("upload", options, FilesUpload)
        plan = upload_plan(paths, to)
        progress, settings = upload_settings(options)
        with upload_watcher(progress, plan) as watcher:
            done, failed = await self._client.connection.upload_many(plan, watcher=watcher, **settings)
        return uploaded(done, failed)

    async def download(
        self, path: str, dest: LocalPath | None = None, *, progress: ShowProgress = False
    ) -> Path:
        """Download a file (checked by its SHA-256) or a folder (as a zip) of your space to ``dest``."""
        info = await self._client.connection.file_info(path)
        if info is None:
            raise no_such_file(path)
        target = file_target(info, dest)
        with download_progress(progress, target.name, info.get("size")) as moved:
            await self._client.connection.download(calls.file(str(info["path"])), target, moved)
        check_download(target, str(info["path"]), info.get("sha256"))
        return target

    async def move(self, source: str, destination: str) -> FileInfo:
        """Move or rename a file or folder; ``destination`` must not exist yet."""
        return FileInfo.model_validate(
            await self._client.connection.call(calls.move_file(source, destination))
        )

    async def delete(self, path: str) -> None:
        """Delete a file, or a folder with everything in it."""
        await self._client.connection.call(calls.delete_file(path))

    async def usage(self) -> StorageUsage:
        """How much of your storage limit you use."""
        return StorageUsage.model_validate(await self._client.connection.call(calls.storage_usage()))

"""The runner's reporter for a job run on this server (the local executor's): what the runner learns goes to
the database directly, through the services (:mod:`labcloud.services.lifecycle` decides the states).

It knows the attempt it reports for, the database, the blob store and the attempt's cancel check, all handed
to it when it is made; nothing of the executor that made it. Waking the dispatchers when the job ends is
the executor's (after it gave the job's CPUs and memory back), not the reporter's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.db.models.jobs import without_definition
from labcloud.errors import Conflict, LabcloudError
from labcloud.execution.attempt import Collected
from labcloud.execution.process import Handle
from labcloud.execution.run_end import RunEnd
from labcloud.services import files, job_files, lifecycle, tes_run
from labcloud.services.job_states import JobState
from labcloud.settings import Settings
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)
PROGRESS_WRITE_INTERVAL_S = 0.5
CANCEL_POLL_INTERVAL_S = 1.0


class DatabaseReporter:
    """The runner's reporter for a local job: what it learns goes to the database directly."""

    def __init__(
        self, settings: Settings, db: Database, storage: Storage, job: Job, cancelled: Callable[[], bool]
    ) -> None:
        """``cancelled``: whether the attempt was cancelled through this server (a cancel through another
        one is read from the database now and then)."""
        self.settings, self.db, self.storage = settings, db, storage
        self.cancelled = cancelled
        self.job_id = job.id
        self.attempt = job.attempts
        self.handle: Handle | None = None
        self._gone = False
        self._last_write = 0.0
        self._last_check = time.monotonic()
        self._stored: list[tuple[files.Upload, str]] = []
        # A task: where its outputs go (else to jobs/<id>/ in the owner's space), and what went where.
        self.outputs: tes_run.TaskOutputs | None = None
        self._placed: list[tuple[str, str, int]] = []

    def _job(self, session: Session) -> Job | None:
        """The job while this attempt is its current one, else None (and the job is gone for us)."""
        job = session.get(Job, self.job_id, options=without_definition())
        if job is None or job.attempts != self.attempt:
            self._gone = True
            return None
        return job

    def begin(self) -> bool:
        with self.db.session() as session:
            job = self._job(session)
            if job is None:
                return False
            try:
                lifecycle.transition(session, job, JobState.RUNNING)
            except Conflict:  # cancelled while staging
                return False
            return True

    def launched(self, handle: Handle) -> None:
        self.handle = handle

    def progress(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last_write < PROGRESS_WRITE_INTERVAL_S and fraction < 1.0:
            return
        self._last_write = now
        with self.db.session() as session:
            job = self._job(session)
            if job is not None and job.state == JobState.RUNNING:
                job.progress = fraction

    def cancel_requested(self) -> bool:
        if self.cancelled():
            return True
        now = time.monotonic()
        if now - self._last_check >= CANCEL_POLL_INTERVAL_S:  # a cancel through another server
            self._last_check = now
            with self.db.session() as session:
                job = self._job(session)
                if job is None or job.state == JobState.CANCELLING:
                    return True
        return False

    def gone(self) -> bool:
        return self._gone

    def keep(self, collected: Collected, succeeded: bool) -> str | None:
        """Store the copies of the outputs (the index is written with the job's end, in one transaction)."""
        if succeeded and collected.files:  # (with nothing to store, the end goes through it in one commit)
            with self.db.session() as session:  # a crash from here on resumes from "finishing"
                job = self._job(session)
                if job is None:
                    return None
                lifecycle.begin_finishing(session, job)
        try:
            for item in collected.files:
                try:
                    paths = (
                        self.outputs.paths(item.rel)
                        if self.outputs is not None
                        else [job_files.output_path(self.job_id, item.rel)]
                    )
                except LabcloudError as exc:
                    collected.skip(f"'{item.rel}': {exc.errors[0]['msg'] if exc.errors else exc.detail}")
                    continue
                paths = [p for p in paths if all(p != upload.path for upload, _ in self._stored)]
                if self.outputs is not None:  # a task's file may go to object stores, and to the space
                    for url in [p for p in paths if tes_run.is_s3(p)]:
                        self.outputs.upload(url, item.copy)
                        self._placed.append((item.rel, url, item.size))
                    paths = [p for p in paths if not tes_run.is_s3(p)]
                # (a task's file may go to several outputs)
                for path, copy in zip(paths, tes_run.copies_for(item.copy, len(paths)), strict=True):
                    key = self.storage.new_key()
                    self.storage.put_file(key, copy)  # consumes the copy, never the job's file
                    self._stored.append((files.Upload(path, copy, item.size, item.sha256), key))
                    self._placed.append((item.rel, path, item.size))
        except Exception as exc:
            log.exception("outputs of job %s could not be stored", self.job_id)
            self._drop_stored()
            return f"the outputs could not be stored: {_detail(exc)}"
        if succeeded and self.outputs is not None:
            missing = self.outputs.missing([item.rel for item in collected.files])
            if missing:
                return f"the task left no file at {', '.join(missing)}"
        return None

    def finish(self, end: RunEnd) -> None:
        try:
            try:
                replaced = self._record(end, index=True)
            except LabcloudError as exc:  # an output's path clashes with the owner's own files
                self._drop_stored()
                end = dataclasses.replace(end, problem=f"the outputs could not be kept: {exc.detail}")
                replaced = self._record(end, index=False)
        except BaseException:
            self._drop_stored()  # nothing refers to them: the next try stores its own
            raise
        self._stored = []
        files.release(self.db, self.storage, replaced)

    def _record(self, end: RunEnd, index: bool) -> list[str]:
        """The outputs' index and the job's end, in one transaction; the keys of replaced objects."""
        for attempt in range(3):
            try:
                return self._record_once(end, index)
            except IntegrityError:  # another job's outputs created the same folder (jobs/) meanwhile
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _record_once(self, end: RunEnd, index: bool) -> list[str]:
        replaced: list[str] = []
        with self.db.session() as session:
            job = self._job(session)
            if job is None:
                return []
            if index and self._stored:
                space = tes_run.outputs_space(session, job)
                replaced = job_files.index_outputs(session, self.settings, space, self.job_id, self._stored)
                if self.outputs is not None:
                    self.outputs.record(session, self._placed)
            # (a first attempt that stored nothing has no outputs: nothing to count)
            counted = self._stored or self.outputs is not None or job.attempts > 1
            lifecycle.record_end(session, job, end, tes_run.count_outputs(session, job) if counted else 0)
        return replaced

    def _drop_stored(self) -> None:
        keys = [key for _, key in self._stored]
        self._stored, self._placed = [], []
        try:
            self.storage.delete(keys)
        except Exception:
            log.warning(
                "could not remove %d stored output(s) of job %s; housekeeping will", len(keys), self.job_id
            )


def _detail(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__

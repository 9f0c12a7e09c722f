"""Retention: how long ended jobs keep their working folders, their outputs and themselves, for the whole
installation (an app's ``retention:`` block overrides each of these for its jobs; see
:mod:`labcloud.services.retention`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_DAYS = 36500  # a hundred years: anything longer is a typo


class RetentionSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings` for retention. Days of 0 keep for ever."""

    retention_folders_days: float = Field(
        0,
        ge=0,
        le=MAX_DAYS,
        description="Remove the working folders an ended job left on the server (its attempt folders; the "
        "log stays) this many days after it ended; 0: never.",
    )
    retention_outputs_days: float = Field(
        0,
        ge=0,
        le=MAX_DAYS,
        description="Delete an ended job's outputs (its files under jobs/<id>/) this many days after it "
        "ended; 0: never.",
    )
    retention_jobs_days: float = Field(
        0,
        ge=0,
        le=MAX_DAYS,
        description="Delete whole ended jobs (record, history, log, outputs) this many days after they "
        "ended; 0: never.",
    )
    retention_keep_last: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Each user's newest this many ended jobs are kept whatever their age (an app's own "
        "keep_last counts that app's jobs only); 0: none kept for that reason.",
    )
    retention_every_h: float = Field(
        24,
        gt=0,
        le=24 * 366,
        description="The dispatching server applies retention at most once per this many hours.",
    )

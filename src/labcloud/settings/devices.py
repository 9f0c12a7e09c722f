"""Settings of devices (workers seen as a lab's instruments): when one counts as down, the size of the status
it reports, and how often and for how long its history is kept."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DeviceSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings` for the devices page and the status workers report."""

    device_down_after_s: int = Field(
        0,
        ge=0,
        le=86400,
        description="A worker without a heartbeat for this long is down on the devices page; 0: the lease "
        "time (lease_seconds).",
    )
    device_status_max_bytes: int = Field(
        8192,
        ge=256,
        le=1024 * 1024,
        description="The largest status (telemetry.status, as compact JSON) a heartbeat may carry; a larger "
        "one is not kept and the worker is told.",
    )
    device_sample_interval_s: int = Field(
        60,
        ge=1,
        le=86400,
        description="A device's history keeps at most one sample (load, free disk and memory, the numeric "
        "fields of its status) per this many seconds.",
    )
    device_history_hours: float = Field(
        24, gt=0, le=24 * 366, description="How long samples are kept (housekeeping removes older ones)."
    )
    device_schema_cache_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="How long a server keeps the status schemas in memory before reading them again (a "
        "schema changed on another replica applies after at most this long; on this one, at once).",
    )

    @property
    def device_down_seconds(self) -> int:
        lease: int = getattr(self, "lease_seconds", 60)
        return self.device_down_after_s or lease

"""The Python client of labcloud: run a lab's apps on a labcloud server from a script or a notebook.

    from labcloud.client import Client

    with Client.from_env() as client:            # the login of `labcloud login`, or LABCLOUD_SERVER/_TOKEN
        client.files.upload("trace.csv", to="recordings", progress=True)
        job = client.jobs.submit("spikes", params={"threshold": 5}, inputs={"trace": "recordings/trace.csv"})
        for line in job.logs(follow=True):
            print(line)
        job.wait().download("results")

:class:`Client` blocks; :class:`AsyncClient` is its asyncio twin. Answers are typed models
(:mod:`labcloud.client.models`); failures raise a :class:`ClientError` of the kind the server's answer
says (:class:`NotFound`, :class:`ValidationError` naming the field, :class:`QuotaExceeded`, ...) with its
problem details. ``client.connection`` is the plain HTTP API underneath, which the ``labcloud`` commands
use. Importing this package is cheap: the parts load when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labcloud.client.aclient import AsyncClient, AsyncFiles, AsyncJob, AsyncJobs, AsyncProjects
    from labcloud.client.client import Client, Files, Job, Jobs, Projects
    from labcloud.client.errors import (
        BadRequest,
        ClientError,
        Conflict,
        DownloadMismatch,
        Forbidden,
        JobFailed,
        NotFound,
        NotLoggedIn,
        QuotaExceeded,
        RateLimited,
        ServerError,
        ServiceUnavailable,
        Unauthorized,
        Unreachable,
        UploadMismatch,
        ValidationError,
        WaitTimeout,
    )
    from labcloud.client.models import (
        App,
        AppVersion,
        Entrypoint,
        FileInfo,
        InputFile,
        InputSlot,
        JobEvent,
        JobInfo,
        JoinCode,
        OutputFile,
        ProjectDetail,
        ProjectInfo,
        ProjectMember,
        Quota,
        QuotaRequest,
        Resources,
        StorageUsage,
        StoredFile,
        UsageRow,
        User,
    )

__all__ = [
    "App",
    "AppVersion",
    "AsyncClient",
    "AsyncFiles",
    "AsyncJob",
    "AsyncJobs",
    "AsyncProjects",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "DownloadMismatch",
    "Entrypoint",
    "FileInfo",
    "Files",
    "Forbidden",
    "InputFile",
    "InputSlot",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobInfo",
    "Jobs",
    "JoinCode",
    "NotFound",
    "NotLoggedIn",
    "OutputFile",
    "ProjectDetail",
    "ProjectInfo",
    "ProjectMember",
    "Projects",
    "Quota",
    "QuotaExceeded",
    "QuotaRequest",
    "RateLimited",
    "Resources",
    "ServerError",
    "ServiceUnavailable",
    "StorageUsage",
    "StoredFile",
    "Unauthorized",
    "Unreachable",
    "UploadMismatch",
    "UsageRow",
    "User",
    "ValidationError",
    "WaitTimeout",
]
# where the names come from, the light modules first (the clients import httpx)
_MODULES = (
    "labcloud.client.errors",
    "labcloud.client.models",
    "labcloud.client.client",
    "labcloud.client.aclient",
)


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module_name in _MODULES:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'labcloud.client' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

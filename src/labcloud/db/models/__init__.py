"""ORM models, a module per concept (accounts, projects, jobs, files, workers, events); every model is
importable from here. The schema itself is owned by the Alembic migrations next to this package."""

from __future__ import annotations

from labcloud.db.models.accounts import ApiToken as ApiToken
from labcloud.db.models.accounts import BrowserSession as BrowserSession
from labcloud.db.models.accounts import LoginAttempt as LoginAttempt
from labcloud.db.models.accounts import User as User
from labcloud.db.models.base import NAMING as NAMING
from labcloud.db.models.base import Base as Base
from labcloud.db.models.events import Event as Event
from labcloud.db.models.events import WebhookDelivery as WebhookDelivery
from labcloud.db.models.events import WebhookSubscription as WebhookSubscription
from labcloud.db.models.files import DirectUpload as DirectUpload
from labcloud.db.models.files import FileEntry as FileEntry
from labcloud.db.models.files import Upload as Upload
from labcloud.db.models.jobs import Job as Job
from labcloud.db.models.jobs import JobEvent as JobEvent
from labcloud.db.models.jobs import JobGroup as JobGroup
from labcloud.db.models.jobs import JobInput as JobInput
from labcloud.db.models.jobs import JobTag as JobTag
from labcloud.db.models.jobs import JobTarget as JobTarget
from labcloud.db.models.jobs import RetentionRun as RetentionRun
from labcloud.db.models.jobs import TesTask as TesTask
from labcloud.db.models.operations import AuditEvent as AuditEvent
from labcloud.db.models.operations import MaintenanceState as MaintenanceState
from labcloud.db.models.projects import Project as Project
from labcloud.db.models.projects import ProjectMember as ProjectMember
from labcloud.db.models.projects import ProjectRole as ProjectRole
from labcloud.db.models.projects import Quota as Quota
from labcloud.db.models.projects import QuotaRequest as QuotaRequest
from labcloud.db.models.projects import UsageRecord as UsageRecord
from labcloud.db.models.sso import SsoIdentity as SsoIdentity
from labcloud.db.models.sso import SsoUsedToken as SsoUsedToken
from labcloud.db.models.usage import UsageSample as UsageSample
from labcloud.db.models.workers import DeviceSample as DeviceSample
from labcloud.db.models.workers import DeviceSchema as DeviceSchema
from labcloud.db.models.workers import Worker as Worker
from labcloud.db.models.workers import WorkerState as WorkerState

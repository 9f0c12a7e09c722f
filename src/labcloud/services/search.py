"""One search across what a user can see: the apps, their own jobs and the files of their projects.

Words are matched in any case, as a part of a name (``%`` and ``_`` are letters here, never wildcards);
``key=value`` words also find jobs by tag. Each kind is bounded, so a search stays quick in a big lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labcloud import registry
from labcloud.db.models import FileEntry, Job, User
from labcloud.errors import InvalidInput
from labcloud.services import job_checks, projects
from labcloud.services import jobs as job_service

LIMIT = 20  # of each kind


@dataclass(frozen=True)
class FileHit:
    path: str  # as the user names it: "data/a.csv", or "projects/SLUG/data/a.csv" in a shared project
    kind: str
    size: int


@dataclass
class Found:
    apps: list[registry.AppSpec] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    files: list[FileHit] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.apps or self.jobs or self.files)


def _like(words: str) -> str:
    escaped = words.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(session: Session, apps: registry.AppRegistry, user: User, query: str) -> Found:
    words = " ".join(query.split())[:200]
    found = Found()
    if not words:
        return found
    lowered = words.lower()
    for app in apps.apps():
        text = f"{app.name} {app.title} {app.description}".lower()
        if lowered in text:
            found.apps.append(app)
    found.apps = found.apps[:LIMIT]
    tags = [w for w in words.split() if "=" in w]
    try:
        wanted = job_checks.tag_filters(tags, ["q"]) if tags else {}
    except InvalidInput:
        wanted = {}
    plain = " ".join(w for w in words.split() if "=" not in w)
    flt = job_service.JobFilter(text=plain or None, tags=wanted)
    if plain or wanted:
        found.jobs = list(job_service.list_jobs(session, user, flt, limit=LIMIT, cursor=None).items)
        if plain and not wanted:  # an app's name finds its jobs too
            by_app = job_service.JobFilter(app=plain)
            seen = {j.id for j in found.jobs}
            extra = job_service.list_jobs(session, user, by_app, limit=LIMIT, cursor=None).items
            found.jobs += [j for j in extra if j.id not in seen][: LIMIT - len(found.jobs)]
    if plain:
        found.files = _files(session, user, plain)
    return found


def _files(session: Session, user: User, words: str) -> list[FileHit]:
    """Files and folders whose name holds the words, in the user's projects (their own space first)."""
    mine = projects.mine(session, user)
    prefix = {p.id: ("" if p.personal_user_id == user.id else f"projects/{p.slug}/") for p, _ in mine}
    if not prefix:
        return []
    rows = session.scalars(
        select(FileEntry)
        .where(
            FileEntry.project_id.in_(list(prefix)),
            func.lower(FileEntry.name).like(_like(words), escape="\\"),
        )
        .order_by(FileEntry.path)
        .limit(LIMIT * 3)
    )
    hits = [FileHit(prefix[r.project_id] + r.path, r.kind, r.size) for r in rows]
    return sorted(hits, key=lambda h: (h.path.startswith("projects/"), h.path.startswith("jobs/"), h.path))[
        :LIMIT
    ]

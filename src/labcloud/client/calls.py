"""The requests of the API, each described once (method, path below ``/api/v1``, query, body) for the sync
and the async connection to send."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

TUS = {"Tus-Resumable": "1.0.0"}
# the last chunk's answer waits for the file to be stored: a generous read timeout
TUS_APPEND_TIMEOUT = httpx.Timeout(30.0, write=None, read=600.0)


@dataclass(frozen=True)
class Call:
    """One request, and what of its answer the caller wants: the JSON body, the text, the response itself
    (for its headers), or nothing."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None
    returns: Literal["json", "text", "response", "nothing"] = "json"

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` (without headers and timeout)."""
        given = {"params": self.params, "json": self.json, "data": self.data, "content": self.content}
        return {k: v for k, v in given.items() if v is not None}


def quote_path(path: str) -> str:
    """A slash-separated path, each segment percent-encoded for use in a URL."""
    return quote(path.strip("/"), safe="/")


def _job(job_id: str) -> str:
    return f"/jobs/{quote_path(str(job_id))}"


# ------------------------------------------------------------------------------------------ account


def login(email: str, password: str) -> Call:
    return Call("POST", "/auth/login", data={"username": email, "password": password})


def me() -> Call:
    return Call("GET", "/me")


def create_token(name: str, scopes: list[str]) -> Call:
    return Call("POST", "/me/tokens", json={"name": name, "scopes": scopes})


def revoke_token(token_id: str) -> Call:
    return Call("DELETE", f"/me/tokens/{quote_path(token_id)}", returns="nothing")


# ------------------------------------------------------------------------------------------ apps


def apps() -> Call:
    return Call("GET", "/apps")


def app(name: str) -> Call:
    return Call("GET", f"/apps/{quote_path(name)}")


def app_images(name: str) -> Call:
    return Call("GET", f"/apps/{quote_path(name)}/images")


def pull_images(name: str, version: str | None, timeout: float) -> Call:
    body = {"version": version} if version else {}
    wait = httpx.Timeout(timeout, read=None)  # as long as the pulls take
    return Call("POST", f"/apps/{quote_path(name)}/pull", json=body, timeout=wait)


# ------------------------------------------------------------------------------------------ files


def files(prefix: str = "", limit: int = 200) -> Call:
    """The first page of a folder of your space (the top for "")."""
    return Call("GET", "/files", params={"prefix": prefix, "limit": limit} if prefix else {"limit": limit})


def file(path: str) -> str:
    """The address of a file (or a folder, as a zip) of your space, to download."""
    return f"/files/{quote_path(path)}"


def delete_file(path: str) -> Call:
    return Call("DELETE", file(path), returns="nothing")


def move_file(source: str, destination: str) -> Call:
    return Call("POST", "/files:move", json={"from": source, "to": destination})


def storage_usage() -> Call:
    return Call("GET", "/me/storage")


def tus_create(remote: str, size: int) -> Call:
    """Start a resumable upload of ``size`` bytes to ``remote``; its URL is the answer's Location."""
    meta = "path " + base64.b64encode(remote.encode()).decode()
    headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": meta}
    return Call("POST", "/uploads", headers=headers, returns="response")


def tus_offset(url: str) -> Call:
    return Call("HEAD", url, headers=dict(TUS), returns="response")


def tus_append(url: str, offset: int, data: bytes) -> Call:
    """Send ``data`` at ``offset``, with its SHA-256 for the server to check."""
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    headers = {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Upload-Checksum": f"sha256 {checksum}",
    }
    return Call("PATCH", url, content=data, headers=headers, timeout=TUS_APPEND_TIMEOUT, returns="response")


def tus_cancel(url: str) -> Call:
    return Call("DELETE", url, headers=dict(TUS), returns="nothing")


# ------------------------------------------------------------------------------------------ jobs


def submit(body: dict[str, Any]) -> Call:
    return Call("POST", "/jobs", json=body)


def job(job_id: str) -> Call:
    return Call("GET", _job(job_id))


def events(job_id: str) -> Call:
    return Call("GET", f"{_job(job_id)}/events")


def cancel(job_id: str) -> Call:
    return Call("POST", f"{_job(job_id)}/cancel")


def rerun(job_id: str, current_image: bool = False, current_inputs: bool = False) -> Call:
    body = {"image": "current"} if current_image else {}
    if current_inputs:
        body["inputs"] = "current"
    return Call("POST", f"{_job(job_id)}/rerun", json=body or None)


def delete_job(job_id: str) -> Call:
    return Call("DELETE", _job(job_id), returns="nothing")


def log(job_id: str, times: bool = False) -> Call:
    return Call(
        "GET",
        f"{_job(job_id)}/logs",
        params={"times": "true"} if times else None,
        headers={"Accept": "text/plain"},
        returns="text",
    )


def follow_log(job_id: str, params: dict[str, Any]) -> Call:
    """The live log as server-sent events (sent as a stream)."""
    return Call("GET", f"{_job(job_id)}/logs", params=params, headers={"Accept": "text/event-stream"})


def start_session(body: dict[str, Any]) -> Call:
    return Call("POST", "/sessions", json=body)


def sessions(project: str | None = None) -> Call:
    return Call("GET", "/sessions", params={"project": project} if project else None)


def session(session_id: str) -> Call:
    return Call("GET", f"/sessions/{quote(session_id, safe='')}")


def cancel_session(session_id: str) -> Call:
    return Call("POST", f"/sessions/{quote(session_id, safe='')}/cancel")


def submit_sweep(body: dict[str, Any]) -> Call:
    return Call("POST", "/sweeps", json=body)


def sweeps(project: str | None = None) -> Call:
    return Call("GET", "/sweeps", params={"project": project} if project else None)


def sweep(sweep_id: str) -> Call:
    return Call("GET", f"/sweeps/{quote(sweep_id, safe='')}")


def sweep_jobs(sweep_id: str, cursor: str | None = None, limit: int = 100) -> Call:
    params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
    return Call("GET", f"/sweeps/{quote(sweep_id, safe='')}/jobs", params=params)


def cancel_sweep(sweep_id: str) -> Call:
    return Call("POST", f"/sweeps/{quote(sweep_id, safe='')}/cancel")


def inputs(job_id: str) -> Call:
    return Call("GET", f"{_job(job_id)}/inputs")


def outputs(job_id: str) -> Call:
    return Call("GET", f"{_job(job_id)}/outputs")


def output(job_id: str, path: str) -> str:
    """The address of one output file of a job, to download."""
    return f"{_job(job_id)}/outputs/{quote_path(path)}"


def outputs_zip(job_id: str) -> str:
    """The address of all outputs of a job as one zip, to download."""
    return f"{_job(job_id)}/outputs.zip"


# ------------------------------------------------------------------------------------------ projects


def _segment(name: str) -> str:
    """One path segment: a slash in it is data, not a separator."""
    return quote(str(name), safe="")


def _project(slug: str) -> str:
    return f"/projects/{_segment(slug)}"


def projects() -> Call:
    return Call("GET", "/projects")


def project(slug: str) -> Call:
    return Call("GET", _project(slug))


def create_project(name: str, slug: str | None, description: str) -> Call:
    body: dict[str, Any] = {"name": name, "description": description}
    if slug:
        body["slug"] = slug
    return Call("POST", "/projects", json=body)


def add_member(slug: str, email: str, role: str) -> Call:
    return Call("POST", f"{_project(slug)}/members", json={"email": email, "role": role})


def set_role(slug: str, user_id: str, role: str) -> Call:
    return Call("PATCH", f"{_project(slug)}/members/{_segment(user_id)}", json={"role": role})


def remove_member(slug: str, user_id: str) -> Call:
    """Take a member out of a project; with your own id, leave it."""
    return Call("DELETE", f"{_project(slug)}/members/{_segment(user_id)}", returns="nothing")


def join_code(slug: str, days: int | None = None) -> Call:
    """A new join code for ``days`` (None: as long as the server's default)."""
    return Call("POST", f"{_project(slug)}/join-code", json={} if days is None else {"days": days})


def drop_join_code(slug: str) -> Call:
    return Call("DELETE", f"{_project(slug)}/join-code", returns="nothing")


def join(code: str) -> Call:
    return Call("POST", "/projects/join", json={"code": code})


# ------------------------------------------------------------------------------------------ quotas, usage


def quotas(slug: str) -> Call:
    return Call("GET", f"{_project(slug)}/quotas")


def set_quota(
    slug: str, resource: str, limit: float, period: str, starts_at: str | None, ends_at: str | None
) -> Call:
    """Admins: set (or make) a project's quota; ``starts_at``/``ends_at`` (ISO 8601) for an allocation."""
    body: dict[str, Any] = {"limit": limit, "period": period}
    if starts_at is not None:
        body["starts_at"] = starts_at
    if ends_at is not None:
        body["ends_at"] = ends_at
    return Call("PUT", f"{_project(slug)}/quotas/{_segment(resource)}", json=body)


def remove_quota(slug: str, resource: str) -> Call:
    return Call("DELETE", f"{_project(slug)}/quotas/{_segment(resource)}", returns="nothing")


def request_quota(slug: str, resource: str, amount: float, justification: str) -> Call:
    body = {"resource": resource, "amount": amount, "justification": justification}
    return Call("POST", f"{_project(slug)}/quota-requests", json=body)


def quota_requests(slug: str) -> Call:
    return Call("GET", f"{_project(slug)}/quota-requests")


def decide(slug: str, request_id: str, decision: Literal["approve", "reject"], note: str) -> Call:
    path = f"{_project(slug)}/quota-requests/{_segment(request_id)}/{decision}"
    return Call("POST", path, json={"note": note})


def usage(slug: str, by: str, since: str | None, until: str | None, csv: bool = False) -> Call:
    """A project's usage report, grouped ``by`` user, app, executor or month; as CSV text with ``csv``."""
    params: dict[str, Any] = {"by": by, "format": "csv" if csv else "json"}
    params |= {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    return Call("GET", f"{_project(slug)}/usage", params=params, returns="text" if csv else "json")

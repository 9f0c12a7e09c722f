"""The one exception of the client: a request that did not succeed. Importing it does not import httpx."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class ClientError(Exception):
    """A request that did not succeed: ``status`` is the HTTP status (0 when the server was not reached),
    ``detail`` the server's explanation and ``errors`` its per-field list of ``{loc, msg}``."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        """Read a problem+json body (or whatever the server or a proxy sent instead)."""
        detail = ""
        errors: list[dict[str, Any]] = []
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            raw = body.get("detail")
            if isinstance(raw, str):
                detail = raw
            elif isinstance(raw, list):  # FastAPI's default shape, should a route bypass the handlers
                errors = [e for e in raw if isinstance(e, dict)]
            errors = errors or [e for e in body.get("errors") or [] if isinstance(e, dict)]
            detail = detail or str(body.get("title") or "")
        elif response.text.strip():
            detail = response.text.strip().splitlines()[0][:200]
        return cls(response.status_code, detail or response.reason_phrase or "request failed", errors)


class UploadMismatch(ClientError):
    """The file the server stored is not the local file (its SHA-256 differs, or the file changed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)

"""Templates (Jinja2, autoescaped) and what every page gets: the user, the CSRF token, a flash message."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from labcloud import __version__
from labcloud.http.downloads import viewable
from labcloud.services import maintenance
from labcloud.services.job_states import ACTIVE, TERMINAL, JobState
from labcloud.web import session as web_session

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


def filesize(value: int | None) -> str:
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} B"
    exponent = min(int(math.log(value, 1024)), 5)
    return f"{value / 1024**exponent:.1f} {'BKMGTP'[exponent]}{'iB' if exponent else ''}"


def timestamp(value: datetime | None) -> Markup:
    """A <time> element: UTC in the page, turned into local time and a relative age by app.js."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    iso = value.isoformat()
    text = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" class="rel">{}</time>').format(iso, text)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def amount(value: float) -> str:
    """A quantity as people write it: whole numbers without decimals, others to about three significant
    digits, never in exponent notation."""
    if not math.isfinite(value):
        return str(value)
    if value == round(value) or abs(value) >= 100:
        return str(round(value))
    decimals = min(max(2 - math.floor(math.log10(abs(value))), 0), 6)
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else ("< 0.000001" if value > 0 else "> -0.000001")


def path_url(path: str) -> str:
    """A file path for use inside a URL path (each segment percent-encoded, slashes kept)."""
    return quote(path, safe="/")


def state_class(state: str) -> str:
    if state == JobState.SUCCEEDED.value:
        return "ok"
    if state == JobState.FAILED.value:
        return "bad"
    if state in (JobState.CANCELLED.value, JobState.CANCELLING.value):
        return "muted"
    if state == JobState.QUEUED.value:
        return "wait"
    return "run"


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(
    filesize=filesize,
    timestamp=timestamp,
    duration=duration,
    path_url=path_url,
    viewable=lambda name: viewable(str(name)) is not None,
    state_class=state_class,
    amount=amount,
)
templates.env.globals.update(
    version=__version__,
    terminal_states=[s.value for s in TERMINAL],
    active_states=[s.value for s in ACTIVE],
    all_states=[s.value for s in JobState],
)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    browser = getattr(request.state, "browser", None)
    base: dict[str, Any] = {
        "user": principal.user if principal is not None else None,
        "csrf_token": browser.csrf if browser is not None else "",
        "flash": None,
        "maintenance": _maintenance(request),
    }
    settings = getattr(request.state, "settings", None)
    if settings is not None and web_session.FLASH_COOKIE in request.cookies:
        base["flash"] = web_session.take_flash(request, settings)
        request.state.flash_taken = True
    response: HTMLResponse = templates.TemplateResponse(request, name, {**base, **(context or {})}, status)
    return response


def _maintenance(request: Request) -> maintenance.State | None:
    """The maintenance switch for the banner (read at most every two seconds); None when unknown."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return None
    try:
        return maintenance.current(ctx.db.engine)
    except Exception:  # (the database unreachable: the page says so itself, if it needs it)
        return None


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", {"status": status, "title": title, "detail": detail}, status)

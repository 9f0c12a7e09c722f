"""Who may read ``/metrics``.

What an operator expects from an exporter that has no accounts: with ``metrics_token`` set, whoever sends it
as a bearer token (Prometheus: ``authorization: {credentials_file: ...}``), from anywhere; without it, only
this machine (a Prometheus or an agent beside the server), and never through a reverse proxy. A request that
a proxy forwarded is refused even when the proxy connects from the loopback, since the proxy is there to
let the world in (so a proxy in front of labcloud need not remember to hide ``/metrics``).
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from fastapi.responses import JSONResponse

from labcloud.http.problems import problem
from labcloud.settings import Settings

FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")


def refusal(request: Request, settings: Settings) -> JSONResponse | None:
    """None when the request may read the metrics, else the answer it gets."""
    token = settings.metrics_token.get_secret_value()
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return problem(
            401,
            "The metrics need the bearer token set as metrics_token.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if _loopback(request) and not any(name in request.headers for name in FORWARDED):
        return None
    return problem(
        403,
        "The metrics are served to this machine only; set metrics_token to let a Prometheus elsewhere in "
        "with that bearer token.",
    )


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

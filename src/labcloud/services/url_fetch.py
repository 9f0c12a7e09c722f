"""Downloading a file a user named by an http(s) URL, on the server: never from loopback, link-local or
private addresses unless an admin allows it (checked after DNS resolution, on the address actually
connected to, and again on every redirect), and never more than a size limit.

Each hop resolves the name once, checks every address, and connects to the checked address itself (the
request keeps the name in its Host header and for TLS), so a name that resolves differently the second
time cannot lead the request elsewhere. Messages name the host only: a URL's query may hold a signature.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 5
TIMEOUT_S = 60.0
CHUNK = 1 << 20


class FetchError(Exception):
    """The URL could not be downloaded; why, without the URL's path or query."""


def check_url(url: str) -> str:
    """The URL's host, or FetchError when it is not an http(s) URL with one."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is no number
    except ValueError as exc:
        raise FetchError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("only http:// and https:// URLs with a host can be downloaded")
    if parts.username or parts.password:
        raise FetchError("a URL with a user name or password is not accepted")
    return parts.hostname


def _addresses(host: str, port: int, allow_private: bool) -> list[str]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"{host}: the name does not resolve ({exc.strerror})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not allow_private and (not ip.is_global or ip.is_multicast):
            raise FetchError(f"{host}: resolves to {ip}, an address this server does not download from")
    if not addresses:
        raise FetchError(f"{host}: the name has no address")
    return addresses


def _pinned(url: str, allow_private: bool) -> tuple[str, str, dict[str, str]]:
    """The URL rewritten to the checked address of its host, the host (for messages and TLS), and the
    Host header that keeps its name."""
    host = check_url(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _addresses(host, port, allow_private)[0]
    shown = f"[{address}]" if ":" in address else address
    direct = urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, ""))
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return direct, host, {"Host": netloc}


def download(url: str, dest: BinaryIO, *, limit: int, allow_private: bool = False) -> int:
    """Write what ``url`` answers into ``dest``; the number of bytes. FetchError on any failure."""
    for _ in range(MAX_REDIRECTS + 1):
        direct, host, headers = _pinned(url, allow_private)
        try:
            with (
                httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as client,
                client.stream("GET", direct, headers=headers, extensions={"sni_hostname": host}) as response,
            ):
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise FetchError(f"{host} answered {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise FetchError(f"the file at {host} is larger than {limit} bytes")
                size = 0
                for chunk in response.iter_bytes(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise FetchError(f"the file at {host} is larger than {limit} bytes")
                    dest.write(chunk)
                return size
        except httpx.HTTPError as exc:
            raise FetchError(f"{host}: {type(exc).__name__}") from None
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout_s: float, allow_private: bool = False
) -> tuple[int, str]:
    """POST ``body`` to ``url`` (the same address checks as a download; a redirect is not followed: its
    status is the answer); the status and the start of the answer. FetchError when it cannot be sent."""
    direct, host, pinned = _pinned(url, allow_private)
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(
                direct, content=body, headers={**headers, **pinned}, extensions={"sni_hostname": host}
            )
            return response.status_code, response.text[:500]
    except httpx.HTTPError as exc:
        raise FetchError(f"{host}: {type(exc).__name__}") from None

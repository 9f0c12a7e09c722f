"""Authenticate before reading a body; bound the bodies the API parses; refuse strings that are not text.

FastAPI reads and parses a route's body (JSON or a form) *before* any of its dependencies run, so a
credential checked in a dependency is checked only after an anonymous caller has made the server hold and
parse whatever it sent: hundreds of megabytes for a bogus token. :class:`GuardedRoute` closes that gap.
For a route with such a body it first runs the *gate* of the route's authenticating dependency (a look
at the same credential in a session that writes nothing, marked with :func:`gate`), then refuses a body
larger than ``max_json_body_bytes`` (413, from ``Content-Length`` up front, or as soon as a streamed body
passes it),
and checks every string of a JSON body: one that cannot be encoded as UTF-8 (a lone surrogate such as
``"\\ud800"``) is refused with 422 naming the field, as is JSON nested too deeply. Only then does FastAPI
parse and validate the body, from what the guard already read.

Routes that take a stream (file uploads, tus, a worker's log and outputs) have no parsed body: they
authenticate in their dependencies and read afterwards, with limits of their own (:func:`read_body`).

:class:`Utf8Addresses` refuses, before any routing, an address whose path or query holds percent-encoded
bytes that are not UTF-8: decoded leniently they would become U+FFFD, and two different names one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import anyio
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labcloud.errors import InvalidInput, LabcloudError
from labcloud.http.problems import problem

F = TypeVar("F", bound=Callable[..., Any])
Gate = Callable[[Request, Any], None]  # (request, Runtime): raises to refuse; runs in the thread pool
# (request, Runtime) -> whether the caller is known already, without I/O: then the gate is not run. Runs on
# the event loop; for callers that come back every few seconds (workers' heartbeats and claims).
Known = Callable[[Request, Any], bool]
GATE_ATTRIBUTE = "labcloud_gate"
GATE_SESSION = "labcloud_gate_session"  # request.state: the database session a gate authenticated in
KNOWN_ATTRIBUTE = "labcloud_known"
MAX_JSON_DEPTH = 64
MAX_REPORTED = 50  # bad strings named in one answer


class BodyTooLarge(LabcloudError):
    status, title, type_slug = 413, "Content too large", "too-large"


def gate(check: Gate, known: Known | None = None) -> Callable[[F], F]:
    """Mark a dependency that authenticates the caller: a :class:`GuardedRoute` using it runs ``check``
    before it reads the request's body, unless ``known`` says the caller was let in moments ago (the
    route's own code then checks the credential against the database all the same)."""

    def mark(dependency: F) -> F:
        setattr(dependency, GATE_ATTRIBUTE, check)
        if known is not None:
            setattr(check, KNOWN_ATTRIBUTE, known)
        return dependency

    return mark


def hand_over_session(request: Request, session: Any) -> None:
    """A gate leaves the database session it authenticated the caller in to the request (its
    ``DbSession`` takes it: :func:`adopt_session`), so the caller is not looked up twice; one that nobody
    takes is rolled back and closed once the route is done (or failed before it ran)."""
    setattr(request.state, GATE_SESSION, session)


def adopt_session(request: Request) -> Any:
    """The session a gate left for this request, now the caller's to end; None if there is none."""
    session = getattr(request.state, GATE_SESSION, None)
    if session is not None:
        setattr(request.state, GATE_SESSION, None)
    return session


def _release_session(request: Request) -> None:
    session = adopt_session(request)
    if session is not None:
        try:
            session.rollback()
        finally:
            session.close()


def find_gate(dependant: Dependant) -> Gate | None:
    """The gate of the first authenticating dependency in the route's dependency tree, if any."""
    pending = list(dependant.dependencies)
    while pending:
        dep = pending.pop(0)
        found = getattr(dep.call, GATE_ATTRIBUTE, None)
        if found is not None:
            return found
        pending.extend(dep.dependencies)
    return None


def declared_length(request: Request) -> int | None:
    header = request.headers.get("content-length")
    if header is None:
        return None
    try:
        length = int(header)
    except ValueError:
        raise InvalidInput.field(["header", "content-length"], "not a number") from None
    if length < 0:
        raise InvalidInput.field(["header", "content-length"], "not a length")
    return length


def too_large(limit: int, what: str = "The request body") -> BodyTooLarge:
    return BodyTooLarge(f"{what} is larger than this server accepts ({limit} bytes).")


def check_declared_length(request: Request, limit: int, what: str = "The request body") -> None:
    length = declared_length(request)
    if length is not None and length > limit:
        raise too_large(limit, what)


def bounded_receive(receive: Receive, limit: int, what: str = "The request body") -> Receive:
    """``receive`` that refuses (413) once more than ``limit`` body bytes have arrived."""
    seen = 0

    async def receive_bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit, what)
        return message

    return receive_bounded


async def read_body(request: Request, limit: int, what: str = "The request body") -> bytes:
    """The whole body, refused with 413 as soon as it is known to be larger than ``limit``."""
    check_declared_length(request, limit, what)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _shown(text: str) -> str:
    """A string fit to name in an answer, whatever it holds."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:100]


def _encodes(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_string_problems(document: Any) -> list[dict[str, Any]]:
    """Every string (keys too) of a parsed JSON document that is not text (lone surrogates), and nesting
    deeper than MAX_JSON_DEPTH, as ``{loc, msg}`` errors. Iterative: no depth can exhaust the stack."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[Any, list[str | int]]] = [(document, ["body"])]
    while stack and len(errors) < MAX_REPORTED:
        value, loc = stack.pop()
        if len(loc) > MAX_JSON_DEPTH + 1:
            errors.append({"loc": loc[:MAX_JSON_DEPTH], "msg": f"nested more than {MAX_JSON_DEPTH} deep"})
            continue
        if isinstance(value, str):
            if not _encodes(value):
                errors.append({"loc": loc, "msg": "not valid text: the string cannot be encoded as UTF-8"})
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if not _encodes(key):
                    errors.append(
                        {
                            "loc": [*loc, _shown(key)],
                            "msg": "not valid text: the key cannot be encoded as UTF-8",
                        }
                    )
                    continue
                stack.append((item, [*loc, key]))
        elif isinstance(value, list):
            stack.extend((item, [*loc, i]) for i, item in reversed(list(enumerate(value))))
    return errors


def plainly_text(body: bytes) -> bool:
    """Whether a JSON body can hold no string that is not text and no nesting past MAX_JSON_DEPTH, by its
    bytes alone: ASCII without a \\u escape (the only ways to a lone surrogate are those escapes and the
    non-ASCII bytes of an encoded one) and without NUL (UTF-16 and UTF-32 bodies, whose escapes are not
    contiguous bytes), and no more brackets than that depth."""
    return (
        body.isascii()
        and b"\\u" not in body
        and b"\x00" not in body
        and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    )


async def check_json_body(request: Request) -> None:
    """Parse a JSON body once (FastAPI reuses the result) and refuse strings that are not text."""
    if not _is_json(request):
        return
    body = await request.body()
    if not body:
        return
    try:
        document = await request.json()
    except (ValueError, RecursionError):
        return  # FastAPI answers malformed JSON itself, with the position of the error
    if plainly_text(body):  # most bodies (a heartbeat): nothing to walk
        return
    errors = json_string_problems(document)
    if errors:
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "body" for e in errors)
        raise InvalidInput(f"The request is not valid: {fields}.", errors=errors)


class GuardedRoute(APIRoute):
    """An API route that authenticates before it reads a parsed body, and bounds that body.

    ``bound_every_body``: also bound bodies the route's code reads itself (after authenticating), for
    routes that never take more than a form (the pages)."""

    bound_every_body = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is not None:
            return guarded(handler, find_gate(self.dependant))
        if self.bound_every_body:  # read, if at all, by the route's code after its dependencies
            return guarded(handler, None)
        return handler  # a stream (uploads): authenticated by its dependencies, bounded by its code


def guarded(
    handler: Callable[[Request], Awaitable[Response]], check: Gate | None
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    known: Known | None = getattr(check, KNOWN_ATTRIBUTE, None)

    async def guarded_handler(request: Request) -> Response:
        ctx = request.app.state.ctx
        try:
            if check is not None and not (known is not None and known(request, ctx)):
                await run_in_threadpool(check, request, ctx)
            limit = ctx.settings.max_json_body_bytes
            check_declared_length(request, limit)
            bounded = Request(request.scope, bounded_receive(request.receive, limit))
            await check_json_body(bounded)
            return await handler(bounded)
        finally:
            if getattr(request.state, GATE_SESSION, None) is not None:
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(_release_session, request)

    return guarded_handler


class Utf8Addresses:
    """ASGI middleware: 400 (problem+json) for a path or query string that is not UTF-8 once
    percent-decoded, instead of letting it be decoded with replacement characters."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            for part, loc, raw in (
                ("path", "path", raw_path),
                ("query string", "query", scope.get("query_string", b"").replace(b"+", b" ")),
            ):
                try:
                    unquote_to_bytes(raw).decode("utf-8")
                except UnicodeDecodeError:
                    detail = f"The address's {part} is not valid UTF-8 once percent-decoded."
                    response = problem(
                        400,
                        detail,
                        title="Invalid address",
                        type_slug="invalid-path",
                        errors=[{"loc": [loc], "msg": "not valid UTF-8"}],
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

"""Server-sent events (a job's live log), parsed line by line, and where a followed log stands: the
offset to resume a dropped stream from, and whether to try again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from labcloud.client.errors import ClientError, Unreachable

LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class SseEvent:
    """One server-sent event: its type, its ``data:`` lines and its ``id:`` (if any)."""

    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None

    def end_state(self) -> str:
        """The job's state in an ``end`` event (``{"state": ...}``), "" when it says none."""
        try:
            body = json.loads("\n".join(self.data))
        except ValueError:
            return ""
        return str(body.get("state", "")) if isinstance(body, dict) else ""


class SseParser:
    """Feed it a ``text/event-stream`` as it comes (:meth:`feed_text`) or line by line (:meth:`feed`); it
    hands back each event as its blank line ends it."""

    def __init__(self) -> None:
        self.current = SseEvent()
        self.seen = False
        self.partial = ""  # the start of a line whose end has not come yet

    def feed_text(self, chunk: str) -> list[SseEvent]:
        """The events that ``chunk`` of the stream completes. Its lines end at CR LF, LF or a lone CR, as
        the format has it, and nowhere else: not where ``str.splitlines`` (and so ``httpx``'s
        ``iter_lines``) would end them too, inside a log line at a form feed or U+2028."""
        text = self.partial + chunk
        held = "\r" if text.endswith("\r") else ""  # it may be the first half of a CR LF
        *lines, self.partial = LINE_END.split(text.removesuffix(held))
        self.partial += held
        return [event for line in lines if (event := self.feed(line)) is not None]

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.current.event, self.seen = value, True
        elif name == "data":
            self.current.data.append(value)
            self.seen = True
        elif name == "id":
            self.current.id = value
        return None

    def flush(self) -> SseEvent | None:
        """The event in progress, if any (at a blank line, or when the stream ends)."""
        event = self.current if self.seen else None
        self.current, self.seen = SseEvent(), False
        return event


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Group the lines of a ``text/event-stream`` into events (a blank line ends one)."""
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
    last = parser.flush()
    if last is not None:
        yield last


class LogFollow:
    """A followed log: the byte offset to ask for (event ids are offsets into the log) and how many times
    in a row the stream failed. A dropped connection is resumed where it stopped, ``reconnects`` times."""

    def __init__(self, reconnects: int = 5) -> None:
        self.offset = 0
        self.failures = 0
        self.reconnects = reconnects

    def params(self) -> dict[str, str | int]:
        return {"follow": "true", "offset": self.offset}

    def seen(self, event: SseEvent) -> bool:
        """Note an event; True when it is the last (``end``)."""
        self.failures = 0
        if event.id and event.id.isdigit():
            self.offset = int(event.id)
        return event.event == "end"

    def take(self, parser: SseParser, text: str) -> tuple[list[SseEvent], bool]:
        """The events a piece of the stream completes, up to the ``end`` event, and whether it came."""
        events: list[SseEvent] = []
        for event in parser.feed_text(text):
            events.append(event)
            if self.seen(event):
                return events, True
        return events, False

    def retry_delay(self, error: ClientError | None) -> float:
        """After the stream failed with ``error`` (None: it closed before the end), the seconds to wait
        before asking again; raises when it is not worth it (an answer such as 404, or too many tries)."""
        if self.failures >= self.reconnects:
            if error is None:
                raise Unreachable(0, "the log stream kept closing before the job ended")
            raise error
        if error is not None and error.status != 0:
            raise error
        self.failures += 1
        return min(5.0, 0.5 * 2**self.failures)

"""Following a job's log live (server-sent events) while it is written in parts, with pauses: lines come
whole and once, characters intact, and every event's id resumes exactly where the events stopped."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import py, write_app
from labcloud.client.sse import SseEvent, SseParser
from labcloud.services import job_logs
from labcloud.services.job_states import JobState
from labcloud.settings import Settings

PAUSE_S = 4 * job_logs.POLL_S  # long enough for a follower to have looked at the log more than once


def sse_events(stream: str) -> list[SseEvent]:
    """The events a client that keeps to the SSE format sees (its lines end at CR LF, LF or a lone CR)."""
    return SseParser().feed_text(stream)


def log_lines(data: bytes) -> list[str]:
    """The log's lines as a reader of the whole file splits them."""
    lines = re.split(r"\r\n|\r|\n", job_logs.text(data))
    return lines[:-1] if lines[-1] == "" else lines


class Following:
    """A follower of a job's log driven step by step: append to the log, then see what it was sent."""

    def __init__(self, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        self.settings = settings
        self.job_id = uuid.uuid4()
        self.path = job_logs.log_path(settings, self.job_id)
        self.path.parent.mkdir(parents=True)
        self.path.touch()
        self.state = JobState.RUNNING
        monkeypatch.setattr(job_logs, "state_of", lambda _db, _job_id: self.state)
        self.received: list[SseEvent] = []
        self.next: asyncio.Future[str] | None = None

    def follow(self, offset: int) -> AsyncIterator[str]:
        async def connected() -> bool:
            return False

        return job_logs.follow(None, self.settings, self.job_id, offset, self.state, connected)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(data)

    async def expect(self, events: AsyncIterator[str], lines: list[str]) -> None:
        """The next event carries ``lines``; none comes (within a pause) when ``lines`` is empty."""
        if self.next is None:
            self.next = asyncio.ensure_future(anext(events))  # kept across a pause: cancelling ends it
        if not lines:
            await asyncio.sleep(PAUSE_S)
            assert not self.next.done(), self.next.result()
            return
        try:
            raw, self.next = await asyncio.wait_for(self.next, 5), None
        except TimeoutError:
            pytest.fail(f"no event came with {lines}")
        [event] = sse_events(raw)
        assert (event.event, event.data) == ("log", lines)
        self.received.append(event)

    async def to_the_end(self, events: AsyncIterator[str]) -> None:
        self.state = JobState.SUCCEEDED
        raws = [await asyncio.wait_for(self.next, 5)] if self.next is not None else []
        raws += [raw async for raw in events]
        self.received += [event for raw in raws for event in sse_events(raw)]
        assert self.received[-1].event == "end"

    def lines(self) -> list[str]:
        return [line for event in self.received if event.event == "log" for line in event.data]

    def check_resumes(self, everything: list[str]) -> None:
        """A reconnect from the id of each event received gets exactly the lines after it."""
        so_far: list[str] = []
        for event in self.received[:-1]:
            so_far += event.data
            assert event.id is not None and event.id.isdigit(), event
            assert so_far + self.resumed(int(event.id)) == everything, event

    def resumed(self, offset: int) -> list[str]:
        """Every line a reconnect from ``offset`` gets once the job has ended."""

        async def read_all() -> list[str]:
            return [raw async for raw in self.follow(offset)]

        events = sse_events("".join(asyncio.run(read_all())))
        assert events[-1].event == "end"
        return [line for e in events if e.event == "log" for line in e.data]


# What a job writes, in parts, and the lines each part completes: a line cut in two, a UTF-8 character cut
# in two, a progress bar (each step ends with a carriage return), a CR LF cut between its CR and its LF.
SCRIPT: list[tuple[bytes, list[str]]] = [
    (b"one\nhal", ["one"]),
    (b"f\n", ["half"]),
    (b"caf\xc3", []),
    (b"\xa9\n", ["caf\u00e9"]),
    (b"x\nna\xc3", ["x"]),
    (b"\xafve\n", ["na\u00efve"]),
    (b"10%\r", []),
    (b"20%\r", ["10%"]),
    (b"30%\r\n", ["20%", "30%"]),
    (b"crlf\r", []),
    (b"\nnext", ["crlf"]),
    (b" line\n", ["next line"]),
    (b"last, no newline: \xe2\x82", []),
]
WHOLE = b"".join(part for part, _ in SCRIPT)
LAST = "last, no newline: \ufffd"  # the job ended in the middle of a character: nothing will complete it


def play(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Following:
    following = Following(settings, monkeypatch)

    async def scenario() -> None:
        events = following.follow(0)
        for part, lines in SCRIPT:
            following.write(part)
            await following.expect(events, lines)
        await following.to_the_end(events)

    asyncio.run(scenario())
    return following


def test_a_line_written_in_parts_arrives_once_whole_and_in_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    following = play(settings, monkeypatch)
    assert following.lines() == log_lines(WHOLE) == [line for _, lines in SCRIPT for line in lines] + [LAST]
    assert [e.event for e in following.received[-2:]] == ["log", "end"]


def test_a_character_split_across_writes_arrives_intact(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = play(settings, monkeypatch).lines()
    assert "caf\u00e9" in got and "na\u00efve" in got
    assert all("\ufffd" not in line for line in got[:-1])  # only the character the job left unfinished


def test_every_event_id_resumes_exactly_where_the_events_stopped(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    following = play(settings, monkeypatch)
    following.check_resumes(log_lines(WHOLE))
    ids = [int(e.id) for e in following.received if e.id is not None]
    assert ids == sorted(ids) and ids[-1] == len(WHOLE)
    assert following.resumed(len(WHOLE)) == []


def test_a_long_line_comes_in_pieces_cut_between_characters(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line that never ends must not pile up in the server's memory: a long one is sent in pieces, each
    cut where a character starts, the same pieces however the bytes came (read a few at a time here, the
    line written in parts), so a reconnect resumes after the piece it had."""
    monkeypatch.setattr(job_logs, "LINE_PIECE", 7)
    monkeypatch.setattr(job_logs, "FOLLOW_CHUNK", 5)
    following = Following(settings, monkeypatch)
    line = "\u00e9t\u00e9 \u2603 \U0001f600 na\u00efve" * 3
    data = b"start\n" + line.encode() + b"\nend\n"

    async def scenario() -> None:
        events = following.follow(0)
        first = asyncio.ensure_future(anext(events))
        for at in range(0, len(data), 9):
            following.write(data[at : at + 9])
            await asyncio.sleep(2 * job_logs.POLL_S)
        following.received += sse_events(await first)
        await following.to_the_end(events)

    asyncio.run(scenario())
    pieces = following.lines()
    assert pieces[0] == "start" and pieces[-1] == "end"
    assert "".join(pieces[1:-1]) == line and len(pieces) > 5
    assert all("\ufffd" not in piece and len(piece.encode()) <= 7 for piece in pieces)
    following.check_resumes(pieces)


def test_a_reconnect_with_last_event_id_over_http_gets_the_rest_of_a_live_log(
    client: TestClient, settings: Settings, user: Account
) -> None:
    """A real job writes its log in parts with pauses; the stream is followed over HTTP, then every event id
    it carried is sent back as ``Last-Event-ID`` (the URL still has the first request's offset, as when an
    EventSource reconnects by itself): each time, exactly the rest of the log."""
    write_app(
        settings.effective_apps_dir,
        "parts",
        py("""
        import sys, time
        out = sys.stdout.buffer
        for part in [b"begin\\nhal", b"f\\n", b"caf\\xc3", b"\\xa9\\n", b"10%\\r", b"20%\\r\\n", b"done\\n"]:
            out.write(part)
            out.flush()
            time.sleep(0.3)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    r = client.post("/api/v1/jobs", json={"app": "parts"}, headers=user.headers)
    assert r.status_code == 201, r.text
    url = f"/api/v1/jobs/{r.json()['id']}/logs"

    def follow(**headers: str) -> list[SseEvent]:
        params: dict[str, Any] = {"follow": "true", "offset": 0}
        with client.stream("GET", url, params=params, headers=user.headers | headers, timeout=60) as r:
            assert r.status_code == 200
            return sse_events(r.read().decode())

    live = follow()
    assert live[-1].event == "end" and live[-1].data == ['{"state": "succeeded"}']
    everything = log_lines(client.get(url, headers=user.headers).content)
    got = [line for e in live if e.event == "log" for line in e.data]
    assert got == everything
    job_lines = [line for line in got if not line.startswith("[labcloud]")]
    assert job_lines == ["begin", "half", "caf\u00e9", "10%", "20%", "done"]
    so_far: list[str] = []
    for event in live[:-1]:
        so_far += event.data
        assert event.id is not None
        rest = follow(**{"Last-Event-ID": event.id})
        assert so_far + [line for e in rest if e.event == "log" for line in e.data] == everything, event
    assert follow(**{"Last-Event-ID": "9" * 19}) == [live[-1]]  # past the end: nothing more to say
    ignored = follow(**{"Last-Event-ID": "not a number"})  # not one of ours: from the URL's offset
    assert [line for e in ignored if e.event == "log" for line in e.data] == everything


def test_where_the_job_page_starts_showing_a_long_log(settings: Settings) -> None:
    """The page shows the end of a long log: from the first line that starts in its last bytes, or, when
    one line fills them, from a whole character; never from the middle of one."""
    job_id = uuid.uuid4()
    path = job_logs.log_path(settings, job_id)
    path.parent.mkdir(parents=True)
    assert job_logs.tail_start(settings, job_id, 10) == 0  # no log yet
    cases = [
        (b"short\n", 0),
        (b"abc\ndef\nghi\n", 4),
        (b"ab\r\ndef\nghi\n", 4),  # not between the CR and the LF
        (b"x" * 20 + b"\n", 11),
        ("x\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9y".encode(), 5),  # from the first whole character
    ]
    for data, start in cases:
        path.write_bytes(data)
        assert job_logs.tail_start(settings, job_id, 10) == start, data


def test_each_line_of_a_job_log_says_when_it_came(
    client: TestClient, settings: Settings, user: Account
) -> None:
    """A real job writes a line, waits over a second, writes another: the log read with times leads each
    line with when it came (as the supervisor noted it), and the followed log sends a ``times`` event with
    one time per line before each ``log`` event."""
    write_app(
        settings.effective_apps_dir,
        "slow",
        py("""
        import time
        print("early", flush=True)
        time.sleep(1.5)
        print("late", flush=True)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    before = datetime.now(UTC)
    r = client.post("/api/v1/jobs", json={"app": "slow"}, headers=user.headers)
    assert r.status_code == 201, r.text
    url = f"/api/v1/jobs/{r.json()['id']}/logs"
    with client.stream("GET", url, params={"follow": "true", "times": "true"}, headers=user.headers) as s:
        events = sse_events(s.read().decode())
    after = datetime.now(UTC)

    stamped = {}
    for line in client.get(url, params={"times": "true"}, headers=user.headers).text.splitlines():
        stamp, _, rest = line.partition(" ")
        stamped[rest] = datetime.fromisoformat(stamp)
    assert before - timedelta(seconds=1) <= stamped["early"] <= stamped["late"] <= after
    assert stamped["late"] - stamped["early"] >= timedelta(seconds=1.2), stamped

    followed = {}
    for first, second in itertools.pairwise(events):
        if second.event == "log":
            assert first.event == "times", events
            [times] = first.data
            stamps = json.loads(times)
            assert len(stamps) == len(second.data)
            followed.update(zip(second.data, stamps, strict=True))
    assert (followed["late"] - followed["early"]) / 1000 >= 1.2, followed
    untimed = client.get(url, headers=user.headers).text.splitlines()
    assert "early" in untimed and "late" in untimed  # without times=true: the log as written


def test_a_remote_runners_chunks_are_timed_as_they_arrive(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = uuid.uuid4()
    clock = iter([1_000.0, 1_002.5])
    monkeypatch.setattr(job_logs.time, "time", lambda: next(clock))
    job_logs.append(settings, job_id, 0, 0, b"one\ntw")
    job_logs.append(settings, job_id, 0, 6, b"o\nthree\n")
    job_logs.append(settings, job_id, 0, 0, b"one\n")  # sent again: nothing new, no new note
    lines = job_logs.read_timed(settings, job_id).splitlines()
    assert lines == [
        "1970-01-01T00:16:40.000Z one",
        "1970-01-01T00:16:42.500Z two",
        "1970-01-01T00:16:42.500Z three",
    ]

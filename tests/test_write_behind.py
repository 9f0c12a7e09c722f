"""An upload's writes run one at a time, in order, behind the reading of the next bytes; after a failure
nothing writes any more once ``settle`` returns, even when the request is cancelled while it waits."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from labcloud.services.write_behind import WriteBehind


def test_writes_run_in_order_one_at_a_time_while_the_caller_goes_on() -> None:
    seen: list[str] = []
    busy = threading.Lock()

    def write(name: str) -> None:
        assert busy.acquire(blocking=False), "two writes at once"
        seen.append(f"start {name}")
        time.sleep(0.05)
        seen.append(f"end {name}")
        busy.release()

    async def main() -> list[str]:
        writes = WriteBehind()
        await writes.put(write, "a")
        seen.append("reading on")  # put returned before its write ended
        await writes.put(write, "b")  # waits for a, then starts b
        await writes.drain()
        return seen

    order = asyncio.run(main())
    assert order.index("reading on") < order.index("end a")
    assert [s for s in order if s != "reading on"] == ["start a", "end a", "start b", "end b"]


def test_a_failed_write_is_raised_by_the_next_put_or_drain() -> None:
    def fail() -> None:
        raise OSError("disk full")

    async def main() -> None:
        writes = WriteBehind()
        await writes.put(fail)
        with pytest.raises(OSError, match="disk full"):
            await writes.put(lambda: None)
        await writes.put(fail)
        with pytest.raises(OSError, match="disk full"):
            await writes.drain()

    asyncio.run(main())


def test_settle_waits_for_the_write_in_flight_even_when_cancelled_meanwhile() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        finished.set()

    async def request() -> None:
        writes = WriteBehind()
        await writes.put(slow)
        try:
            raise RuntimeError("the client went away")
        except RuntimeError:
            await writes.settle()
            assert finished.is_set(), "settle returned while the thread still wrote"
            raise

    async def main() -> None:
        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.05)
        task.cancel()  # arrives while settle waits
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished.is_set()  # the cancel was kept until the write had ended

    asyncio.run(main())

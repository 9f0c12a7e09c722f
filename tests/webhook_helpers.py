"""A real HTTP receiver for webhook tests (on 127.0.0.1: it keeps every POST and answers the statuses it is
told, in turn) and the settings that let webhooks reach it. A plugin of conftest: its fixtures serve every
test file."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jobs_helpers import write_app
from labcloud.settings import Settings


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every POST and answers the statuses it is told, in turn."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.stall = 0  # how many of the next POSTs get no answer until ``release`` is set
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.stall > 0:
                    receiver.stall -= 1
                    receiver.release.wait(120)
                code = receiver.answers.pop(0) if receiver.answers else 204
                self.send_response(code)
                if code in (301, 302, 307):
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                with contextlib.suppress(OSError):  # (a sender killed while it waited for the answer)
                    super().handle()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.seen]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture
def hooked(settings: Settings) -> Settings:
    settings.webhook_allow_private = True  # the receiver is on 127.0.0.1
    settings.webhook_retry_s = 0.1
    write_app(settings.effective_apps_dir, "quick", ["echo", "done"])
    write_app(settings.effective_apps_dir, "fails", ["sh", "-c", "exit 3"])
    return settings

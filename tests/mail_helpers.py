"""A real SMTP server for tests (aiosmtpd on 127.0.0.1): with STARTTLS and a login, or TLS from the first
byte, and the settings that send to it. A plugin of conftest: its fixtures serve every test file."""

from __future__ import annotations

import email
import socket
import ssl
import subprocess
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from jobs_helpers import write_app
from labcloud.settings import Settings

USER, PASSWORD = "mailer", "mail-secret-1"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("smtp-tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[1]), str(certificate[0]))
    return context


@pytest.fixture
def inbox(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS and a login."""
    box, port = Inbox(), free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=tls_context(certificate),
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def mailing(settings: Settings, inbox: tuple[Inbox, int], certificate: tuple[Path, Path]) -> Settings:
    settings.smtp_url = f"smtp://{USER}:{PASSWORD}@127.0.0.1:{inbox[1]}"
    settings.smtp_ca_file = str(certificate[1])
    settings.mail_from = "labcloud <noreply@lab.example.org>"
    settings.mail_digest_window_s = 0.3
    settings.base_url = "https://lab.example.org"
    write_app(settings.effective_apps_dir, "quick", ["echo", "done"])
    write_app(settings.effective_apps_dir, "fails", ["sh", "-c", "exit 2"])
    return settings


def mail_parts(message: Message) -> dict[str, str]:
    found = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[part.get_content_type()] = payload.decode()
    return found

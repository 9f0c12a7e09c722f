"""Debian's nginx in front of labcloud replicas, configured from the deployment kit's own site file
(``deploy/nginx/labcloud.conf``), for the proxy tests.

``with Nginx(folder, ["127.0.0.1:8001", "127.0.0.1:8002"]) as nginx: nginx.url`` starts nginx unprivileged:
its own prefix, configuration, pid file, logs and temporary folders in ``folder``, high ports on 127.0.0.1,
and (when the caller is root) the user ``nobody`` from the start, so neither the master nor its workers
hold any privilege. TLS uses a self-signed certificate for 127.0.0.1 and localhost made here with openssl
(``nginx.cert``: give it to clients as their CA). Leaving the block stops nginx.

The site file is used as it is shipped, with only its machine-specific values replaced (listen addresses,
certificate paths, the upstream's servers); :func:`site_config` fails when one of them is no longer where
it expects, so the tests can never drift from the file operators install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from types import TracebackType

from testing.daemons import clean_env, free_ports

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "labcloud.conf"
NOBODY = 65534
START_DEADLINE_S = 30.0
UPSTREAM_SERVER = re.compile(r"^(\s*server )127\.0\.0\.1:800\d( .*;)$", re.MULTILINE)


class NginxUnavailable(RuntimeError):
    """nginx or openssl is missing, or nginx did not come up."""


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate (and its key) for 127.0.0.1 and localhost, valid for a day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if shutil.which("openssl") is None:
        raise NginxUnavailable("openssl is missing (Debian package openssl)")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise AssertionError(f"{SITE} no longer has {old!r}: update testing/nginx.py with it")
    return text.replace(old, new)


def site_config(upstreams: list[str], https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The shipped site file with this machine's values: the upstream's servers (each keeping its options),
    listening on 127.0.0.1 only (no IPv6 needed), the test certificate."""
    text = SITE.read_text()
    found = UPSTREAM_SERVER.findall(text)
    if not found:
        raise AssertionError(f"{SITE}: no `server 127.0.0.1:800N ...;` line in the upstream")
    options = found[0][1]
    lines = "\n".join(f"{found[0][0]}{address}{options}" for address in upstreams)
    text = UPSTREAM_SERVER.sub("", text, count=len(found))
    text = _replace(text, "upstream labcloud {", "upstream labcloud {\n" + lines)
    text = _replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _replace(text, "listen [::]:443 ssl http2;", "")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _replace(text, "listen [::]:80;", "")
    text = _replace(text, "/etc/ssl/labcloud/fullchain.pem", str(cert))
    return _replace(text, "/etc/ssl/labcloud/privkey.pem", str(key))


def main_config(folder: Path, site: Path) -> str:
    """nginx.conf: everything nginx writes is in ``folder``; the site is included in the http block."""
    temp = "\n".join(
        f"    {kind}_temp_path {folder / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {folder / "access.log"};
{temp}
    include {site};
}}
"""


class Nginx:
    """nginx (unprivileged, in ``folder``) proxying to ``upstreams`` (``host:port`` each); a context
    manager. ``url`` is its HTTPS address, ``http_url`` the plain one that redirects, ``cert`` its CA."""

    def __init__(self, folder: Path, upstreams: list[str]) -> None:
        self.folder = folder
        self.upstreams = upstreams
        self.process: subprocess.Popen[bytes] | None = None
        self.https_port, self.http_port = free_ports(2)
        self.cert = folder / "cert.pem"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            raise NginxUnavailable(
                "nginx is missing: scripts/ensure-system.sh --postgres installs nginx-light"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / "temp" / kind).mkdir(parents=True, exist_ok=True)
        cert, key = self_signed(self.folder)
        site = self.folder / "labcloud.conf"
        site.write_text(site_config(self.upstreams, self.https_port, self.http_port, cert, key))
        conf = self.folder / "nginx.conf"
        conf.write_text(main_config(self.folder, site))
        command = [binary, "-p", str(self.folder), "-c", str(conf), "-e", str(self.folder / "error.log")]
        if os.geteuid() == 0:  # never as root: the whole folder becomes nobody's, and nginx runs as nobody
            for path in [self.folder, *self.folder.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
            command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
        self.process = subprocess.Popen(
            command,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.process.poll() is not None:
                raise NginxUnavailable(f"nginx exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return
            if time.monotonic() > deadline:
                raise NginxUnavailable(
                    f"nginx did not listen within {START_DEADLINE_S:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.folder / "error.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        self.process = None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""A container registry of the test's own on 127.0.0.1 (no registry is reachable from the test machine): the
read side of the distribution API (``/v2/``, manifests, blobs) for images it makes up, behind HTTP Basic
authentication, noting the credentials each request came with.

``with ImageRegistry("lab", "password") as registry: registry.add("lab/tool", "1")`` serves
``127.0.0.1:PORT/lab/tool:1``, an image of one small layer (it is pulled, never run). Plain HTTP: Docker
talks it to a registry on 127.0.0.0/8 by default; Podman needs the registry marked insecure
(:meth:`registries_conf`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import platform
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
UNAUTHORIZED = b'{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}'
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
PATH = re.compile(r"^/v2/(?P<name>[a-z0-9/._-]+)/(?P<kind>manifests|blobs)/(?P<ref>[A-Za-z0-9_.:-]+)$")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_auth_file(path: Path, registry: str, user: str, password: str) -> Path:
    """A Docker config.json (in a private folder) holding ``user`` and ``password`` for ``registry``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    return path


def unreachable_registry() -> str:
    """``127.0.0.1:PORT`` where nothing listens: a registry that cannot be reached (a pull fails at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return f"127.0.0.1:{port}"


class ImageRegistry:
    """A registry on a free port of 127.0.0.1 while the ``with`` block runs; ``address`` is its host:port."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.credentials: list[str | None] = []  # the Authorization header of each request, in order
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def auth_file(self, path: Path, user: str, password: str) -> Path:
        """A Docker config.json holding ``user`` and ``password`` for this registry."""
        return write_auth_file(path, self.address, user, password)

    def registries_conf(self, path: Path) -> Path:
        """A registries.conf for Podman (CONTAINERS_REGISTRIES_CONF) that lets it use plain HTTP here."""
        path.write_text(f'[[registry]]\nlocation = "{self.address}"\ninsecure = true\n')
        return path

    def add(self, name: str, tag: str) -> str:
        """An image ``name:tag`` of one layer (a file ``hello.txt`` naming it); its reference here."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            text = f"{name}:{tag}\n".encode()
            entry = tarfile.TarInfo("hello.txt")
            entry.size, entry.mode = len(text), 0o644
            tar.addfile(entry, io.BytesIO(text))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        config = json.dumps(
            {
                "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [digest(raw.getvalue())]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": digest(config)},
                "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": digest(layer)}],
            }
        ).encode()
        self.blobs[digest(layer)] = layer
        self.blobs[digest(config)] = config
        self.manifests[(name, tag)] = manifest
        self.manifests[(name, digest(manifest))] = manifest
        return f"{self.address}/{name}:{tag}"

    def __enter__(self) -> ImageRegistry:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                given = self.headers.get("Authorization")
                registry.credentials.append(given)
                if given != registry.expected:
                    challenge = {"WWW-Authenticate": 'Basic realm="labcloud-test"'}
                    self._send(401, UNAUTHORIZED, "application/json", body, challenge)
                    return
                if self.path == "/v2/":
                    self._send(200, b"{}", "application/json", body)
                    return
                found = PATH.match(self.path)
                if found and found["kind"] == "manifests":
                    data = registry.manifests.get((found["name"], found["ref"]))
                    kind = MANIFEST_TYPE
                else:
                    data = registry.blobs.get(found["ref"]) if found else None
                    kind = "application/octet-stream"
                if data is None:
                    what = "MANIFEST_UNKNOWN" if found and found["kind"] == "manifests" else "BLOB_UNKNOWN"
                    unknown = json.dumps({"errors": [{"code": what, "message": "unknown"}]}).encode()
                    self._send(404, unknown, "application/json", body)
                    return
                self._send(200, data, kind, body, {"Docker-Content-Digest": digest(data)})

            def _send(
                self, status: int, data: bytes, kind: str, body: bool, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        return Handler

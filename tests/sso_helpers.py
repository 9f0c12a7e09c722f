"""An OpenID provider whose ID tokens a test writes itself (to see that bad ones are refused), and the
steps of a browser's login against a labcloud test client."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "labcloud-test"
CLIENT_SECRET = "test-client-secret"


def new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12]})


@dataclass
class TokenProvider:
    """Discovery, JWKS and a token endpoint on 127.0.0.1; the token endpoint answers with what ``make``
    returns (an ID token the test composes), and records each request's form."""

    url: str = ""
    issuer: str = ""
    keys: list[RSAKey] = field(default_factory=lambda: [new_key()])
    make: Callable[[], str] | None = None
    token_requests: list[dict[str, str]] = field(default_factory=list)
    device: bool = False  # offers a device login (RFC 8628) ...
    device_pending: bool = True  # ... not approved yet while this is true
    device_requests: int = 0

    def sign(self, claims: dict[str, Any], key: RSAKey | None = None) -> str:
        key = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def claims(self, nonce: str | None, /, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "subject-1",
            "iat": now,
            "exp": now + 300,
            "email": "ada@lab.example",
            "email_verified": True,
            "name": "Ada",
        }
        if nonce is not None:
            base["nonce"] = nonce
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}


@contextmanager
def token_provider() -> Iterator[TokenProvider]:
    op = TokenProvider()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _json(self, body: object, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": op.issuer,
                        "authorization_endpoint": f"{op.url}/authorize",
                        "token_endpoint": f"{op.url}/token",
                        "jwks_uri": f"{op.url}/jwks",
                        **({"device_authorization_endpoint": f"{op.url}/device"} if op.device else {}),
                    }
                )
            elif self.path == "/jwks":
                self._json(KeySet(list(op.keys)).as_dict(private=False))
            else:
                self._json({"error": "not_found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            form["authorization"] = self.headers.get("Authorization", "")
            if self.path == "/device":
                op.device_requests += 1
                code = {"device_code": "dc-1", "user_code": "ABCD-EFGH", "expires_in": 600, "interval": 5}
                self._json({**code, "verification_uri": f"{op.url}/activate"})
                return
            op.token_requests.append(form)
            if form.get("grant_type", "").endswith("device_code") and op.device_pending:
                self._json({"error": "authorization_pending"}, 400)
                return
            assert op.make is not None
            self._json({"access_token": "opaque", "token_type": "Bearer", "id_token": op.make()})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    op.url = f"http://127.0.0.1:{server.server_address[1]}"
    op.issuer = op.url
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield op
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Started:
    """A browser's login sent to the provider: what labcloud asked the provider for."""

    state: str
    nonce: str
    challenge: str
    redirect_uri: str
    query: dict[str, str]


def start_login(client: TestClient, provider: str = "lab", params: str = "") -> Started:
    r = client.get(f"/login/sso/{provider}{params}", follow_redirects=False)
    assert r.status_code == 303, r.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    return Started(query["state"], query["nonce"], query["code_challenge"], query["redirect_uri"], query)


def answer(client: TestClient, started: Started, provider: str = "lab", state: str | None = None) -> Any:
    """The provider's redirect back, as the browser follows it."""
    return client.get(
        f"/login/sso/{provider}/callback",
        params={"code": "a-code", "state": started.state if state is None else state},
        follow_redirects=False,
    )

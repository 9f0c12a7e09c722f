"""Single sign-on with OpenID Connect: talking to a provider and checking what it says.

The authorization code flow with PKCE, ``state`` and ``nonce`` for browsers, and the device authorization
grant (RFC 8628) for the command line, both through this server (the client secret stays here). Every ID
token is checked before anything is believed: signature (keys from the provider's JWKS, read again when a
token names a key not seen yet, so the provider may rotate them), issuer, audience, expiry, the nonce of the
login it answers, and that it was not used before. What the account then may do is
:mod:`labcloud.services.sso_accounts`'s to say.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.models import SsoUsedToken
from labcloud.settings import SsoProvider

with warnings.catch_warnings():  # Authlib's httpx client would rather have httpx2; labcloud uses httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY_S = 60  # clocks of provider and server differ a little
METADATA_TTL_S = 3600.0
JWKS_REFRESH_MIN_S = 5.0  # a token naming an unknown key reads the JWKS again, at most this often


class LoginRefused(Exception):
    """A single sign-on that does not log anybody in: ``reason`` for the audit log, ``message`` for the
    user, ``status`` for the answer (401: not proven who; 403: proven, but not allowed)."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    device_authorization_endpoint: str = ""


@dataclass
class _Keys:
    keys: KeySet
    refreshed: float = 0.0  # when they were last read again for a key not among them


@dataclass
class _Cache:
    metadata: dict[str, tuple[Metadata, float]] = field(default_factory=dict)
    keys: dict[str, _Keys] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache = _Cache()


def forget_cached() -> None:
    """Drop what was read from providers (their metadata and keys); the next login reads them again."""
    with _cache.lock:
        _cache.metadata.clear()
        _cache.keys.clear()


def _get_json(url: str, provider: SsoProvider, what: str) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=provider.timeout_s, follow_redirects=False)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginRefused(
            "provider_unreachable", f"{provider.button_label}: {what} could not be read.", 502
        ) from exc
    if not isinstance(data, dict):
        raise LoginRefused(
            "provider_unreachable", f"{provider.button_label}: {what} is not a JSON object.", 502
        )
    return data


def metadata(provider: SsoProvider) -> Metadata:
    """The provider's discovery document (cached for an hour)."""
    url = provider.metadata_url
    with _cache.lock:
        cached = _cache.metadata.get(url)
    if cached is not None and time.monotonic() - cached[1] < METADATA_TTL_S:
        return cached[0]
    doc = _get_json(url, provider, "its discovery document")
    try:
        found = Metadata(
            issuer=str(doc["issuer"]),
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            jwks_uri=str(doc["jwks_uri"]),
            userinfo_endpoint=str(doc.get("userinfo_endpoint") or ""),
            end_session_endpoint=str(doc.get("end_session_endpoint") or ""),
            device_authorization_endpoint=str(doc.get("device_authorization_endpoint") or ""),
        )
    except KeyError as exc:
        raise LoginRefused(
            "provider_unreachable", f"{provider.button_label}: no {exc} in discovery.", 502
        ) from exc
    with _cache.lock:
        _cache.metadata[url] = (found, time.monotonic())
    return found


def _keys(provider: SsoProvider, meta: Metadata, kid: str | None) -> KeySet:
    """The provider's keys; read again when ``kid`` is not among them (the provider rotated its keys), at
    most every few seconds (tokens naming made-up keys do not make this server hammer the provider)."""
    with _cache.lock:
        cached = _cache.keys.get(meta.jwks_uri)
    if cached is not None:
        known = kid is None or any(k.kid == kid for k in cached.keys.keys)
        if known or time.monotonic() - cached.refreshed < JWKS_REFRESH_MIN_S:
            return cached.keys
    try:
        document = _get_json(meta.jwks_uri, provider, "its keys (JWKS)")
        keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        message = f"{provider.button_label}: its keys are not valid."
        raise LoginRefused("provider_unreachable", message, 502) from exc
    with _cache.lock:
        _cache.keys[meta.jwks_uri] = _Keys(keys, time.monotonic() if cached is not None else 0.0)
    return keys


def verify_id_token(provider: SsoProvider, meta: Metadata, raw: str, nonce: str | None) -> dict[str, Any]:
    """The claims of ``raw`` when it is an ID token the provider signed for this client, unexpired, and (for
    a browser login) carrying the login's nonce; else :class:`LoginRefused`."""
    try:
        header = extract_compact(raw.encode()).headers() if raw.count(".") == 2 else None
    except (JoseError, ValueError) as exc:
        raise LoginRefused("id_token_malformed", "The provider's ID token is not readable.") from exc
    if header is None:
        raise LoginRefused("id_token_malformed", "The provider's ID token is not readable.")
    kid = header.get("kid")
    keys = _keys(provider, meta, str(kid) if kid is not None else None)
    try:
        token = jwt.decode(raw, keys, algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise LoginRefused(
            "id_token_signature", "The provider's ID token is not signed by its keys."
        ) from exc
    claims: dict[str, Any] = dict(token.claims)
    if claims.get("iss") != meta.issuer:
        raise LoginRefused("id_token_issuer", "The ID token comes from another issuer.")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if provider.client_id not in audiences:
        raise LoginRefused("id_token_audience", "The ID token was issued to another client.")
    if len(audiences) > 1 and claims.get("azp") != provider.client_id:
        raise LoginRefused("id_token_audience", "The ID token was issued to another client (azp).")
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + LEEWAY_S < now:
        raise LoginRefused("id_token_expired", "The ID token has expired; log in again.")
    if isinstance(iat, int | float) and iat - LEEWAY_S > now:
        raise LoginRefused("id_token_not_yet_valid", "The ID token is issued in the future.")
    if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise LoginRefused("id_token_nonce", "The ID token does not answer this login (nonce).")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise LoginRefused("id_token_malformed", "The ID token names nobody (sub).")
    return claims


def use_once(session: Session, digest: str, expires: float) -> None:
    """Record that ``digest`` (of an ID token or code) is used; refuses it when it was used before."""
    row = SsoUsedToken(digest=digest, expires_at=datetime.fromtimestamp(expires + LEEWAY_S, UTC))
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise LoginRefused("id_token_replayed", "This ID token was used already; log in again.") from None


def forget_used(engine: Engine) -> int:
    """Forget used tokens past their expiry (and leeway): the expiry check refuses them from then on."""
    with engine.begin() as conn:
        done = conn.execute(delete(SsoUsedToken).where(SsoUsedToken.expires_at < datetime.now(UTC)))
    return int(done.rowcount or 0)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- the browser's flow: authorization code with PKCE ----------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """A login the provider vouched for: the checked claims, and the ID token (a hint for logging out)."""

    claims: dict[str, Any]
    id_token: str


@dataclass(frozen=True)
class Pending:
    """What a login that went to the provider must be answered with: kept in the browser (signed)."""

    provider: str
    state: str
    nonce: str
    verifier: str


def _client(provider: SsoProvider, **kwargs: Any) -> OAuth2Client:
    secret = provider.client_secret.get_secret_value()
    return OAuth2Client(
        client_id=provider.client_id,
        client_secret=secret or None,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        scope=" ".join(provider.scopes),
        timeout=provider.timeout_s,
        **kwargs,
    )


def start(provider: SsoProvider, redirect_uri: str) -> tuple[str, Pending]:
    """The provider's URL to send the browser to, and what its answer must match."""
    meta = metadata(provider)
    pending = Pending(
        provider.name, secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    )
    with _client(provider, redirect_uri=redirect_uri, code_challenge_method="S256") as client:
        url, _ = client.create_authorization_url(
            meta.authorization_endpoint,
            state=pending.state,
            nonce=pending.nonce,
            code_verifier=pending.verifier,
        )
    return str(url), pending


def finish(
    session: Session, provider: SsoProvider, pending: Pending, redirect_uri: str, code: str, state: str
) -> Verified:
    """The checked claims of the user the provider's answer (``code``, ``state``) names."""
    if pending.provider != provider.name or not secrets.compare_digest(pending.state, state or ""):
        raise LoginRefused(
            "state_mismatch", "This answer of the provider does not belong to this login; try again."
        )
    meta = metadata(provider)
    with _client(provider, redirect_uri=redirect_uri) as client:
        try:
            token = client.fetch_token(
                meta.token_endpoint,
                code=code,
                grant_type="authorization_code",
                code_verifier=pending.verifier,
            )
        except (OAuthError, httpx.HTTPError, ValueError) as exc:
            raise LoginRefused("code_refused", "The provider did not accept this login; try again.") from exc
    return _checked(session, provider, meta, dict(token), pending.nonce)


def _checked(
    session: Session, provider: SsoProvider, meta: Metadata, token: dict[str, Any], nonce: str | None
) -> Verified:
    raw = token.get("id_token")
    if not isinstance(raw, str):
        raise LoginRefused("id_token_missing", "The provider sent no ID token (is the scope openid asked?).")
    claims = verify_id_token(provider, meta, raw, nonce)
    use_once(session, digest(raw), float(claims["exp"]))
    access = token.get("access_token")
    if "email" not in claims and meta.userinfo_endpoint and isinstance(access, str):
        claims = {**_userinfo(provider, meta, access, claims["sub"]), **claims}
    return Verified(claims, raw)


def _userinfo(provider: SsoProvider, meta: Metadata, access_token: str, subject: str) -> dict[str, Any]:
    """The claims the userinfo endpoint adds (e-mail, groups); only when it speaks of the same subject."""
    try:
        response = httpx.get(
            meta.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=provider.timeout_s,
        )
        response.raise_for_status()
        info = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginRefused("userinfo_failed", "The provider's userinfo could not be read.", 502) from exc
    if not isinstance(info, dict) or info.get("sub") != subject:
        raise LoginRefused("userinfo_subject", "The provider's userinfo speaks of someone else.")
    return {k: v for k, v in info.items() if k not in {"iss", "aud", "exp", "iat", "nonce"}}


def end_session_url(provider: SsoProvider, id_token: str, post_logout: str) -> str | None:
    """Where to send the browser to log out at the provider too (RP-initiated logout), when it offers it."""
    try:
        meta = metadata(provider)
    except LoginRefused:
        return None
    if not meta.end_session_endpoint:
        return None
    query = httpx.QueryParams(
        {"id_token_hint": id_token, "client_id": provider.client_id, "post_logout_redirect_uri": post_logout}
    )
    return f"{meta.end_session_endpoint}?{query}"


# --- the command line's flow: device authorization grant (RFC 8628) ------------------------------------


def device_start(provider: SsoProvider) -> dict[str, Any]:
    """Ask the provider for a user code; its answer (``device_code`` stays with this server's caller)."""
    meta = metadata(provider)
    if not meta.device_authorization_endpoint:
        raise LoginRefused("no_device_flow", f"{provider.button_label} offers no device login.", 409)
    secret = provider.client_secret.get_secret_value()
    data = {"client_id": provider.client_id, "scope": " ".join(provider.scopes)}
    auth = (provider.client_id, secret) if secret else None
    try:
        response = httpx.post(
            meta.device_authorization_endpoint, data=data, auth=auth, timeout=provider.timeout_s
        )
        response.raise_for_status()
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginRefused("device_refused", f"{provider.button_label} refused a device login.", 502) from exc
    if not isinstance(answer, dict) or "device_code" not in answer or "user_code" not in answer:
        raise LoginRefused("device_refused", f"{provider.button_label} answered no device code.", 502)
    return answer


def device_poll(session: Session, provider: SsoProvider, device_code: str) -> Verified | None:
    """The checked claims once the user approved; None while they have not yet."""
    meta = metadata(provider)
    with _client(provider) as client:
        try:
            token = client.fetch_token(meta.token_endpoint, grant_type=DEVICE_GRANT, device_code=device_code)
        except OAuthError as exc:
            if exc.error in {"authorization_pending", "slow_down"}:
                return None
            if exc.error == "access_denied":
                raise LoginRefused("device_denied", "The login was refused at the provider.", 403) from exc
            raise LoginRefused("device_expired", "The device login has expired; start again.", 410) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginRefused("provider_unreachable", "The provider could not be reached.", 502) from exc
    return _checked(session, provider, meta, dict(token), None)


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

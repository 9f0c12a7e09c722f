"""Login throttling: slow down password guessing without locking the right password out.

Two counts, kept in the database (``login_attempts``) so that every server replica throttles from the same
numbers:

- an **account at an address**: after ``login_max_failures`` failures within ``login_window_seconds``,
  each further try for that account from that address must wait a delay that doubles with every failure
  (1 s, 2 s, 4 s, ... up to the window); a try during the delay is answered 429 with ``Retry-After``
  without looking at the password. The owner, from another address, is not slowed down at all, and the
  right password works again as soon as the delay is over.
- an **address**, over all accounts, with the much higher ``login_address_max_failures``: password
  spraying from one address is slowed the same way, while a lab behind one NAT or proxy can still
  mistype passwords now and then.

An attempt is counted *before* the password is checked (and taken back after a success), with a
compare-and-set on the row, so a burst of parallel tries cannot slip past the limit: each try takes the
next number, and the try that reaches the limit sets the delay for the rest.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from labcloud.db.engine import Database
from labcloud.db.models import LoginAttempt
from labcloud.db.types import utcnow
from labcloud.errors import TooManyRequests
from labcloud.settings import Settings

CLEANUP_EVERY_S = 60.0
MAX_ROUNDS = 50  # compare-and-set retries under contention before giving up with a 429


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class Attempt:
    """The counts one login try took; give back with :meth:`LoginThrottle.succeeded`."""

    pair_key: str
    address_key: str


@dataclass
class _Limit:
    free: int  # failures before tries are slowed down
    window: float  # seconds: failures older than this are forgotten; also the longest delay


class LoginThrottle:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.window = float(settings.login_window_seconds)
        self.pair = _Limit(settings.login_max_failures, self.window)
        self.address = _Limit(settings.login_address_max_failures, self.window)
        self._cleaned = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------- the API

    def begin(self, email: str, address: str) -> Attempt:
        """Count a login try for ``email`` (normalised) from ``address``, or refuse it with 429."""
        self._clean_up()
        attempt = Attempt(_key("account-at-address", email, address), _key("address", address))
        wait = self._take(attempt.address_key, self.address)
        if wait is not None:
            raise self._refusal(wait, "from your address")
        wait = self._take(attempt.pair_key, self.pair)
        if wait is not None:
            self._give_back(attempt.address_key)  # this try did not happen after all
            raise self._refusal(wait, "for this account from your address")
        return attempt

    def begin_sso(self, address: str) -> None:
        """Count a single sign-on request from ``address`` (each asks the provider something), or refuse it
        with 429 before the provider is asked. It counts like a failed password login of the address: a
        login that succeeds gives its requests back (:meth:`sso_succeeded`), an abandoned or refused one
        keeps them."""
        self._clean_up()
        wait = self._take(_key("sso-address", address), self.address)
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"Too many single sign-on requests from your address; try again in {retry_after} seconds.",
                retry_after=retry_after,
            )

    def sso_succeeded(self, address: str, requests: int = 1) -> None:
        """Give back ``requests`` counted by :meth:`begin_sso` (a login done, or a device login that is
        still waiting for its user)."""
        for _ in range(requests):
            self._give_back(_key("sso-address", address))

    def pace(self, name: str, seconds: float) -> None:
        """At most about one request a ``seconds`` under ``name`` (a device login's polls): a faster one is
        refused with 429 until the delay is over, one at the pace is never."""
        # Tries within 0.9 x seconds of the last count up (delays 1, 2, 4 s ...); one at the pace starts over.
        wait = self._take(_key("pace", name), _Limit(1, max(0.5, 0.9 * seconds)))
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"Polling too fast; ask again in {retry_after} seconds.", retry_after=retry_after
            )

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the account's count at this address starts again, and the try is not
        held against the address."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(LoginAttempt).where(LoginAttempt.key == attempt.pair_key))
        self._give_back(attempt.address_key)

    # -------------------------------------------------------------------------------------- counting

    @staticmethod
    def _refusal(wait: float, whom: str) -> TooManyRequests:
        retry_after = max(1, math.ceil(wait))
        return TooManyRequests(
            f"Too many failed logins {whom}; try again in {retry_after} seconds.", retry_after=retry_after
        )

    @staticmethod
    def _delay(failures: int, limit: _Limit) -> float:
        """How long the next try must wait after ``failures`` failures (0: not at all)."""
        beyond = failures - limit.free
        return 0.0 if beyond < 0 else min(limit.window, 2.0**beyond)

    def _take(self, key: str, limit: _Limit) -> float | None:
        """Count one try under ``key``; None, or the seconds to wait when the key is slowed down now."""
        for _ in range(MAX_ROUNDS):
            now = utcnow()
            with self.db.engine.connect() as conn:
                row = conn.execute(
                    select(
                        LoginAttempt.failures,
                        LoginAttempt.last_attempt_at,
                        LoginAttempt.blocked_until,
                        LoginAttempt.revision,
                    ).where(LoginAttempt.key == key)
                ).first()
            if row is None:
                if self._insert(key, limit, now):
                    return None
                continue  # another try created it first: count on top of it
            failures, last, blocked_until, revision = row
            if blocked_until is not None and blocked_until > now:
                return (blocked_until - now).total_seconds()
            if now - last > timedelta(seconds=limit.window):
                failures = 0  # long enough ago: forgotten
            counted = failures + 1
            delay = self._delay(counted, limit)
            with self.db.engine.begin() as conn:
                changed = conn.execute(
                    update(LoginAttempt)
                    .where(LoginAttempt.key == key, LoginAttempt.revision == revision)
                    .values(
                        failures=counted,
                        last_attempt_at=now,
                        blocked_until=now + timedelta(seconds=delay) if delay else None,
                        revision=revision + 1,
                    )
                )
            if changed.rowcount == 1:
                return None
        return 1.0  # too much contention on this key to count the try: it waits like a throttled one

    def _insert(self, key: str, limit: _Limit, now: datetime) -> bool:
        delay = self._delay(1, limit)
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(LoginAttempt).values(
                        key=key,
                        failures=1,
                        last_attempt_at=now,
                        blocked_until=now + timedelta(seconds=delay) if delay else None,
                        revision=0,
                    )
                )
        except IntegrityError:
            return False
        return True

    def _give_back(self, key: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(LoginAttempt)
                .where(LoginAttempt.key == key, LoginAttempt.failures > 0)
                .values(failures=LoginAttempt.failures - 1, revision=LoginAttempt.revision + 1)
            )

    def _clean_up(self) -> None:
        """Now and then, forget counts nobody has added to for two windows (and that block nothing)."""
        with self._lock:
            if time.monotonic() - self._cleaned < CLEANUP_EVERY_S:
                return
            self._cleaned = time.monotonic()
        now = utcnow()
        with self.db.engine.begin() as conn:
            conn.execute(
                delete(LoginAttempt).where(
                    LoginAttempt.last_attempt_at < now - timedelta(seconds=2 * self.window),
                    (LoginAttempt.blocked_until.is_(None)) | (LoginAttempt.blocked_until < now),
                )
            )

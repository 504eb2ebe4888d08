"""Signed, expiring comparison tokens bound to a session, the salted IP hash, and the rate limiter.

A token is `base64url(payload).base64url(HMAC-SHA256(secret, payload))` with payload
`{"c": comparison id, "s": voter id, "e": expiry (unix s)}`. The voter id is itself an HMAC of the Gradio
session hash, so neither the token nor the database holds a raw session or IP. Replays are caught by the
store (UNIQUE(comparison, voter)); forgery by the MAC; another session's token by the voter id; age by "e".
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass

SECRET_ENV = "VIDEOSSM_STUDY_SECRET"
SECRET_BYTES = 32


class TokenError(ValueError):
    """A comparison token is forged, expired, malformed or belongs to another session."""


class RateLimited(ValueError):
    """Too many requests from one session or one IP in the rate window."""


def load_secret(path: str) -> bytes:
    """The HMAC key: VIDEOSSM_STUDY_SECRET (hex or text) if set, else `path` (created 0600 when missing)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    try:
        with open(path, "rb") as f:
            secret = f.read()
    except FileNotFoundError:
        secret = secrets.token_bytes(SECRET_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
    if len(secret) < 16:
        raise ValueError(f"the study secret in {path} is {len(secret)} bytes; it needs at least 16")
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    comparison_id: str
    voter: str
    expires_at: float


class TokenSigner:
    def __init__(self, secret: bytes, ttl_s: float):
        self._key = hmac.new(secret, b"videossm-study-token", hashlib.sha256).digest()
        self._id_key = hmac.new(secret, b"videossm-study-id", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def hash_id(self, kind: str, value: str) -> str:
        """A salted, keyed hash (e.g. of a session hash or an IP address): stable, not reversible."""
        return hmac.new(self._id_key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, comparison_id: str, voter: str, now: float | None = None) -> tuple[str, float]:
        expires_at = (time.time() if now is None else now) + self.ttl_s
        payload = json.dumps({"c": comparison_id, "s": voter, "e": round(expires_at, 3)},
                             separators=(",", ":")).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}", expires_at

    def verify(self, token: str, voter: str, now: float | None = None) -> TokenClaims:
        if not isinstance(token, str) or token.count(".") != 1:
            raise TokenError("invalid comparison token (malformed); press 'New comparison'")
        payload_b64, mac_b64 = token.split(".")
        try:
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except (binascii.Error, ValueError):
            raise TokenError("invalid comparison token (not base64); press 'New comparison'") from None
        if not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()):
            raise TokenError("invalid comparison token (bad signature); press 'New comparison'")
        try:
            claims = json.loads(payload)
            claims = TokenClaims(str(claims["c"]), str(claims["s"]), float(claims["e"]))
        except (ValueError, KeyError, TypeError):  # cannot happen for tokens we signed
            raise TokenError("invalid comparison token (bad payload)") from None
        if not hmac.compare_digest(claims.voter, voter):
            raise TokenError("this comparison was issued to another session; press 'New comparison'")
        if (time.time() if now is None else now) > claims.expires_at:
            raise TokenError("this comparison has expired; press 'New comparison'")
        return claims


class RateLimiter:
    """At most `limit` events per key in any sliding `window_s` seconds (in memory; resets on restart)."""

    def __init__(self, limit: int, window_s: float, what: str):
        self.limit, self.window_s, self.what = limit, window_s, what
        self._events: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> None:
        """Count one event for `key`, or raise RateLimited (the refused event is not counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                wait = events[0] + self.window_s - now
                raise RateLimited(f"too many votes from this {self.what} ({self.limit} per "
                                  f"{self.window_s / 60:g} min); try again in {wait / 60:.0f} min")
            events.append(now)

    def undo(self, key: str) -> None:
        """Give back the last counted event (the vote it stood for was not stored)."""
        with self._lock:
            if self._events[key]:
                self._events[key].pop()

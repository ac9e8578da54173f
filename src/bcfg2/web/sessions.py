"""Sessions in signed cookies, CSRF tokens, and the throttle on failed logins.

A session cookie is ``<payload>.<HMAC-SHA256>``, the payload the user's
name, the stamp of their password hash (a new password ends old sessions),
a random session id and when it was made, signed with the key of ``[web]
secret``. It is ``HttpOnly``, ``Secure`` and ``SameSite=Strict``, and is
refused after ``[web] session_hours``, or once its user logged out. The CSRF
token of a session is an HMAC of its id: every form carries it and every POST
is checked against it.
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

from bcfg2.errors import ConfigError
from bcfg2.options import Setup

COOKIE = "bcfg2web"
#: the cookie carrying the login form's CSRF token (there is no session yet)
LOGIN_COOKIE = "bcfg2web_login"
#: the longest cookie value read
MAX_COOKIE = 1024
KEY_BYTES = 32


def secret_path(setup: Setup) -> str:
    return setup.web.secret or os.path.join(setup.server.state_dir, "web", "secret")


def load_secret(path: str) -> bytes:
    """The signing key in ``path``, made there (mode 0600) if the file does not exist."""
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        key = secrets.token_hex(KEY_BYTES).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another server made it meanwhile
            return load_secret(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
    except OSError as err:
        raise ConfigError(f"[web] secret: cannot read {path}: {err.strerror}") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"[web] secret: {path} holds fewer than {KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class Session:
    user: str
    stamp: str
    sid: str
    issued: float


class Signer:
    """Makes and checks session cookies and CSRF tokens with one key.

    A session ended by logging out (``revoke``) is refused from then on, by this
    process, until it would have expired anyway: the cookie a browser was told to
    forget cannot be replayed. At most ``MAX_REVOKED`` are remembered, the first to
    expire forgotten first.
    """

    MAX_REVOKED = 100_000

    def __init__(self, key: bytes, lifetime: float) -> None:
        self.key = key
        self.lifetime = lifetime
        #: session id -> when its cookie expires anyway (in the order revoked)
        self._revoked: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def revoke(self, sid: str, now: float | None = None) -> None:
        """Refuse the session with this id from now on."""
        now = time.time() if now is None else now
        with self._lock:
            while self._revoked and (next(iter(self._revoked.values())) < now
                                     or len(self._revoked) >= self.MAX_REVOKED):
                self._revoked.popitem(last=False)
            self._revoked[sid] = now + self.lifetime

    def _mac(self, purpose: str, data: bytes) -> str:
        return hmac.new(self.key, purpose.encode() + b"\0" + data,
                        hashlib.sha256).hexdigest()

    def issue(self, user: str, stamp: str, now: float | None = None) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(
            [user, stamp, secrets.token_hex(16), time.time() if now is None else now],
            separators=(",", ":")).encode()).decode()
        return f"{payload}.{self._mac('session', payload.encode())}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None if it is absent, forged or expired."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload.encode())):
            return None
        try:
            user, stamp, sid, issued = json.loads(base64.urlsafe_b64decode(payload))
            session = Session(str(user), str(stamp), str(sid), float(issued))
        except (ValueError, TypeError, binascii.Error):
            return None
        age = (time.time() if now is None else now) - session.issued
        if not 0 <= age <= self.lifetime or session.sid in self._revoked:
            return None
        return session

    def csrf(self, sid: str) -> str:
        """The CSRF token of a session (or of a login form's random id)."""
        return self._mac("csrf", sid.encode())

    def csrf_ok(self, sid: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(sid))


class LoginThrottle:
    """Failed logins per key (a source address, a user name) in a sliding window.

    At most ``limit`` failures per key within ``window`` seconds; the keys
    kept are bounded (the oldest forgotten first), so a flood of names
    cannot fill memory.
    """

    MAX_KEYS = 10_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: collections.OrderedDict[str, collections.deque[float]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, *keys: str, now: float | None = None) -> bool:
        """Whether any key has had ``limit`` failures within the window."""
        if self.limit <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(len(self._recent(key, now)) >= self.limit for key in keys)

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > self.MAX_KEYS:
                self._failures.popitem(last=False)


__all__ = ["COOKIE", "LOGIN_COOKIE", "LoginThrottle", "Session", "Signer", "load_secret",
           "secret_path"]

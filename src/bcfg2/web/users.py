"""Web users: a JSON file of names, roles and argon2 password hashes.

The admin manages it with ``bcfg2-admin web user add|del|list|passwd``; the
server reads it again whenever it changes, so a removed user or a changed
role counts at the next request. Passwords are hashed with argon2id
(argon2-cffi, its default memory-hard parameters); the file is written
atomically, mode 0600.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from dataclasses import dataclass

import argon2

from bcfg2.errors import ConfigError
from bcfg2.options import Setup
from bcfg2.xml import atomic_write

logger = logging.getLogger("bcfg2.web")

#: what a user may do: viewers read, admins also act on clients
ROLES = ("viewer", "admin")
#: a user name: letters, digits and ._@- (what is logged and shown is then harmless)
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: the longest password checked (argon2 takes any length; this bounds the work per attempt)
MAX_PASSWORD = 1024
MIN_PASSWORD = 8

_hasher = argon2.PasswordHasher()


def users_path(setup: Setup) -> str:
    """Where the users file is (``[web] users``, else under the state directory)."""
    return setup.web.users or os.path.join(setup.server.state_dir, "web", "users.json")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def stamp(self) -> str:
        """Changes with the password: a session made before a password change is refused."""
        return self.hash[-16:]


class UserError(ValueError):
    """A user name, role or password that cannot be used, with the reason."""


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise UserError("a user name is 1-64 letters, digits and . _ @ - (starting with a "
                        "letter or digit)")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


class Users:
    """The users file, read again when it changes (by its modification time and size)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        #: whether a version of the file was read (a broken one then leaves it in service)
        self._read_once = False

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def all(self) -> dict[str, User]:
        """Every user by name (none if the file does not exist).

        A file that cannot be read raises ConfigError the first time; once a version
        was read, a broken one leaves that version in service, logged once, so a typo
        in the file locks nobody out (and the admin can still log in to see it).
        """
        return self._load(strict=False)

    def _load(self, strict: bool) -> dict[str, User]:
        """The users, the file read again if it changed (``strict``: whatever its stamp,
        and a broken file is an error: a change never writes the version read before
        over an edit it cannot read)."""
        with self._lock:
            seen = self._stat()
            if strict or seen != self._seen:
                try:
                    self._users = self._read() if seen is not None else {}
                except ConfigError as err:
                    if strict or not self._read_once:
                        raise
                    logger.error("%s; the users read before stay in service", err)
                self._seen = seen
                self._read_once = True
            return dict(self._users)

    def _read(self) -> dict[str, User]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                raw = json.load(fh)
            return {name: User(name, entry["role"], entry["hash"])
                    for name, entry in raw["users"].items()
                    if USER_NAME.fullmatch(name) and entry.get("role") in ROLES}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{self.path}: cannot read the web users: {err}") from None

    def get(self, name: str) -> User | None:
        return self.all().get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is theirs, else None (the same work either way)."""
        user = self.get(name) if USER_NAME.fullmatch(name) else None
        if len(password) > MAX_PASSWORD:
            return None
        try:
            if user is None:
                _hasher.verify(_dummy(), password)  # no timing difference for unknown names
                return None
            _hasher.verify(user.hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        return user

    # -- changes (bcfg2-admin web user) -----------------------------------------------

    def _write(self, users: dict[str, User]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
        data = {"users": {u.name: {"role": u.role, "hash": u.hash}
                          for u in sorted(users.values(), key=lambda u: u.name)}}
        atomic_write(self.path, json.dumps(data, indent=1) + "\n", 0o600)

    def add(self, name: str, role: str, password: str) -> None:
        check_name(name)
        if role not in ROLES:
            raise UserError(f"a role is one of {', '.join(ROLES)}")
        users = self._load(strict=True)
        if name in users:
            raise UserError(f"user {name} exists (use passwd to change the password)")
        users[name] = User(name, role, _hasher.hash(check_password(password)))
        self._write(users)

    def passwd(self, name: str, password: str, role: str | None = None) -> None:
        users = self._load(strict=True)
        if name not in users:
            raise UserError(f"no such user: {name}")
        if role is not None and role not in ROLES:
            raise UserError(f"a role is one of {', '.join(ROLES)}")
        users[name] = User(name, role or users[name].role, _hasher.hash(check_password(password)))
        self._write(users)

    def remove(self, name: str) -> None:
        users = self._load(strict=True)
        if users.pop(name, None) is None:
            raise UserError(f"no such user: {name}")
        self._write(users)


@functools.cache
def _dummy() -> str:
    return _hasher.hash("not a password of anyone")

__all__ = ["ROLES", "User", "UserError", "Users", "users_path"]

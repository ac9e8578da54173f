"""A throwaway PostgreSQL server for the tests: started once per session, a database per test.

The cluster is made with the PostgreSQL binaries of this machine
(``/usr/lib/postgresql/*/bin``: ``initdb``, ``pg_ctl``) in a directory of its
own under /tmp, listens on a free port of 127.0.0.1 only (its Unix socket in
that directory), and is stopped (``pg_ctl stop -m fast``) and removed at the
end of the session. Run as root, it runs as ``nobody`` (PostgreSQL refuses
to run as root), which is why the directory is not pytest's (private) one.
TCP logins need the superuser's password (scram), so the tests exercise
what a site does; the fixture's own administration goes through the socket.
Where the binaries are missing, every test that needs the server skips,
saying so (``.ci/run`` installs the ``postgresql`` package).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

SUPERUSER = "bcfg2test"
#: where to run as (an unprivileged user) when the tests run as root
UNPRIVILEGED = "nobody"


def binaries() -> str | None:
    """The newest PostgreSQL bin directory with initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    for initdb in reversed(found):
        bindir = os.path.dirname(initdb)
        if os.access(os.path.join(bindir, "pg_ctl"), os.X_OK):
            return bindir
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One PostgreSQL server of our own on 127.0.0.1."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.password = secrets.token_urlsafe(16)
        self.base = tempfile.mkdtemp(prefix="bcfg2-pg-", dir="/tmp")
        self.data = os.path.join(self.base, "data")
        self.port = 0
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", UNPRIVILEGED, "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True,
                                timeout=120, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        pwfile = os.path.join(self.base, "pw")
        with open(pwfile, "w") as fh:
            fh.write(self.password + "\n")
        if self.as_user:
            user = pwd.getpwnam(UNPRIVILEGED)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", SUPERUSER,
                  "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        os.unlink(pwfile)
        for _ in range(5):  # another process may take the port between the check and the start
            self.port = free_port()
            try:
                self._start()
                return
            except RuntimeError:
                if "could not bind" not in self.log():
                    raise
        raise RuntimeError("no free port for PostgreSQL")

    def _start(self) -> None:
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w",
                  "-l", os.path.join(self.base, "log"), "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} "
                  f"-c unix_socket_directories={self.base} -c fsync=off "
                  f"-c full_page_writes=off -c max_connections=200", "start")

    def pause(self) -> None:
        """Stop the server, keeping its data (every client's connection is cut)."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                  "stop")

    def resume(self) -> None:
        """Start a paused server again, on the same port."""
        self._start()

    def log(self) -> str:
        try:
            with open(os.path.join(self.base, "log")) as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast",
                          "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def admin(self, dbname: str = "postgres") -> Any:
        """A superuser connection through the socket (autocommit), for the fixture's work."""
        import psycopg

        return psycopg.connect(host=self.base, port=self.port, user=SUPERUSER, dbname=dbname,
                               autocommit=True)


@dataclass
class PgDatabase:
    """One fresh database of the session's cluster, and how to reach it over TCP."""

    cluster: Cluster
    name: str

    @property
    def overrides(self) -> dict[str, str]:
        """The ``[database]`` options of a Setup using it (``make_setup(**overrides)``)."""
        return {"database__engine": "postgresql", "database__name": self.name,
                "database__user": SUPERUSER, "database__password": self.cluster.password,
                "database__host": "127.0.0.1", "database__port": str(self.cluster.port),
                "database__pool_size": "4"}

    def settings(self, **changes: Any) -> Any:
        from bcfg2.storage.postgresql import Settings

        values = {"name": self.name, "user": SUPERUSER, "password": self.cluster.password,
                  "host": "127.0.0.1", "port": str(self.cluster.port), "pool_size": 4}
        values.update(changes)
        return Settings(**values)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, through a connection of its own (as an admin looks)."""
        with self.cluster.admin(self.name) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def terminate_others(self) -> int:
        """Terminate every other backend connected to the database (a crash, as seen
        from the clients); how many."""
        return len(self.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()"))

    def terminate(self, pid: int) -> None:
        self.query("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server (skips where PostgreSQL or psycopg is missing)."""
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg is not installed: "
                                          "pip install 'psycopg[binary]' psycopg-pool")
    pytest.importorskip("psycopg_pool", reason="psycopg-pool is not installed")
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except BaseException:
        log = cluster.log()
        cluster.stop()
        raise RuntimeError(f"the test PostgreSQL server did not start:\n{log}") from None
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[PgDatabase]:
    """A fresh database for one test (made from template1), dropped after it."""
    name = f"t_{secrets.token_hex(6)}"
    with pg_cluster.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
    yield PgDatabase(pg_cluster, name)
    with pg_cluster.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=("sqlite", "postgresql"))
def storage_engine(request: pytest.FixtureRequest) -> str:
    """Each engine in turn (the postgresql one skips where PostgreSQL is missing)."""
    return str(request.param)


@pytest.fixture
def store_database(storage_engine: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Factory: the ``database`` argument a store gets on the test's engine: None on
    SQLite (the store opens its own file), a handle on the test's database otherwise."""
    handles: list[Any] = []

    def make() -> Any:
        if storage_engine == "sqlite":
            return None
        from bcfg2.storage.postgresql import PostgreSQLDatabase

        handles.append(PostgreSQLDatabase(request.getfixturevalue("pg_database").settings()))
        return handles[-1]

    yield make
    for handle in handles:
        handle.close()

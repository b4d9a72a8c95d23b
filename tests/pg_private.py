"""A private PostgreSQL server for tests that stop, kill or restart the database.

The shared server at 127.0.0.1:5432 serves every other test (and other people's runs), so a
test that takes the database away must never touch it. :class:`PrivatePostgres` runs a
server of its own instead: ``initdb`` into a temporary directory once per test session
(about a second), then ``pg_ctl`` on a free loopback port with trust authentication, TCP on
127.0.0.1 only and no Unix socket. Each test gets a fresh database in it.

PostgreSQL refuses to run as root, so under root (CI runs as root) every server command
runs as the ``postgres`` user (``runuser -u postgres --``) and the directory is handed to
it; a developer running the tests as themselves runs the commands directly.

Fixtures (re-exported by ``tests/conftest.py``):

- ``private_postgres`` (session): the server, started.
- ``private_pg`` (per test): the same server, started, with :attr:`PrivateDatabase.url`
  naming a database of the test's own; the server is started again after the test if the
  test left it down, and the database is dropped.

A session that dies without cleaning up (SIGKILL) leaves its server running; the next
session stops and removes it (:func:`reap_orphans`).

Use it as::

    def test_restart(private_pg: PrivateDatabase) -> None:
        write_something(private_pg.url)
        private_pg.server.restart(mode="immediate")   # as if the machine lost power
        ...

The binaries are found as ``$JOBTRACE_TEST_PG_BIN`` (a directory), then
``/usr/lib/postgresql/<newest>/bin`` (Debian, Ubuntu), then ``pg_config --bindir``, then the
``PATH``. When they are missing the fixtures skip with the reason on a developer's machine
and fail under ``CI=true``, like the other service fixtures.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.server_helpers import free_port

__all__ = [
    "PrivateDatabase",
    "PrivatePostgres",
    "find_bin_dir",
    "private_pg",
    "private_postgres",
    "reap_orphans",
]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: The user PostgreSQL runs as when the tests run as root.
SERVER_USER = "postgres"
#: How long to wait for the server to come up or go down (it takes well under a second).
READY_TIMEOUT = 60.0

StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailable(Exception):
    """The binaries or the ``postgres`` user this machine needs are missing."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``pg_isready``."""
    candidates: list[Path] = []
    if os.environ.get("JOBTRACE_TEST_PG_BIN"):
        candidates.append(Path(os.environ["JOBTRACE_TEST_PG_BIN"]))

    def version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name.split(".")
        return tuple(int(d) for d in digits if d.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        )
        candidates.append(Path(out.stdout.strip()))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "pg_isready")):
            return directory
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install the postgresql "
        "package or set JOBTRACE_TEST_PG_BIN to their directory"
    )


_PREFIX = "jobtrace-pg-"
#: Holds the pid of the test session that owns a server directory.
_OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(bin_dir: Path, as_user: str | None) -> list[Path]:
    """Stop and remove the servers of test sessions that died without cleaning up (a
    killed pytest); on a shared machine they would otherwise run for ever. Returns the
    directories removed."""
    reaped = []
    for root in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((root / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or a session writing it this very moment
        if not _alive(owner):
            PrivatePostgres(root, bin_dir, 0, as_user).destroy()
            reaped.append(root)
    return reaped


class PrivatePostgres:
    """One PostgreSQL server of the test session's own, in a temporary directory.

    :meth:`create` runs ``initdb`` and starts the server; :meth:`stop`, :meth:`start` and
    :meth:`restart` take it away and bring it back on the same port, with the same data;
    :meth:`destroy` stops it and removes the directory.
    """

    def __init__(self, root: Path, bin_dir: Path, port: int, as_user: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.bin_dir = bin_dir
        self.port = port
        self.host = "127.0.0.1"
        self._as_user = as_user

    @classmethod
    def create(cls) -> PrivatePostgres:
        """``initdb`` a new cluster in a temporary directory and start it."""
        bin_dir = find_bin_dir()
        as_user = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and PostgreSQL refuses to: no {SERVER_USER!r} user "
                    "to run it as"
                ) from None
            as_user = SERVER_USER
        reap_orphans(bin_dir, as_user)
        # Not pytest's tmp_path: its parents are private to root, and the server user must
        # be able to reach the data directory.
        root = Path(tempfile.mkdtemp(prefix=_PREFIX))
        (root / _OWNER_FILE).write_text(str(os.getpid()))
        if as_user is not None:
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(root, bin_dir, free_port(), as_user)
        try:
            server._run(
                "initdb",
                *("-D", str(server.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
                # No fsync while building a throwaway cluster; C.UTF-8 exists everywhere.
                *("--no-sync", "--locale=C.UTF-8"),
            )
            server._configure()
            server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    def _configure(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            # TCP only: no socket file in a shared directory such as /var/run/postgresql.
            "unix_socket_directories": "''",
            # A crash (immediate stop) must lose nothing committed, as on a real server,
            # and data written before it is in the OS cache whatever fsync says: turning
            # fsync off speeds up the tests without changing what they see.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "32MB",
            "log_line_prefix": "'%m [%p] '",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# jobtrace tests (tests/pg_private.py)\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    # -- commands ------------------------------------------------------------------------

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self._as_user is not None:
            command = ["runuser", "-u", self._as_user, "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT + 30,
            # A working directory the server user can read (not root's home), and that
            # outlives the server's own.
            cwd="/",
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self.log_tail()}"
            )
        return result

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- server log ---\n" + "\n".join(text.splitlines()[-lines:])

    def is_ready(self) -> bool:
        """Whether the server accepts connections now (``pg_isready``)."""
        result = self._run(
            "pg_isready", "-q", "-h", self.host, "-p", str(self.port), "-t", "5", check=False
        )
        return result.returncode == 0

    def is_running(self) -> bool:
        """Whether the postmaster of this directory is alive (``pg_ctl status``)."""
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``pg_isready`` until the server accepts connections (bounded)."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the private PostgreSQL on port {self.port} is not ready after "
                    f"{timeout:.0f} s{self.log_tail()}"
                )
            time.sleep(0.05)

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after crash recovery,
        if it was stopped in ``immediate`` mode)."""
        if not self.is_running():
            self._run(
                "pg_ctl",
                *("start", "-D", str(self.data), "-l", str(self.log)),
                *("-w", "-t", str(int(READY_TIMEOUT))),
            )
        self.wait_ready()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until it is gone.

        ``fast`` disconnects every client and shuts down cleanly; ``immediate`` kills the
        server processes at once, as a crash or power loss would (the next start runs crash
        recovery); ``smart`` waits for clients to disconnect.
        """
        if self.is_running():
            self._run(
                "pg_ctl",
                *("stop", "-D", str(self.data), "-m", mode, "-w"),
                *("-t", str(int(READY_TIMEOUT))),
            )
        assert not self.is_ready(), f"the private PostgreSQL still answers after a {mode} stop"

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (in ``mode``) and start again on the same port, with the same data."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server (immediately: its data is thrown away) and remove its directory."""
        with contextlib.suppress(Exception):
            if self.data.exists() and self.is_running():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` store URL for ``database`` on this server."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction, in the maintenance database."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"jt_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever still uses it (a server under test)."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivateDatabase:
    """A test's own database on the session's :class:`PrivatePostgres`."""

    def __init__(self, server: PrivatePostgres, name: str) -> None:
        self.server = server
        self.name = name
        #: The store URL of the test's database.
        self.url = server.url(name)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The session's private PostgreSQL server (initdb once; skipped locally when the
    binaries are missing, never under CI=true)."""
    try:
        server = PrivatePostgres.create()
    except PostgresUnavailable as exc:
        if IN_CI:
            pytest.fail(f"a private PostgreSQL server is needed under CI: {exc}")
        pytest.skip(f"cannot run a private PostgreSQL server ({exc}; user {getpass.getuser()})")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_pg(private_postgres: PrivatePostgres) -> Iterator[PrivateDatabase]:
    """A fresh database on the private server, which the test may stop and restart."""
    private_postgres.start()  # an earlier test may have left it down
    database = PrivateDatabase(private_postgres, private_postgres.create_database())
    try:
        yield database
    finally:
        private_postgres.start()
        private_postgres.drop_database(database.name)

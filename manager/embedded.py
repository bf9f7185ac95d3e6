"""The embedded Postgres used when ``DATABASE_URL`` is unset.

A Postgres data directory lives under ``DOCAGENTS_HOME/pgdata`` and listens on a
unix socket in that directory only. Several processes may share it (``docagents
up`` and a ``docagents stats`` next to it): each one holding it is recorded, and
the last one to let go stops the server.

Two engines:

- ``pgserver`` (a PyPI package that ships Postgres binaries; wheels for Python
  3.9-3.12). It keeps its holders in ``<pgdata>/.handle_pids.json`` and never
  forgets a holder killed with SIGKILL, which would keep the server alive
  forever; :class:`EmbeddedPostgres` prunes dead holders before attaching.
- the system's ``initdb``/``pg_ctl`` (on ``PATH`` or ``/usr/lib/postgresql/*/bin``),
  used where pgserver is not installed or when ``DOCAGENTS_EMBEDDED=system``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psutil
import structlog

from manager.errors import EmbeddedPostgresError

__all__ = ["EmbeddedPostgres"]

log = structlog.get_logger(__name__)

Engine = Literal["pgserver", "system"]
_HOLDERS_FILE = ".handle_pids.json"  # the same file pgserver uses
_START_TIMEOUT_S = 60


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pgserver_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # noqa: F401
    except ImportError:
        return False
    return True


def _system_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


class EmbeddedPostgres:
    """A Postgres under ``home/pgdata``; :meth:`start` returns its connection URI."""

    def __init__(self, home: Path, *, engine: Engine | None = None) -> None:
        self.home = home
        self.pgdata = home / "pgdata"
        requested = engine or os.environ.get("DOCAGENTS_EMBEDDED") or None
        if requested not in (None, "pgserver", "system"):
            raise EmbeddedPostgresError(
                f"DOCAGENTS_EMBEDDED must be 'pgserver' or 'system', not {requested!r}"
            )
        self._requested: Engine | None = requested  # type: ignore[assignment]
        self._server: object | None = None
        self._uri: str | None = None
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ public

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("embedded Postgres not started")
        return self._engine

    def start(self) -> str:
        """Start the server, or attach to the one already running; return its URI."""
        if self._uri is not None:
            raise RuntimeError("EmbeddedPostgres.start() called twice")
        self.home.mkdir(parents=True, exist_ok=True)
        engine = self._choose_engine()
        try:
            uri = self._start_pgserver() if engine == "pgserver" else self._start_system()
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip()
            raise EmbeddedPostgresError(
                f"could not start the embedded Postgres in {self.pgdata}: {exc}: {detail}"
            ) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(
                f"could not start the embedded Postgres in {self.pgdata}: {exc}"
            ) from exc
        self._engine, self._uri = engine, uri
        log.info("embedded_postgres_attached", engine=engine, pgdata=str(self.pgdata))
        return uri

    def release(self) -> None:
        """Let go of the server; it stops when the last holder lets go."""
        if self._uri is None:
            return
        if self._engine == "pgserver":
            server, self._server = self._server, None
            if server is not None:
                server.cleanup()  # type: ignore[attr-defined]
        else:
            with self._holders() as holders:
                holders.discard(os.getpid())
                last = not holders
            if last:
                self._pg_ctl_stop()
        self._uri = None
        log.info("embedded_postgres_released", pgdata=str(self.pgdata))

    def stop_now(self) -> bool:
        """Stop the server whoever holds it (``docagents down``). True if it was running."""
        if not self._postmaster_running():
            return False
        with self._holders() as holders:
            holders.clear()
        return self._pg_ctl_stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # ---------------------------------------------------------------- internals

    def _choose_engine(self) -> Engine:
        if self._requested == "system":
            return "system"
        if _pgserver_available():
            return "pgserver"
        if self._requested == "pgserver":
            raise EmbeddedPostgresError("DOCAGENTS_EMBEDDED=pgserver but pgserver is not installed")
        if _system_bindir() is None:
            raise EmbeddedPostgresError(
                "no embedded Postgres available: install the 'pgserver' package "
                "(wheels for Python 3.9-3.12) or PostgreSQL's server binaries "
                "(initdb, pg_ctl; e.g. apt-get install postgresql), "
                "or set DATABASE_URL to an existing Postgres"
            )
        return "system"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The lock guarding the holders file: pgserver's own, or ours."""
        if self._engine_for_lock() == "pgserver":
            from pgserver.postgres_server import PostgresServer

            with PostgresServer._lock:
                yield
            return
        with (self.home / ".pgdata.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _engine_for_lock(self) -> Engine:
        return self._engine or self._choose_engine()

    @contextlib.contextmanager
    def _holders(self) -> Iterator[set[int]]:
        """The live holders of this data directory, under the holders lock.

        Dead holders (killed with SIGKILL, so never deregistered) are dropped.
        """
        with self._lock():
            path = self._holders_path()
            try:
                recorded = set(json.loads(path.read_text())) if path.exists() else set()
            except (ValueError, TypeError):
                log.warning("embedded_postgres_holders_unreadable", path=str(path))
                recorded = set()
            holders = {pid for pid in recorded if isinstance(pid, int) and _alive(pid)}
            if recorded - holders:
                log.info("embedded_postgres_pruned_dead_holders", pids=sorted(recorded - holders))
            yield holders
            if path.parent.exists() and (holders or path.exists()):
                path.write_text(json.dumps(sorted(holders)))

    def _holders_path(self) -> Path:
        # pgserver keeps its file inside pgdata (only once initdb made it);
        # ours lives next to it so that initdb finds an empty directory.
        if self._engine_for_lock() == "pgserver":
            return self.pgdata / _HOLDERS_FILE
        return self.home / ".pgdata_holders.json"

    def _start_pgserver(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self._engine = "pgserver"
        from pgserver.postgres_server import PostgresServer

        # pgserver caches one handle per data directory for the life of the
        # process; after the server was stopped (stop_now, `docagents down`)
        # that handle describes a dead postmaster. Forget it so we start anew.
        cached = PostgresServer._instances.get(self.pgdata.resolve())
        if cached is not None:
            info = cached._postmaster_info
            if info is None or info.pid is None or not _alive(info.pid):
                PostgresServer._instances.pop(self.pgdata.resolve(), None)
        if (self.pgdata / _HOLDERS_FILE).exists():
            with self._holders():
                pass  # prune holders that died without letting go
        server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._server = server
        return server.get_uri()

    def _run_as_owner(self) -> dict[str, int]:
        """subprocess kwargs to run Postgres tools as the data directory's owner."""
        if os.geteuid() != 0:
            return {}
        with contextlib.suppress(OSError):
            st = self.pgdata.stat()
            if st.st_uid != 0:
                return {"user": st.st_uid, "group": st.st_gid}
        for name in ("postgres", "pgserver"):
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(name)
                return {"user": pw.pw_uid, "group": pw.pw_gid}
        raise EmbeddedPostgresError(
            "running as root: Postgres needs an unprivileged system user "
            "('postgres'); create one or run docagents as a normal user"
        )

    def _start_system(self) -> str:
        bindir = _system_bindir()
        if bindir is None:
            raise EmbeddedPostgresError("initdb/pg_ctl not found on PATH or in /usr/lib/postgresql")
        self._engine = "system"
        self.pgdata.mkdir(parents=True, exist_ok=True)
        owner = self._run_as_owner()
        if owner:
            os.chown(self.pgdata, owner["user"], owner["group"])
            self.pgdata.chmod(0o700)
        with self._holders() as holders:
            if not (self.pgdata / "PG_VERSION").exists():
                subprocess.run(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.pgdata),
                        "--auth=trust",
                        "--encoding=UTF8",
                        "-U",
                        "postgres",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=_START_TIMEOUT_S,
                    **owner,  # type: ignore[arg-type]
                )
            if not self._postmaster_running():
                subprocess.run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(self.pgdata),
                        "-w",
                        "-t",
                        "60",
                        "-l",
                        str(self.pgdata / "log"),
                        "-o",
                        f"-h '' -k {self.pgdata}",
                        "start",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=_START_TIMEOUT_S + 5,
                    **owner,  # type: ignore[arg-type]
                )
            holders.add(os.getpid())
        return f"postgresql://postgres:@/postgres?host={quote(str(self.pgdata), safe='/')}"

    def _postmaster_running(self) -> bool:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        return _alive(pid)

    def _pg_ctl_stop(self) -> bool:
        if not self._postmaster_running():
            return False
        bindir: Path | None
        if self._engine_for_lock() == "pgserver":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from pgserver._commands import POSTGRES_BIN_PATH
            bindir = POSTGRES_BIN_PATH
        else:
            bindir = _system_bindir()
        if bindir is None:
            raise EmbeddedPostgresError("pg_ctl not found; cannot stop the embedded Postgres")
        owner = self._run_as_owner()
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
            **owner,  # type: ignore[arg-type]
        )
        log.info("embedded_postgres_stopped", pgdata=str(self.pgdata))
        return True


def bundled_psql() -> str | None:
    """pgserver's own psql, when the system has none."""
    if not _pgserver_available():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    candidate = POSTGRES_BIN_PATH / "psql"
    return str(candidate) if candidate.exists() else None

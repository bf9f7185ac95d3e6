"""Which database backend the manager runs on, built from the settings.

* ``DATABASE_URL`` set -> ``postgres`` (any Postgres, or Supabase's direct connection)
* ``SUPABASE_URL`` and ``SUPABASE_SERVICE_KEY`` set, ``DATABASE_URL`` not ->
  ``supabase`` (PostgREST + Realtime; no database password on this host)
* neither -> ``embedded`` (the embedded Postgres under ``DOCAGENTS_HOME``)

Each backend gives the same three seams: a :class:`~manager.store.base.Store`,
a factory of activity sources (``cursor -> source`` with the
:class:`~manager.events.listen.ActivityListener` surface) and a
:class:`~manager.store.writer.StoreWriter` over that store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import anyio
import anyio.abc

from manager.config import Settings
from manager.errors import ConfigurationError
from manager.events.cursor import OnEvents
from manager.store.base import Store
from manager.store.writer import StoreWriter

__all__ = [
    "ActivitySource",
    "ActivitySourceFactory",
    "Backend",
    "BackendKind",
    "FleetNotices",
    "open_backend",
    "select_backend",
]

BackendKind = Literal["postgres", "embedded", "supabase"]


class ActivitySource(Protocol):
    """What the daemon needs from an activity source (ActivityListener, RealtimeActivitySource).

    Both take the properties from :class:`~manager.events.cursor.CursorSource`;
    ``run`` is each one's own.
    """

    async def run(
        self,
        on_events: OnEvents,
        *,
        task_status: anyio.abc.TaskStatus[None] = ...,
    ) -> None: ...

    @property
    def cursor(self) -> int: ...

    @property
    def lag_s(self) -> float | None: ...

    @property
    def connected(self) -> bool: ...


@runtime_checkable
class FleetNotices(Protocol):
    """An activity source that also passes on fleet notifications (``manager_leases``,
    a drain began): ActivityListener. Realtime has none; its managers see a drain at
    their next lease renewal."""

    on_fleet_notice: Callable[[], None] | None


#: Builds a fresh activity source that follows the table from ``cursor``.
ActivitySourceFactory = Callable[[int], ActivitySource]


@dataclass(frozen=True, slots=True)
class Backend:
    """An open backend: its store, a writer over it, and how to follow its activity."""

    kind: BackendKind
    store: Store
    writer: StoreWriter
    activity_source: ActivitySourceFactory
    #: libpq connection string for the Postgres kinds (None for supabase). Secret: never log it.
    conninfo: str | None
    #: where the data lives, without secrets (for logs)
    description: str


def select_backend(settings: Settings) -> BackendKind:
    """The backend the settings ask for (pure; see the module docstring)."""
    if settings.database_url is not None:
        return "postgres"
    has_url = bool(settings.supabase_url)
    has_key = settings.supabase_service_key is not None
    if has_url and has_key:
        return "supabase"
    if has_url != has_key:
        missing = "SUPABASE_SERVICE_KEY" if has_url else "SUPABASE_URL"
        raise ConfigurationError(
            f"{missing} is not set: the Supabase backend needs both SUPABASE_URL and "
            "SUPABASE_SERVICE_KEY (or set DATABASE_URL)"
        )
    return "embedded"


@contextlib.asynccontextmanager
async def open_backend(
    settings: Settings, *, conninfo: str | None = None
) -> AsyncIterator[Backend]:
    """Open the store of the selected backend; close it on exit.

    ``conninfo``: a Postgres the caller already holds (e.g. ``docagents up``
    started the embedded one); it is used unless Supabase is selected. Without
    it, the embedded Postgres is started here and held while inside.

    Raises :class:`ConfigurationError` for settings that cannot work (a refused
    Supabase key) and :class:`~manager.errors.StoreUnavailable` when the
    database cannot be reached at start; both carry a message without secrets.
    """
    kind = select_backend(settings)
    if kind == "supabase":
        async with _supabase(settings) as backend:
            yield backend
        return
    async with contextlib.AsyncExitStack() as stack:
        if conninfo is None:
            from manager.database import database_conninfo

            conninfo = await anyio.to_thread.run_sync(
                stack.enter_context, database_conninfo(settings)
            )
        yield await stack.enter_async_context(_postgres(settings, kind, conninfo))


@contextlib.asynccontextmanager
async def _postgres(settings: Settings, kind: BackendKind, conninfo: str) -> AsyncIterator[Backend]:
    from manager.events.listen import ActivityListener
    from manager.store.postgres import PostgresStore

    store = await PostgresStore.connect(conninfo)

    def activity_source(cursor: int) -> ActivitySource:
        return ActivityListener(
            conninfo, store, cursor=cursor, poll_interval_s=settings.poll_interval_s
        )

    try:
        yield Backend(
            kind=kind,
            store=store,
            writer=StoreWriter(store, flush_interval_s=settings.flush_interval_s),
            activity_source=activity_source,
            conninfo=conninfo,
            description=_describe(settings, kind),
        )
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()


def _describe(settings: Settings, kind: BackendKind) -> str:
    if kind == "embedded":
        return f"embedded Postgres in {settings.docagents_home}"
    return f"Postgres {settings.fingerprint()} (DATABASE_URL)"


@contextlib.asynccontextmanager
async def _supabase(settings: Settings) -> AsyncIterator[Backend]:
    from manager.events.realtime import RealtimeActivitySource
    from manager.store.supabase import SupabaseStore

    url, key = settings.supabase_url, settings.supabase_service_key
    assert url is not None and key is not None
    store = await SupabaseStore.connect(url, key)

    def activity_source(cursor: int) -> ActivitySource:
        return RealtimeActivitySource(
            url, key, store, cursor=cursor, poll_interval_s=settings.poll_interval_s
        )

    try:
        yield Backend(
            kind="supabase",
            store=store,
            writer=StoreWriter(store, flush_interval_s=settings.flush_interval_s),
            activity_source=activity_source,
            conninfo=None,
            description=f"supabase project {store.url}",
        )
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()

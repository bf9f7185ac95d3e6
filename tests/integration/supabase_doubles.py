"""A local Supabase for tests: PostgREST and Realtime on one port, data in a real Postgres.

One ASGI app under uvicorn (``SUPABASE_URL`` is one origin, so both live on
one port, as behind Supabase's gateway):

* ``/rest/v1/...``: the PostgREST requests the backends make, translated into
  SQL the way PostgREST does it (``json_to_record`` for rpc arguments,
  ``json_populate_recordset`` for inserts), so the real functions, constraints
  and defaults answer. Headers ``apikey`` and ``Authorization: Bearer KEY`` are
  checked (a wrong key gets the gateway's 401). Every request is recorded in
  ``requests``; a request outside the expected shapes is answered 400 and
  recorded in ``unexpected`` (tests assert it stays empty).
* ``/realtime/v1/websocket?apikey=KEY&vsn=1.0.0``: the Phoenix channel protocol
  of Supabase Realtime. ``phx_join`` on ``realtime:<name>`` with
  ``config.postgres_changes`` and ``access_token`` is answered with each
  binding echoed with an ``id``, then the ``system`` "Subscribed" message;
  ``heartbeat`` on ``phoenix`` is answered. Changes come from the real
  database: a LISTEN on the ``document_activity`` trigger's NOTIFY, then the
  row is read and sent as a ``postgres_changes`` frame, unless ``withhold(id)``
  says to drop it. ``drop_websockets()`` closes every socket mid-run.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import anyio
import psycopg
import uvicorn
from psycopg import sql

_RPC_FUNCTIONS = {
    "claim_document",
    "set_agent_status",
    "end_agent_life",
    "record_agent_metrics",
    "record_agent_metrics_once",
    "get_agent_system_stats",
    "get_manager_active_agents",
    "prune_history",
    "load_extraction_memory",
    "record_extractions",
    "prune_extraction_memory",
    "get_extraction_stats",
    "can_open_document",
    "acquire_manager_lease",
    "release_manager_lease",
    "drain_manager",
    "list_manager_leases",
    "sweep_expired_leases",
    "claimable_documents",
    "end_agent_life_at",
}
_SELECT_PARAMS = {"select", "id", "event_type", "order", "limit"}
_INSERT_COLUMNS = {"document_id", "event_type", "user_count", "timestamp", "metadata"}
_COLUMNS = [
    {"name": "id", "type": "int8"},
    {"name": "document_id", "type": "text"},
    {"name": "event_type", "type": "text"},
    {"name": "user_count", "type": "int4"},
    {"name": "timestamp", "type": "timestamptz"},
    {"name": "metadata", "type": "jsonb"},
]


@dataclass(eq=False)
class _Socket:
    send: Any
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: topic -> list of (binding id, binding)
    channels: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)

    async def push(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.send({"type": "websocket.send", "text": json.dumps(message)})


class SupabaseDouble:
    def __init__(self, database_url: str, key: str) -> None:
        self.database_url = database_url
        self.key = key
        self.url = ""
        self.requests: list[tuple[str, str, str]] = []
        self.unexpected: list[str] = []
        self.joins: list[dict[str, Any]] = []
        self.websocket_urls: list[str] = []
        self.heartbeats = 0
        self.sent_changes: list[int] = []
        self.withhold: Callable[[int], bool] = lambda _id: False
        self.reject_websockets = False
        self._sockets: set[_Socket] = set()
        self._binding_ids = iter(range(1000, 10**9))
        self.subscribed = anyio.Event()
        self._stream_scope = anyio.CancelScope()

    # -- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    # -- PostgREST ------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        query = scope["query_string"].decode()
        self.requests.append((method, path, query))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if (
            headers.get("apikey") != self.key
            or headers.get("authorization") != f"Bearer {self.key}"
        ):
            await _respond(
                send, 401, {"message": "Invalid API key", "hint": "Double check your key"}
            )
            return
        params = parse_qsl(query, keep_blank_values=True)
        try:
            if method == "GET" and path == "/rest/v1/document_activity":
                status, payload = await self._select(params)
            elif method == "POST" and path == "/rest/v1/document_activity":
                status, payload = await self._insert(
                    json.loads(body), headers.get("prefer", ""), dict(params)
                )
            elif method == "POST" and path.startswith("/rest/v1/rpc/") and not params:
                status, payload = await self._rpc(
                    path.removeprefix("/rest/v1/rpc/"), json.loads(body)
                )
            else:
                raise _Unexpected
        except _Unexpected:
            self.unexpected.append(f"{method} {path}?{query} {body[:200]!r}")
            await _respond(send, 400, {"message": "request not expected by the double"})
            return
        except psycopg.OperationalError:
            await _respond(send, 503, {"code": "PGRST001", "message": "Database client error"})
            return
        except psycopg.Error as exc:
            status = 409 if exc.sqlstate in ("23505", "23503") else 400
            detail = exc.diag.message_primary or str(exc)
            await _respond(
                send,
                status,
                {"code": exc.sqlstate, "message": detail, "details": None, "hint": None},
            )
            return
        await _respond(send, status, payload)

    async def _select(self, params: list[tuple[str, str]]) -> tuple[int, Any]:
        names = [name for name, _ in params]
        if (
            set(names) - _SELECT_PARAMS
            or len(set(names)) != len(names)
            or dict(params).get("select") != "*"
        ):
            raise _Unexpected
        args = dict(params)
        where: list[sql.Composable] = []
        values: list[Any] = []
        if "id" in args:
            op, _, value = args["id"].partition(".")
            if op != "gt":
                raise _Unexpected
            where.append(sql.SQL("id > %s"))
            values.append(int(value))
        if "event_type" in args:
            if args["event_type"] != "in.(active,idle)":
                raise _Unexpected
            where.append(sql.SQL("event_type IN ('active', 'idle')"))
        order = args.get("order", "id.asc")
        if order not in ("id.asc", "id.desc"):
            raise _Unexpected
        statement = sql.SQL(
            "SELECT coalesce(json_agg(t), '[]') FROM "
            "(SELECT * FROM document_activity {} ORDER BY id {} {}) t"
        ).format(
            sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
            sql.SQL("DESC" if order == "id.desc" else "ASC"),
            sql.SQL("LIMIT {}").format(sql.Literal(int(args["limit"])))
            if "limit" in args
            else sql.SQL(""),
        )
        return 200, await self._one(statement, values)

    async def _insert(self, body: Any, prefer: str, params: dict[str, str]) -> tuple[int, Any]:
        rows = body if isinstance(body, list) else [body]
        columns = sorted({key for row in rows for key in row})
        if not rows or set(columns) - _INSERT_COLUMNS or set(params) - {"columns"}:
            raise _Unexpected
        if "columns" in params:  # postgrest-py names the columns of a bulk insert
            named = sorted(c.strip('"') for c in params["columns"].split(","))
            if named != columns:
                raise _Unexpected
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        statement = sql.SQL(
            "WITH ins AS (INSERT INTO document_activity ({cols}) SELECT {cols} FROM "
            "json_populate_recordset(NULL::document_activity, %s::json) RETURNING *) "
            "SELECT coalesce(json_agg(ins), '[]') FROM ins"
        ).format(cols=cols)
        inserted = await self._one(statement, [json.dumps(rows)])
        return (201, inserted) if "return=representation" in prefer else (201, None)

    async def _rpc(self, function: str, args: dict[str, Any]) -> tuple[int, Any]:
        if function not in _RPC_FUNCTIONS or not isinstance(args, dict):
            raise _Unexpected
        async with _connection(self.database_url) as conn:
            cur = await conn.execute(
                "SELECT proargnames, string_to_array(oidvectortypes(proargtypes), ', '), proretset "
                "FROM pg_proc WHERE proname = %s AND pronamespace = 'public'::regnamespace",
                (function,),
            )
            overloads = await cur.fetchall()
            if not overloads:  # PostgREST: not in its schema cache (a database never migrated)
                return 404, {
                    "code": "PGRST202",
                    "message": f"Could not find the function public.{function} in the schema cache",
                    "details": None,
                    "hint": None,
                }
            if len(overloads) != 1:
                raise _Unexpected
            arg_names, arg_types, returns_set = overloads[0]
            types = dict(zip(arg_names or [], arg_types or [], strict=False))
            if set(args) - set(types):
                raise _Unexpected
            # what PostgREST does: the body as one json value, typed by json_to_record
            names = [n for n in (arg_names or []) if n in args]
            record = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(types[n])) for n in names
            )
            call = sql.SQL("{}({})").format(
                sql.Identifier(function),
                sql.SQL(", ").join(
                    sql.SQL("{} := a.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in names
                ),
            )
            source = (
                sql.SQL("json_to_record(%s::json) AS a({})").format(record)
                if names
                else sql.SQL("(SELECT 1) AS a")
            )
            if returns_set:
                statement = sql.SQL(
                    "SELECT coalesce(json_agg(r), '[]') FROM {} CROSS JOIN LATERAL {} r"
                ).format(source, call)
            else:
                statement = sql.SQL("SELECT to_json({}) FROM {}").format(call, source)
            await conn.execute("SET TIME ZONE 'UTC'")
            cur = await conn.execute(statement, [json.dumps(args)] if names else [])
            row = await cur.fetchone()
        return 200, None if row is None else row[0]

    async def _one(self, statement: sql.Composable, values: list[Any]) -> Any:
        async with _connection(self.database_url) as conn:
            await conn.execute("SET TIME ZONE 'UTC'")
            cur = await conn.execute(statement, values)
            row = await cur.fetchone()
        return None if row is None else row[0]

    # -- Realtime -------------------------------------------------------------------

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = dict(parse_qsl(scope["query_string"].decode()))
        self.websocket_urls.append(f"{scope['path']}?{scope['query_string'].decode()}")
        await receive()  # websocket.connect
        if self.reject_websockets:  # Realtime down behind a healthy gateway
            await send({"type": "websocket.http.response.start", "status": 503, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"unavailable"})
            return
        if (
            scope["path"] != "/realtime/v1/websocket"
            or query.get("apikey") != self.key
            or query.get("vsn") != "1.0.0"
        ):
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await send({"type": "websocket.accept"})
        sock = _Socket(send)
        self._sockets.add(sock)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await self._on_frame(sock, json.loads(message["text"]))
        finally:
            self._sockets.discard(sock)

    async def _on_frame(self, sock: _Socket, frame: dict[str, Any]) -> None:
        topic, event, ref = frame.get("topic"), frame.get("event"), frame.get("ref")
        payload = frame.get("payload") or {}
        reply = {
            "topic": topic,
            "event": "phx_reply",
            "ref": ref,
            "join_ref": frame.get("join_ref"),
        }
        if topic == "phoenix" and event == "heartbeat":
            self.heartbeats += 1
            await sock.push({**reply, "payload": {"status": "ok", "response": {}}})
        elif event == "phx_join" and isinstance(topic, str) and topic.startswith("realtime:"):
            self.joins.append(frame)
            bindings = (payload.get("config") or {}).get("postgres_changes") or []
            if payload.get("access_token") != self.key or not all(
                {"event", "schema", "table"} <= set(b) for b in bindings
            ):
                await sock.push(
                    {**reply, "payload": {"status": "error", "response": {"reason": "Invalid JWT"}}}
                )
                return
            echoed = [{**b, "id": next(self._binding_ids)} for b in bindings]
            sock.channels[topic] = [(b["id"], b) for b in echoed]
            await sock.push(
                {**reply, "payload": {"status": "ok", "response": {"postgres_changes": echoed}}}
            )
            await sock.push(
                {
                    "topic": topic,
                    "event": "system",
                    "ref": None,
                    "payload": {
                        "channel": topic.removeprefix("realtime:"),
                        "extension": "postgres_changes",
                        "message": "Subscribed to PostgreSQL",
                        "status": "ok",
                    },
                }
            )
            self.subscribed.set()
        elif event == "phx_leave":
            sock.channels.pop(topic, None)
            await sock.push({**reply, "payload": {"status": "ok", "response": {}}})
        elif event == "access_token":
            return
        else:
            self.unexpected.append(f"websocket frame {frame!r}")

    async def drop_websockets(self) -> None:
        """Close every realtime socket, as a gateway restart would."""
        # Reset first: a client may rejoin while we are still closing sockets.
        self.subscribed = anyio.Event()
        doomed = list(self._sockets)
        for sock in doomed:
            self._sockets.discard(sock)
            async with sock.lock:
                await sock.send({"type": "websocket.close", "code": 1011})

    async def _stream_changes(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with self._stream_scope:
            async with (
                _connection(self.database_url) as listen,
                _connection(self.database_url) as read,
            ):
                await listen.execute("LISTEN document_activity")
                await read.execute("SET TIME ZONE 'UTC'")
                task_status.started()
                async for notify in listen.notifies():
                    row_id = int(notify.payload)
                    cur = await read.execute(
                        "SELECT to_json(a) FROM document_activity a WHERE id = %s", (row_id,)
                    )
                    row = await cur.fetchone()
                    if row is None or self.withhold(row_id):
                        continue
                    await self._broadcast(row[0])

    async def _broadcast(self, record: dict[str, Any]) -> None:
        for sock in list(self._sockets):
            for topic, bindings in sock.channels.items():
                ids = [
                    binding_id
                    for binding_id, b in bindings
                    if b["event"] in ("INSERT", "*")
                    and b["schema"] == "public"
                    and b["table"] == "document_activity"
                ]
                if not ids:
                    continue
                self.sent_changes.append(record["id"])
                await sock.push(
                    {
                        "topic": topic,
                        "event": "postgres_changes",
                        "ref": None,
                        "payload": {
                            "ids": ids,
                            "data": {
                                "schema": "public",
                                "table": "document_activity",
                                "commit_timestamp": datetime.now(UTC)
                                .isoformat()
                                .replace("+00:00", "Z"),
                                "type": "INSERT",
                                "errors": None,
                                "columns": _COLUMNS,
                                "record": record,
                            },
                        },
                    }
                )

    # -- test helpers -------------------------------------------------------------------

    def select_requests(self) -> list[str]:
        return [q for m, p, q in self.requests if m == "GET" and p == "/rest/v1/document_activity"]

    def rpc_calls(self, function: str) -> int:
        return sum(
            1 for m, p, _ in self.requests if m == "POST" and p == f"/rest/v1/rpc/{function}"
        )


@asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection opened and closed even while the test cancels the double."""
    with anyio.CancelScope(shield=True):
        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        yield conn
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


class _Unexpected(Exception):
    pass


async def _respond(send: Any, status: int, payload: Any) -> None:
    # PostgREST answers a function's NULL with a JSON `null`; no body only for 201/204.
    body = b"" if payload is None and status != 200 else json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json; charset=utf-8")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve_supabase(
    database_url: str, key: str | None = None
) -> AsyncIterator[SupabaseDouble]:
    """Run the double on an ephemeral port of 127.0.0.1; ``double.url`` is ``SUPABASE_URL``."""
    double = SupabaseDouble(database_url, key or f"service-{uuid.uuid4().hex}")
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; with
    # proto 0 every response written in two parts waits out a delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        double, log_level="warning", lifespan="on", access_log=False, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    double.url = f"http://127.0.0.1:{port}"
    async with anyio.create_task_group() as tg:
        await tg.start(double._stream_changes)
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  (uvicorn exposes only a flag)
                await anyio.sleep(0.01)
        try:
            yield double
        finally:
            server.should_exit = True
            double._stream_scope.cancel()
    sock.close()

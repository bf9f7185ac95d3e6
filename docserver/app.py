"""The docserver's one ASGI app: y-websocket endpoints, the editor page, two JSON routes.

Websocket (any path): ``/parties/{PARTY_NAME}/{id}`` or ``/{id}`` (see
:mod:`docserver.paths`). A connection presenting ``X-Docagents-Agent-Token`` with
the right token is an agent and is never counted; a wrong token is refused (4401)
rather than counted as a human, so a misconfigured agent cannot keep a document
active forever. Refusals accept the socket and then close it with a code and a
reason, which a browser can read (rejecting the handshake would only give it
an HTTP error).

HTTP: ``/`` and ``/doc/{id}`` -> the editor's ``index.html``; ``/static/*`` -> the
built bundle; ``GET /api/config`` -> ``{"partyName", "fragment"}``;
``GET /api/documents`` -> ``{"documents": [{document_id, last_event, timestamp,
user_count}]}``; ``GET /healthz``.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from docserver.activity import ActivitySink, ActivityUnavailable
from docserver.connection import Connection
from docserver.paths import Refusal, parse_document_path
from docserver.ratelimit import TokenBucket
from docserver.rooms import DocumentRooms
from docserver.settings import DocserverSettings

__all__ = ["AGENT_TOKEN_HEADER", "DocserverApp", "Presence"]

log = structlog.get_logger(__name__)

#: Same header name as ``worker.config.AGENT_TOKEN_HEADER`` (docserver imports no worker code).
AGENT_TOKEN_HEADER = "X-Docagents-Agent-Token"  # noqa: S105 (a header name)
_TOKEN_HEADER_KEY = AGENT_TOKEN_HEADER.lower().encode()
BAD_CREDENTIAL_CLOSE_CODE = 4401
STATIC_DIR = Path(__file__).resolve().parent / "static"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Presence(Protocol):
    def human_joined(self, document_id: str) -> None: ...
    def human_left(self, document_id: str) -> None: ...
    def human_edited(self, document_id: str) -> None: ...
    def agent_joined(self, document_id: str) -> None: ...
    def agent_left(self, document_id: str) -> None: ...


class DocserverApp:
    def __init__(
        self,
        settings: DocserverSettings,
        *,
        activity: ActivitySink,
        rooms: DocumentRooms,
        presence: Presence,
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self._settings = settings
        self._activity = activity
        self._rooms = rooms
        self._presence = presence
        self._static_dir = static_dir.resolve()
        token = settings.docserver_agent_token
        self._agent_token = token.get_secret_value().encode() if token else None
        self.connections = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, send)

    # ------------------------------------------------------------------ websocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = parse_document_path(raw_path, party_name=self._settings.party_name)
        if isinstance(target, Refusal):
            log.warning("connection_refused", code=target.code, reason=target.reason)
            await _accept_and_close(send, target)
            return
        document_id = target
        role = self._role(scope)
        if role is None:
            log.warning("connection_refused", document_id=document_id, reason="bad agent token")
            await _accept_and_close(
                send, Refusal(BAD_CREDENTIAL_CLOSE_CODE, "invalid agent credential")
            )
            return
        await send({"type": "websocket.accept"})
        connection = Connection(
            receive,
            send,
            document_id=document_id,
            role=role,
            bucket=TokenBucket(
                rate=self._settings.docserver_max_messages_per_s,
                burst=self._settings.docserver_message_burst,
                now=anyio.current_time(),
            ),
        )
        await self._serve(connection)

    async def _serve(self, connection: Connection) -> None:
        document_id = connection.document_id
        human = connection.role == "human"
        room = await self._rooms.acquire(document_id)
        self.connections += 1
        if human:
            self._presence.human_joined(document_id)
            connection.on_update = lambda: self._presence.human_edited(document_id)
        else:
            self._presence.agent_joined(document_id)
        log.info("client_connected", document_id=document_id, role=connection.role)
        room.join(connection)
        try:
            presence = room.awareness_message()
            if presence is not None:
                await connection.send(presence)
            await room.serve(connection)
        finally:
            self.connections -= 1
            if human:
                self._presence.human_left(document_id)
            else:
                self._presence.agent_left(document_id)
            room.leave(connection)
            self._rooms.release(room)
            log.info(
                "client_disconnected",
                document_id=document_id,
                role=connection.role,
                close_code=connection.close_code,
            )

    def _role(self, scope: Scope) -> str | None:
        """'agent', 'human', or None for a wrong or unexpected agent token."""
        presented = [value for key, value in scope.get("headers", []) if key == _TOKEN_HEADER_KEY]
        if not presented:
            return "human"
        if self._agent_token is None or len(presented) != 1:
            return None
        return "agent" if hmac.compare_digest(presented[0], self._agent_token) else None

    # ------------------------------------------------------------------ http

    async def _http(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        path: str = scope["path"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, "text/plain", b"method not allowed", method=method)
            return
        if path == "/api/config":
            settings = self._settings
            body = {"partyName": settings.party_name, "fragment": settings.ydoc_fragment}
            await _respond(send, 200, "application/json", json.dumps(body).encode(), method=method)
        elif path == "/api/documents":
            await self._documents(send, method)
        elif path == "/healthz":
            body = {"status": "ok", "rooms": len(self._rooms), "connections": self.connections}
            await _respond(send, 200, "application/json", json.dumps(body).encode(), method=method)
        elif path == "/" or (path.startswith("/doc/") and len(path) > len("/doc/")):
            await self._file(send, self._static_dir / "index.html", method, cache=False)
        elif path.startswith("/static/"):
            target = (self._static_dir / path.removeprefix("/static/")).resolve()
            if target.is_file() and self._static_dir in target.parents:
                await self._file(send, target, method, cache="/assets/" in path)
            else:
                await _respond(send, 404, "text/plain", b"not found", method=method)
        else:
            await _respond(send, 404, "text/plain", b"not found", method=method)

    async def _documents(self, send: Send, method: str) -> None:
        try:
            documents = await self._activity.recent_documents()
        except ActivityUnavailable as exc:
            log.warning("documents_list_failed", error=str(exc) or type(exc).__name__)
            body = json.dumps({"error": "database unavailable"}).encode()
            await _respond(send, 503, "application/json", body, method=method)
            return
        body = json.dumps({"documents": documents}).encode()
        await _respond(send, 200, "application/json", body, method=method)

    async def _file(self, send: Send, target: Path, method: str, *, cache: bool) -> None:
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        body = await anyio.Path(target).read_bytes()
        control = "public, max-age=31536000, immutable" if cache else "no-cache"
        await _respond(send, 200, kind, body, method=method, cache_control=control)


async def _accept_and_close(send: Send, refusal: Refusal) -> None:
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": refusal.code, "reason": refusal.reason})


async def _respond(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    *,
    method: str,
    cache_control: str = "no-store",
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", cache_control.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

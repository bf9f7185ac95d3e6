"""The docserver's one ASGI app: y-websocket endpoints, the editor page, two JSON routes.

Websocket (any path): ``/parties/{PARTY_NAME}/{id}`` or ``/{id}`` (see
:mod:`docserver.paths`). A connection presenting ``X-Docagents-Agent-Token`` with
the right token is an agent and is never counted; a wrong token is refused (4401)
rather than counted as a human, so a misconfigured agent cannot keep a document
active forever. Every other connection passes the :class:`Gatekeeper` (Origin,
authentication, per-document access). Refusals accept the socket and then close
it with a code and a reason, which a browser can read (rejecting the handshake
would only give it an HTTP error). Close codes: 4400 bad document id, 4404
unknown path, 4401 not authenticated, 4403 not allowed (document or Origin),
4409 an agent-life credential already connected, 4413 too large (awareness
state, document at its cap), 1007 malformed message, 1009 message over
DOCSERVER_MAX_MESSAGE_BYTES (uvicorn).

HTTP: ``/`` and ``/doc/{id}`` -> the editor's ``index.html``; ``/static/*`` -> the
built bundle; ``GET /api/config`` -> ``{"partyName", "fragment", "auth"}``;
``GET /api/documents`` -> ``{"documents": [{document_id, last_event, timestamp,
user_count}]}``, only those the caller may open (401 without valid credentials
when authentication is on); ``GET /healthz`` (503 while the document store
cannot write).
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

from docserver.activity import ActivitySink
from docserver.agent_credentials import looks_like_credential, verify_agent_credential
from docserver.auth import request_from_scope
from docserver.connection import Connection
from docserver.errors import ActivityUnavailable, CredentialRefused
from docserver.fencing import FENCED_CLOSE_CODE, Fences
from docserver.gatekeeper import Admission, Gatekeeper
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
CREDENTIAL_IN_USE_CLOSE_CODE = 4409
STATIC_DIR = Path(__file__).resolve().parent / "static"
_SHOWN_DOCUMENTS = 50

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Presence(Protocol):
    """Where the app reports who connects and edits (:class:`docserver.service.PresenceService`)."""

    def human_joined(self, document_id: str) -> None: ...
    def human_left(self, document_id: str) -> None: ...
    def human_edited(self, document_id: str) -> None: ...
    def agent_joined(self, document_id: str) -> None: ...
    def agent_left(self, document_id: str) -> None: ...


class StoreHealth(Protocol):
    """What ``/healthz`` reads of the document store."""

    @property
    def failure(self) -> str | None: ...


class DocserverApp:
    def __init__(
        self,
        settings: DocserverSettings,
        *,
        activity: ActivitySink,
        rooms: DocumentRooms,
        presence: Presence,
        gatekeeper: Gatekeeper,
        store: StoreHealth | None = None,
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self._settings = settings
        self._activity = activity
        self._rooms = rooms
        self._presence = presence
        self._gatekeeper = gatekeeper
        self._store = store
        self._static_dir = static_dir.resolve()
        token = settings.docserver_agent_token
        self._agent_token = token.get_secret_value().encode() if token else None
        #: credential ids of agent lives connected now (each serves one connection)
        self._lives_connected: set[str] = set()
        self._credential_ids: dict[int, str] = {}
        #: the highest fencing token per document, and the fenced agents connected
        self._fences = Fences()
        self._fence_of_scope: dict[int, int] = {}
        self._fenced_agents: dict[str, dict[Connection, int]] = {}
        #: agents retired by a successor with a higher token (for tests and ops)
        self.fenced = 0
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
        role = self._role(scope, document_id)
        if isinstance(role, Refusal):
            log.warning("connection_refused", document_id=document_id, reason=role.reason)
            await _accept_and_close(send, role)
            return
        credential_id = self._credential_ids.pop(id(scope), None)
        fence = self._fence_of_scope.pop(id(scope), None)
        try:
            await self._open(scope, receive, send, document_id, role, fence)
        finally:
            if credential_id is not None:
                self._lives_connected.discard(credential_id)

    async def _open(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        document_id: str,
        role: str,
        fence: int | None = None,
    ) -> None:
        admission: Admission | None = None
        if role == "human":
            decision = await self._gatekeeper.admit_websocket(scope, document_id)
            if isinstance(decision, Refusal):
                subprotocol = request_from_scope(scope).subprotocol
                await _accept_and_close(send, decision, subprotocol=subprotocol)
                return
            admission = decision
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if admission is not None and admission.subprotocol is not None:
            accept["subprotocol"] = admission.subprotocol
        await send(accept)
        settings = self._settings
        connection = Connection(
            receive,
            send,
            document_id=document_id,
            role=role,
            bucket=TokenBucket(
                rate=settings.docserver_max_messages_per_s,
                burst=settings.docserver_message_burst,
                now=anyio.current_time(),
            ),
            byte_bucket=TokenBucket(
                rate=settings.docserver_max_bytes_per_s,
                burst=settings.docserver_byte_burst,
                now=anyio.current_time(),
            ),
            read_only=admission is not None and admission.access == "read-only",
            max_awareness_bytes=settings.docserver_max_awareness_bytes,
            subject=admission.principal.subject if admission is not None else None,
        )
        connection.fence = fence
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
        log.info(
            "client_connected",
            document_id=document_id,
            role=connection.role,
            subject=connection.subject,
            read_only=connection.read_only,
        )
        room.join(connection)
        try:
            if connection.fence is not None:
                self._fenced_agents.setdefault(document_id, {})[connection] = connection.fence
                connection.on_first_visible = lambda: self._retire_fenced(connection)
            awareness = room.awareness_message()
            if awareness is not None:
                await connection.send(awareness)
            await room.serve(connection)
        finally:
            if connection.fence is not None:
                agents = self._fenced_agents.get(document_id, {})
                agents.pop(connection, None)
                if not agents:
                    self._fenced_agents.pop(document_id, None)
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

    async def _retire_fenced(self, connection: Connection) -> None:
        """A newer agent life showed itself (its first awareness update was relayed) or
        is about to write (its first document update): close every agent of the
        document below it.

        Not at connect: until then the newcomer has written nothing, so the old agent
        may go on meanwhile and still at most one agent writes at any instant; and
        people see the new agent arrive before the old one leaves (make-before-break).
        A newcomer already below a newer one's token leaves its own retirement to that
        one.
        """
        assert connection.fence is not None
        document_id = connection.document_id
        agents = self._fenced_agents.get(document_id, {})
        for old in self._fences.retired(document_id, dict(agents)):
            assert isinstance(old, Connection)
            if old is connection:
                continue
            agents.pop(old, None)
            self.fenced += 1
            log.warning(
                "agent_fenced",
                document_id=document_id,
                fence=old.fence,
                successor_fence=connection.fence,
            )
            await old.close(FENCED_CLOSE_CODE, "fenced: a newer agent took this document over")

    def _role(self, scope: Scope, document_id: str) -> str | Refusal:
        """'agent' or 'human', or a Refusal for a wrong, misused or unexpected agent token.

        An agent presents the master token, or a credential of one agent life for this
        document (:mod:`docserver.agent_credentials`), which serves one connection at a time.
        """
        presented = [value for key, value in scope.get("headers", []) if key == _TOKEN_HEADER_KEY]
        if not presented:
            return "human"
        refused = Refusal(BAD_CREDENTIAL_CLOSE_CODE, "invalid agent credential")
        if self._agent_token is None or len(presented) != 1:
            return refused
        if hmac.compare_digest(presented[0], self._agent_token):
            return "agent"
        value = presented[0].decode("latin-1")
        if not looks_like_credential(value):
            return refused
        try:
            credential = verify_agent_credential(
                self._agent_token.decode(), value, document_id=document_id
            )
        except CredentialRefused as exc:
            return Refusal(BAD_CREDENTIAL_CLOSE_CODE, str(exc))
        if credential.credential_id in self._lives_connected:
            return Refusal(CREDENTIAL_IN_USE_CLOSE_CODE, "agent credential already in use")
        if credential.fence is not None:
            if not self._fences.admit(document_id, credential.fence):
                log.warning(
                    "agent_fenced_at_connect",
                    document_id=document_id,
                    agent_id=credential.agent_id,
                    fence=credential.fence,
                    highest=self._fences.highest(document_id),
                )
                return Refusal(FENCED_CLOSE_CODE, "fenced: a newer agent holds this document")
            self._fence_of_scope[id(scope)] = credential.fence
        self._lives_connected.add(credential.credential_id)
        self._credential_ids[id(scope)] = credential.credential_id
        log.info("agent_life_connected", document_id=document_id, agent_id=credential.agent_id)
        return "agent"

    # ------------------------------------------------------------------ http

    async def _http(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        path: str = scope["path"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, "text/plain", b"method not allowed", method=method)
            return
        if path == "/api/config":
            settings = self._settings
            body = {
                "partyName": settings.party_name,
                "fragment": settings.ydoc_fragment,
                "auth": self._gatekeeper.mode,
            }
            await _respond(send, 200, "application/json", json.dumps(body).encode(), method=method)
        elif path == "/api/documents":
            await self._documents(scope, send, method)
        elif path == "/healthz":
            failure = self._store.failure if self._store is not None else None
            health: dict[str, Any] = {
                "status": "ok" if failure is None else "failing",
                "rooms": len(self._rooms),
                "connections": self.connections,
            }
            if failure is not None:
                health["reason"] = failure
            body = json.dumps(health).encode()
            status = 200 if failure is None else 503
            await _respond(send, status, "application/json", body, method=method)
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

    async def _documents(self, scope: Scope, send: Send, method: str) -> None:
        principal = await self._gatekeeper.authenticate(request_from_scope(scope))
        if isinstance(principal, Refusal):
            body = json.dumps({"error": principal.reason}).encode()
            await _respond(send, 401, "application/json", body, method=method)
            return
        try:
            # filtering may hide many: read more than are shown
            documents = await self._activity.recent_documents(
                limit=_SHOWN_DOCUMENTS if self._gatekeeper.mode == "none" else 10 * _SHOWN_DOCUMENTS
            )
        except ActivityUnavailable as exc:
            log.warning("documents_list_failed", error=str(exc) or type(exc).__name__)
            body = json.dumps({"error": "database unavailable"}).encode()
            await _respond(send, 503, "application/json", body, method=method)
            return
        ids = [str(d["document_id"]) for d in documents]
        visible = await self._gatekeeper.visible(principal, ids)
        documents = [d for d in documents if d["document_id"] in visible][:_SHOWN_DOCUMENTS]
        body = json.dumps({"documents": documents}).encode()
        await _respond(send, 200, "application/json", body, method=method)

    async def _file(self, send: Send, target: Path, method: str, *, cache: bool) -> None:
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        body = await anyio.Path(target).read_bytes()
        control = "public, max-age=31536000, immutable" if cache else "no-cache"
        await _respond(send, 200, kind, body, method=method, cache_control=control)


async def _accept_and_close(
    send: Send, refusal: Refusal, *, subprotocol: str | None = None
) -> None:
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if subprotocol is not None:  # else a browser that offered one fails without the code
        accept["subprotocol"] = subprotocol
    await send(accept)
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

"""Throwaway stand-in for the docserver, to try the editor page without it.

Serves docserver/static under /static/, index.html at / and /doc/{id},
/api/config, /api/documents, and a pycrdt-websocket y-websocket endpoint at
/parties/{party}/{id}. No database, no persistence, no presence counting.

    python docserver/editor/dev/harness.py --port 8799
"""

from __future__ import annotations

import argparse
import json
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer

STATIC = Path(__file__).resolve().parents[2] / "static"

Scope = dict[str, Any]


class Harness:
    def __init__(self, party: str = "document", fragment: str = "prosemirror") -> None:
        self.party = party
        self.fragment = fragment
        self.websocket_server = WebsocketServer(auto_clean_rooms=False)
        self.websocket_app = ASGIServer(self.websocket_server)
        self.opened: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            prefix = f"/parties/{self.party}/"
            if "refused" in scope["path"]:
                # what the real docserver does with an invalid id: accept, then close
                # with a code and a reason the page can show
                await receive()
                await send({"type": "websocket.accept"})
                await send(
                    {"type": "websocket.close", "code": 4400, "reason": "invalid document id"}
                )
                return
            if scope["path"].startswith(prefix):
                self.opened[scope["path"][len(prefix) :]] = datetime.now(UTC).isoformat()
            await self.websocket_app(scope, receive, send)
        else:
            await self._http(scope, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.websocket_server.__aenter__()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.websocket_server.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Any) -> None:
        path: str = scope["path"]
        if path == "/api/config":
            await _respond(send, 200, "application/json", self._config())
        elif path == "/api/documents":
            await _respond(send, 200, "application/json", self._documents())
        elif path == "/" or path.startswith("/doc/"):
            await _respond(send, 200, "text/html", (STATIC / "index.html").read_bytes())
        elif path.startswith("/static/"):
            target = (STATIC / path[len("/static/") :]).resolve()
            if target.is_file() and STATIC in target.parents:
                kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                await _respond(send, 200, kind, target.read_bytes())
            else:
                await _respond(send, 404, "text/plain", b"not found")
        else:
            await _respond(send, 404, "text/plain", b"not found")

    def _config(self) -> bytes:
        return json.dumps({"partyName": self.party, "fragment": self.fragment}).encode()

    def _documents(self) -> bytes:
        rows = [
            {"document_id": doc_id, "last_event": "active", "timestamp": ts, "user_count": 1}
            for doc_id, ts in sorted(self.opened.items(), key=lambda item: item[1], reverse=True)
        ]
        return json.dumps({"documents": rows}).encode()


async def _respond(send: Any, status: int, content_type: str, body: bytes) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    uvicorn.run(Harness(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

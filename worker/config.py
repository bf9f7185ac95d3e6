"""Settings a worker needs, and nothing more (invariant 6: no database credentials).

Standalone (``docagents worker DOCUMENT_ID``) they come from the environment and a
``.env`` file; under the manager, the manager builds a :class:`WorkerSettings` from
its own settings and hands it to the child, so the child never reads the
environment for them.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AGENT_TOKEN_HEADER", "WorkerSettings"]

#: HTTP header carrying ``DOCSERVER_AGENT_TOKEN`` on the websocket handshake. Our
#: docserver does not count such connections as users; other y-websocket servers
#: ignore the header.
AGENT_TOKEN_HEADER = "X-Docagents-Agent-Token"  # noqa: S105 (a header name)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    ws_port: int = Field(default=8787, ge=1, le=65535)
    party_name: str = "document"
    doc_ws_url: str = "ws://127.0.0.1:{WS_PORT}/parties/{PARTY_NAME}/{document_id}"
    ydoc_fragment: str = "prosemirror"
    docserver_agent_token: SecretStr | None = None

    extractor: Literal["auto", "gazetteer", "llm"] = "auto"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=20.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0)
    llm_max_calls_per_minute: int = Field(default=20, ge=1)
    #: One request holds at most this many sentences and characters of sentence text.
    llm_batch_max_sentences: int = Field(default=20, ge=1)
    llm_batch_max_chars: int = Field(default=4_000, ge=100)
    #: How long a new life waits for the manager's hand-over of the document's
    #: extraction memory before extracting (0: no hand-over, standalone).
    memory_wait_s: float = Field(default=0.0, ge=0)

    #: Only for third-party y-websocket servers that write no activity rows: leave a
    #: document (report ``abandoned``) after nobody with a non-empty awareness state
    #: has been seen for this long. 0 (the default) turns it off: with our
    #: docserver, presence is the docserver's alone (it counts connections).
    abandon_after_ms: int = Field(default=0, ge=0)
    metrics_interval_s: float = Field(default=30.0, gt=0)
    sentence_debounce_ms: int = Field(default=300, ge=0)
    #: After a change that typed a sentence terminator: extract this soon (the
    #: ordinary debounce still coalesces other keystrokes). Negative: no shortcut.
    sentence_end_debounce_ms: int = Field(default=0)
    sentence_max_wait_ms: int = Field(default=2_000, ge=0)

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    def document_url(self, document_id: str) -> str:
        """The websocket URL of one document (the id is URL-encoded)."""
        return (
            self.doc_ws_url.replace("{WS_PORT}", str(self.ws_port))
            .replace("{PARTY_NAME}", quote(self.party_name, safe=""))
            .replace("{document_id}", quote(document_id, safe=""))
        )

    def resolved_extractor(self) -> Literal["gazetteer", "llm"]:
        """``auto`` means ``llm`` when an API key is set, else ``gazetteer``."""
        if self.extractor == "auto":
            return "llm" if self.openai_api_key is not None else "gazetteer"
        return self.extractor

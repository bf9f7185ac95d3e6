"""Docserver settings: environment variables and a ``.env`` file in the working directory.

Names shared with the rest of docagents (DESIGN.md, "Configuration"): ``WS_PORT``,
``PARTY_NAME``, ``IDLE_TIMEOUT_MS``, ``YDOC_FRAGMENT``, ``DOCSERVER_AGENT_TOKEN``,
``DOCAGENTS_HOME``, ``LOG_FORMAT``, ``LOG_LEVEL``; ``SUPABASE_JWT_SECRET`` is read
for ``DOCSERVER_AUTH=jwt``. The database is not a setting
here: the caller (``docagents docserver``) resolves it and passes it explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DocserverSettings"]


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("docagents", appauthor=False))


class DocserverSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    ws_port: int = Field(default=8787, ge=0, le=65535)
    docserver_host: str = "127.0.0.1"
    party_name: str = Field(default="document", min_length=1, pattern=r"^[^/\s]+$")
    ydoc_fragment: str = Field(default="prosemirror", min_length=1)
    #: Connections presenting this token (header ``X-Docagents-Agent-Token``) are agents.
    docserver_agent_token: SecretStr | None = None
    #: Grace after the last human leaves before 'idle' is written.
    idle_timeout_ms: int = Field(default=30_000, ge=0)
    #: Also write 'user_joined' / 'user_left' rows.
    docserver_record_joins: bool = False
    #: People editing a document with no agent connected: at most one 'active' row
    #: (metadata reason 'edit') this often, so the manager serves it first.
    docserver_edit_activity_interval_s: float = Field(default=10.0, gt=0)
    #: Activity rows kept in memory while the database is unreachable.
    docserver_activity_buffer: int = Field(default=10_000, ge=10)
    #: Per-connection message rate (sustained, and burst) before reads are slowed down.
    docserver_max_messages_per_s: float = Field(default=200.0, gt=0)
    docserver_message_burst: int = Field(default=2_000, ge=1)
    #: A document nobody has open is unloaded from memory after this long.
    docserver_room_unload_after_s: float = Field(default=60.0, ge=0)
    #: Keepalive pings on every websocket; a peer that stops answering is dropped.
    docserver_ping_interval_s: float = Field(default=20.0, gt=0)
    docserver_ping_timeout_s: float = Field(default=20.0, gt=0)
    docagents_home: Path = Field(default_factory=_default_home)

    # --- who may open what (docserver/auth.py) ---
    #: ``none`` (loopback only), ``jwt``, or a ``module:function`` hook.
    docserver_auth: str = Field(default="none", min_length=1)
    #: ``claims``, ``sql`` (``can_open_document``), or a ``module:function`` hook.
    docserver_authz: str = Field(default="claims", min_length=1)
    docserver_jwt_secret: SecretStr | None = None
    #: Supabase Auth's HS256 secret; used when DOCSERVER_JWT_SECRET is unset.
    supabase_jwt_secret: SecretStr | None = None
    docserver_jwks_url: str | None = None
    #: Comma-separated; default HS256 with a secret, RS256,ES256 with a JWKS URL.
    docserver_jwt_algorithms: str | None = None
    docserver_jwt_audience: str | None = None
    docserver_jwt_issuer: str | None = None
    #: Comma-separated Origins allowed to open websockets; empty: same origin (and
    #: clients sending no Origin, i.e. not browsers); ``*``: any.
    docserver_allowed_origins: str = ""
    #: Start with DOCSERVER_AUTH=none on a non-loopback address anyway.
    docserver_allow_unauthenticated: bool = False

    # --- what one client may cost (README: "Bounds") ---
    docserver_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    docserver_max_bytes_per_s: float = Field(default=1024 * 1024, gt=0)
    docserver_byte_burst: int = Field(default=16 * 1024 * 1024, ge=1024)
    docserver_max_document_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    docserver_max_awareness_bytes: int = Field(default=16 * 1024, ge=256)
    docserver_max_request_line_bytes: int = Field(default=8000, ge=256, le=8000)
    docserver_handshake_timeout_s: float = Field(default=10.0, gt=0)
    docserver_max_connections_per_address: int = Field(default=64, ge=0)
    #: Networks not counted by the limit above (the manager's agents, a local proxy).
    docserver_connection_limit_exempt: str = "127.0.0.0/8,::1"

    @field_validator("docserver_connection_limit_exempt")
    @classmethod
    def _networks(cls, value: str) -> str:
        from docserver.listener import parse_networks

        parse_networks(value)  # ValueError: a clear configuration error
        return value

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    @field_validator(
        "docserver_agent_token",
        "docserver_jwt_secret",
        "supabase_jwt_secret",
        "docserver_jwks_url",
        "docserver_jwt_algorithms",
        "docserver_jwt_audience",
        "docserver_jwt_issuer",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def grace_s(self) -> float:
        return self.idle_timeout_ms / 1000

    @property
    def store_path(self) -> Path:
        """The SQLite file holding every document's Y.js updates."""
        return self.docagents_home / "docserver" / "documents.sqlite3"

    @property
    def jwt_secret(self) -> SecretStr | None:
        return self.docserver_jwt_secret or self.supabase_jwt_secret

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/") for o in self.docserver_allowed_origins.split(",") if o.strip()
        )

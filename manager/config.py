"""Manager settings: environment variables and a ``.env`` file in the working directory.

Names are part of the contract (DESIGN.md, "Configuration"). The manager's settings
extend the worker's (a worker gets :meth:`Settings.worker_settings`, which holds no
database credentials: invariant 6). Secrets are ``SecretStr`` and never logged.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from worker.config import WorkerSettings

__all__ = ["Settings", "default_home", "default_manager_id"]


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("docagents", appauthor=False))


def default_manager_id() -> str:
    """Stable across restarts of the same host (crash recovery depends on it).

    Two managers on one host sharing one database need distinct ``MANAGER_ID``s.
    """
    return socket.gethostname()


class Settings(WorkerSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- where the data lives -------------------------------------------------
    database_url: SecretStr | None = None
    supabase_url: str | None = None
    supabase_service_key: SecretStr | None = None
    docagents_home: Path = Field(default_factory=default_home)

    # --- manager ----------------------------------------------------------------
    manager_id: str = Field(default_factory=default_manager_id, min_length=1, max_length=200)
    max_concurrent_agents: int = Field(default=10, ge=1)
    min_residency_s: float = Field(default=10.0, ge=0)
    ping_interval_s: float = Field(default=30.0, gt=0)
    ping_timeout_s: float = Field(default=5.0, gt=0)
    detach_grace_s: float = Field(default=5.0, ge=0)
    shutdown_timeout_s: float = Field(default=8.0, gt=0)
    poll_interval_s: float = Field(default=5.0, gt=0)
    flush_interval_s: float = Field(default=1.0, gt=0)
    stats_interval_s: float = Field(default=60.0, gt=0)
    #: Restart backoff after a crash: doubles from min to max; reset once a worker
    #: stayed up ``restart_stable_s``.
    restart_backoff_min_s: float = Field(default=1.0, ge=0)
    restart_backoff_max_s: float = Field(default=60.0, ge=0)
    restart_stable_s: float = Field(default=60.0, ge=0)
    #: More than this many crashes of one document within ``crash_loop_window_s``
    #: -> status 'error', no restart until its next 'active' event.
    crash_loop_restarts: int = Field(default=5, ge=0)
    crash_loop_window_s: float = Field(default=300.0, gt=0)
    #: Workers started and booted ahead of need; a newly active document gets one
    #: over its pipe (fork and boot off the attach path). 0 disables the pool.
    warm_pool_size: int = Field(default=4, ge=0)
    #: Retry delay for a wanted document that another manager owns (or whose worker was
    #: fenced), and the longest wait between retries of a claim whose answer was lost.
    claim_retry_s: float = Field(default=15.0, gt=0)
    #: The fleet: every manager process holds a lease, renewed every ``lease_renew_s``,
    #: valid ``lease_ttl_s`` (by the database's clock); a dead manager's documents go
    #: to the others once its lease expired.
    lease_renew_s: float = Field(default=2.0, gt=0)
    lease_ttl_s: float = Field(default=10.0, gt=0)
    #: A drain (SIGUSR2, `docagents drain`, SIGTERM beside other managers) hands its
    #: agents over make-before-break for at most this long, then detaches what is
    #: left. With SHUTDOWN_TIMEOUT_S it stays below systemd's TimeoutStopSec=30.
    drain_timeout_s: float = Field(default=15.0, gt=0)
    #: After SIGTERM, how long a detaching worker gets before SIGKILL.
    kill_grace_s: float = Field(default=2.0, ge=0)
    #: Prometheus ``/metrics`` and ``/healthz`` (off unless set); bound on ``metrics_host``.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    #: Delete ``agent_metrics`` / ``document_activity`` rows older than this (off unless set),
    #: every ``retention_interval_s``; a document's latest event is always kept.
    retention_days: float | None = Field(default=None, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    #: Extraction memory (LLM extractor): hand each life what the model already said
    #: about its document, and store what it says now. Rows of sentences not seen for
    #: ``extraction_memory_retention_days`` go; a document keeps at most
    #: ``extraction_memory_cap`` of them.
    extraction_memory: bool = True
    extraction_memory_cap: int = Field(default=20_000, ge=100)
    extraction_memory_retention_days: float = Field(default=30.0, gt=0)

    # --- docserver ----------------------------------------------------------------
    docserver_host: str = "127.0.0.1"
    #: Lifetime of the credential each agent life gets instead of DOCSERVER_AGENT_TOKEN.
    agent_credential_ttl_s: float = Field(default=86_400.0, gt=0)

    @field_validator(
        "database_url", "supabase_service_key", "metrics_port", "retention_days", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _lease_ttl_above_renewal(self) -> Settings:
        if self.lease_ttl_s <= self.lease_renew_s:
            raise ValueError("LEASE_TTL_S must be greater than LEASE_RENEW_S")
        return self

    def worker_settings(self) -> WorkerSettings:
        """The subset a worker may see: no database or Supabase credentials.

        A managed worker gets a credential for its life instead of the agent token
        (:mod:`manager.supervise.lives`)."""
        fields = {name: getattr(self, name) for name in WorkerSettings.model_fields}
        if self.remembers_extractions() and not fields["memory_wait_s"]:
            fields["memory_wait_s"] = 10.0  # the manager hands the memory over
        return WorkerSettings.model_construct(**fields)

    def remembers_extractions(self) -> bool:
        """Whether lives get (and report) an extraction memory: the LLM extractor."""
        return self.extraction_memory and self.resolved_extractor() == "llm"

    def fingerprint(self) -> str:
        """A short, non-secret id of the configured database (for logs)."""
        url = self.database_url
        raw = url.get_secret_value() if url else str(self.docagents_home)
        return hashlib.sha256(raw.encode()).hexdigest()[:8]

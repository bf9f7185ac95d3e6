"""Every exception the docserver raises on purpose, as one tree.

::

    DocserverError                      anything the docserver raises on purpose
    ├── DocserverConfigError            the settings cannot work (the CLI exits 78)
    │   └── AuthConfigError             DOCSERVER_AUTH / DOCSERVER_AUTHZ cannot work
    ├── ListenFailed                    the HTTP/websocket port cannot be bound
    ├── DocumentStoreError              the SQLite file holding the documents
    │   ├── DocumentStoreOpenFailed     it cannot be opened (at start-up)
    │   └── DocumentStoreWriteFailed    an update was not committed (it cannot write now)
    ├── ActivityError                   document_activity: retrying cannot help
    │   ├── ActivityUnavailable         the database or API is unreachable now (retried)
    │   └── ActivityKeyRefused          Supabase refused SUPABASE_SERVICE_KEY
    ├── ClientRefused                   one client is refused; str() is the reason it is told
    │   ├── AuthFailed                  not authenticated (close code 4401)
    │   └── CredentialRefused           an agent credential not valid here (close code 4401)
    └── MalformedMessage                bytes that are not a well-formed y-websocket message

Foreign exceptions are translated where the docserver meets the library, with
``raise ... from``: psycopg and httpx/PostgREST in :mod:`docserver.activity`,
sqlite3 and OSError in :mod:`docserver.store`, PyJWT in :mod:`docserver.auth`
and :mod:`docserver.agent_credentials`, uvicorn's exit and OSError in
:mod:`docserver.service`. Two boundaries answer instead of raising: a websocket
peer that vanished just closes its connection, and an access check whose
database cannot answer denies (:mod:`docserver.access_sql`, fail closed). A
caller's programming mistakes stay outside the tree, as usual in Python: a bad
argument raises ``ValueError``, a second ``run()`` raises ``RuntimeError``.

This module imports nothing, so every docserver module may import it.
"""

from __future__ import annotations

__all__ = [
    "ActivityError",
    "ActivityKeyRefused",
    "ActivityUnavailable",
    "AuthConfigError",
    "AuthFailed",
    "ClientRefused",
    "CredentialRefused",
    "DocserverConfigError",
    "DocserverError",
    "DocumentStoreError",
    "DocumentStoreOpenFailed",
    "DocumentStoreWriteFailed",
    "ListenFailed",
    "MalformedMessage",
    "sole_docserver_error",
]


class DocserverError(Exception):
    """Base of every exception the docserver raises on purpose."""


class DocserverConfigError(DocserverError):
    """The configuration cannot work: no authentication on a public address, a
    read-only DOCAGENTS_HOME, no database. The CLI exits 78 (EX_CONFIG), which
    systemd does not restart in a loop."""


class AuthConfigError(DocserverConfigError):
    """The authentication or authorization settings cannot work (a missing JWT
    secret, a hook that does not import, ``sql`` without a database)."""


class ListenFailed(DocserverError):
    """The port cannot be bound (in use, or not allowed)."""


class DocumentStoreError(DocserverError):
    """Base of the document store's failures."""


class DocumentStoreOpenFailed(DocumentStoreError):
    """The document store file cannot be opened or created."""


class DocumentStoreWriteFailed(DocumentStoreError):
    """An update was not written (the store cannot write right now), so it must
    not be applied or relayed either."""


class ActivityError(DocserverError):
    """Writing or reading document_activity failed in a way retrying cannot fix
    (a missing table, a request the API refuses); it stops the activity writer."""


class ActivityUnavailable(ActivityError):
    """The database or the Supabase API cannot be reached right now. The writer
    keeps its rows queued and retries; the home page's list answers 503."""


class ActivityKeyRefused(ActivityError):
    """Supabase refused SUPABASE_SERVICE_KEY (HTTP 401/403). The message never
    contains the key."""


class ClientRefused(DocserverError):
    """One client is refused; ``str(exc)`` is the reason it is told (no secrets)."""


class AuthFailed(ClientRefused):
    """The client is not authenticated (no token, a bad signature, an expired
    token). Authentication hooks raise it to refuse a client."""


class CredentialRefused(ClientRefused):
    """An agent credential that is not valid for this document (expired, forged,
    minted for another document)."""


class MalformedMessage(DocserverError):
    """The bytes are not a well-formed y-websocket message (the connection that
    sent them is closed with 1007)."""


def sole_docserver_error(group: BaseExceptionGroup[BaseException]) -> DocserverError | None:
    """The one :class:`DocserverError` a (nested) task-group failure consists of, else None.

    A failure inside a task group reaches the caller wrapped in exception groups;
    a caller that reports ``DocserverError`` by its message (the CLI) wants it back.
    """
    matched, rest = group.split(DocserverError)
    if matched is None or rest is not None:
        return None
    leaves: list[BaseException] = []
    pending: list[BaseException] = [matched]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) != 1 or not isinstance(leaves[0], DocserverError):
        return None
    return leaves[0]

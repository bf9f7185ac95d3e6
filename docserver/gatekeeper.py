"""The docserver's door: Origin, authentication and per-document authorization together.

:class:`Gatekeeper` answers two questions for the app: may this websocket
handshake open this document, and how (:class:`Admission`, or a
:class:`~docserver.paths.Refusal` with a documented close code); and which
documents may this HTTP caller see. Agents (a valid agent credential) are
decided before it is asked. :func:`build_gatekeeper` turns the settings into
one, and refuses configurations that cannot work (:class:`~docserver.errors.AuthConfigError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr

from docserver.auth import (
    AUTH_FAILED_CLOSE_CODE,
    FORBIDDEN_CLOSE_CODE,
    Access,
    Authenticator,
    Authorizer,
    AuthRequest,
    ClaimsAuthorizer,
    HookAuthenticator,
    HookAuthorizer,
    JwtAuthenticator,
    NoAuthenticator,
    Principal,
    load_hook,
    request_from_scope,
)
from docserver.errors import AuthConfigError, AuthFailed
from docserver.paths import Refusal
from docserver.settings import DocserverSettings

__all__ = [
    "Admission",
    "Gatekeeper",
    "build_gatekeeper",
    "origin_allowed",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    principal: Principal
    access: Access  # never "denied"
    subprotocol: str | None


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """No Origin (not a browser), the same origin, or one listed (``*``: any) (pure)."""
    if origin is None or "*" in allowed:
        return True
    if origin.rstrip("/") in allowed:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and netloc.lower() == (host or "").lower()


class Gatekeeper:
    def __init__(
        self,
        *,
        authenticator: Authenticator,
        authorizer: Authorizer,
        allowed_origins: frozenset[str],
        mode: str,
    ) -> None:
        self._authenticator = authenticator
        self.authorizer = authorizer
        self._allowed_origins = allowed_origins
        #: what ``/api/config`` tells the editor: "none" or "token"
        self.mode = mode

    async def open(self) -> None:
        opener = getattr(self.authorizer, "open", None)
        if opener is not None:
            await opener()

    async def close(self) -> None:
        closer = getattr(self.authorizer, "close", None)
        if closer is not None:
            await closer()

    async def admit_websocket(self, scope: dict[str, Any], document_id: str) -> Admission | Refusal:
        request = request_from_scope(scope)
        origin = request.headers.get("origin")
        if not origin_allowed(origin, request.headers.get("host"), self._allowed_origins):
            log.warning(
                "connection_refused", document_id=document_id, reason="origin", origin=origin
            )
            return Refusal(FORBIDDEN_CLOSE_CODE, "origin not allowed")
        principal = await self.authenticate(request, document_id=document_id)
        if isinstance(principal, Refusal):
            return principal
        access = await self.authorizer.access(principal, document_id)
        if access == "denied":
            log.warning(
                "connection_refused",
                document_id=document_id,
                subject=principal.subject,
                reason="document not allowed",
            )
            return Refusal(FORBIDDEN_CLOSE_CODE, "not allowed to open this document")
        return Admission(principal, access, request.subprotocol)

    async def authenticate(
        self, request: AuthRequest, *, document_id: str | None = None
    ) -> Principal | Refusal:
        try:
            return await self._authenticator.authenticate(request)
        except AuthFailed as exc:
            log.warning(
                "authentication_failed",
                document_id=document_id,
                reason=str(exc),
                client=request.client_host,
            )
            return Refusal(AUTH_FAILED_CLOSE_CODE, str(exc))

    async def visible(self, principal: Principal, document_ids: list[str]) -> set[str]:
        """The ids among ``document_ids`` this principal may open."""
        return {d for d in document_ids if await self.authorizer.access(principal, d) != "denied"}


def build_gatekeeper(
    settings: DocserverSettings,
    *,
    database_url: str | None = None,
    supabase_url: str | None = None,
    supabase_key: SecretStr | None = None,
) -> Gatekeeper:
    auth = settings.docserver_auth
    authenticator: Authenticator
    if auth == "none":
        authenticator = NoAuthenticator()
    elif auth == "jwt":
        secret = settings.jwt_secret
        if (secret is None) == (settings.docserver_jwks_url is None):
            raise AuthConfigError(
                "DOCSERVER_AUTH=jwt needs DOCSERVER_JWT_SECRET (or SUPABASE_JWT_SECRET) "
                "or DOCSERVER_JWKS_URL, not both"
            )
        algorithms = (
            [a.strip() for a in settings.docserver_jwt_algorithms.split(",") if a.strip()]
            if settings.docserver_jwt_algorithms
            else None
        )
        authenticator = JwtAuthenticator(
            secret=secret.get_secret_value() if secret else None,
            jwks_url=settings.docserver_jwks_url,
            algorithms=algorithms,
            audience=settings.docserver_jwt_audience,
            issuer=settings.docserver_jwt_issuer,
        )
    else:
        try:
            authenticator = HookAuthenticator(load_hook(auth))
        except ValueError as exc:
            raise AuthConfigError(f"DOCSERVER_AUTH: {exc}") from exc

    authz = settings.docserver_authz
    authorizer: Authorizer
    if authz == "claims":
        authorizer = ClaimsAuthorizer()
    elif authz == "sql":
        from docserver.access_sql import PostgresAccess, SupabaseAccess

        if database_url:
            authorizer = cast(Authorizer, PostgresAccess(database_url))
        elif supabase_url and supabase_key:
            authorizer = cast(Authorizer, SupabaseAccess(supabase_url, supabase_key))
        else:
            raise AuthConfigError("DOCSERVER_AUTHZ=sql needs a database")
    else:
        try:
            authorizer = HookAuthorizer(load_hook(authz))
        except ValueError as exc:
            raise AuthConfigError(f"DOCSERVER_AUTHZ: {exc}") from exc
    return Gatekeeper(
        authenticator=authenticator,
        authorizer=authorizer,
        allowed_origins=settings.allowed_origins,
        mode="none" if auth == "none" else "token",
    )

"""Who a client is (authentication) and what it may do with one document (authorization).

Authentication (``DOCSERVER_AUTH``):

- ``none``: every client is anonymous and may open every document. Allowed only
  while the docserver listens on loopback (see :func:`unauthenticated_bind_problem`).
- ``jwt``: a JSON Web Token, checked with PyJWT: HS256 with ``DOCSERVER_JWT_SECRET``
  (or ``SUPABASE_JWT_SECRET``, so Supabase Auth tokens work as they are), or
  RS256/ES256 with keys from ``DOCSERVER_JWKS_URL``; ``exp`` is required,
  ``aud``/``iss`` are checked when configured.
- ``module:function``: a hook called with an :class:`AuthRequest`, returning a
  :class:`Principal` (sync or async); it raises :class:`AuthFailed` to refuse
  (defined in :mod:`docserver.errors`, importable from here for hooks).

The token comes from the query parameter ``token`` (what a browser's y-websocket
provider can add), from an offered ``Sec-WebSocket-Protocol`` of the form
``bearer.<token>`` (the server then selects ``docagents`` if offered, else that
item), or from ``Authorization: Bearer <token>`` (HTTP, and non-browser clients).

Authorization (``DOCSERVER_AUTHZ``) turns a principal and a document id into an
:data:`Access`: ``read-write``, ``read-only`` (sync and awareness; the client's
updates are neither applied nor relayed) or ``denied``:

- ``claims``: the token's ``docs`` claim (read-write) and ``docs_ro`` claim
  (read-only), each a pattern or a list of patterns (``fnmatch``: ``demo-*``).
  A token with neither claim opens nothing. Anonymous clients (``none``) open all.
- ``sql``: the database function ``can_open_document(subject, document_id)``
  (migration 0008; operators replace its body with their own rules).
- ``module:function``: a hook ``(principal, document_id) -> Access`` (sync or async).

Each websocket connection opens one document, so its decision is taken once,
at the handshake, and kept for the life of the connection.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast
from urllib.parse import parse_qs

import anyio
import jwt
import structlog

from docserver.errors import AuthFailed

__all__ = [
    "AUTH_FAILED_CLOSE_CODE",
    "FORBIDDEN_CLOSE_CODE",
    "Access",
    "AuthFailed",
    "AuthRequest",
    "Authenticator",
    "Authorizer",
    "ClaimsAuthorizer",
    "HookAuthenticator",
    "HookAuthorizer",
    "JwtAuthenticator",
    "NoAuthenticator",
    "Principal",
    "access_from_claims",
    "is_loopback_host",
    "load_hook",
    "mint_token",
    "request_from_scope",
    "unauthenticated_bind_problem",
]

log = structlog.get_logger(__name__)

Access = Literal["read-write", "read-only", "denied"]
ACCESS_VALUES: tuple[Access, ...] = ("read-write", "read-only", "denied")

#: No token, a bad signature, an expired token, a wrong audience or issuer.
AUTH_FAILED_CLOSE_CODE = 4401
#: Authenticated, but this document (or this Origin) is not allowed.
FORBIDDEN_CLOSE_CODE = 4403

#: The subprotocol a browser offers beside ``bearer.<token>``; the server selects it.
SUBPROTOCOL = "docagents"
_BEARER_PROTOCOL_PREFIX = "bearer."
#: Claims read by the ``claims`` authorizer.
READ_WRITE_CLAIM = "docs"
READ_ONLY_CLAIM = "docs_ro"


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a client presented at the handshake (or with an HTTP request)."""

    token: str | None
    headers: Mapping[str, str]
    query: Mapping[str, str]
    client_host: str | None
    #: the subprotocol to select when accepting (None: none was offered)
    subprotocol: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client. ``subject`` is None only for anonymous clients (``none``)."""

    subject: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return self.subject is None


class Authenticator(Protocol):
    async def authenticate(self, request: AuthRequest) -> Principal: ...


class Authorizer(Protocol):
    async def access(self, principal: Principal, document_id: str) -> Access: ...


# ---------------------------------------------------------------------- requests


def request_from_scope(scope: Mapping[str, Any]) -> AuthRequest:
    """The credentials of an ASGI websocket or HTTP scope (pure)."""
    headers: dict[str, str] = {}
    for raw_key, raw_value in scope.get("headers", []):
        key = raw_key.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    query = {
        key: values[0]
        for key, values in parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        ).items()
    }
    token: str | None = query.get("token") or None
    subprotocol: str | None = None
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if offered:
        bearer = [p for p in offered if p.startswith(_BEARER_PROTOCOL_PREFIX)]
        if bearer and token is None:
            token = bearer[0].removeprefix(_BEARER_PROTOCOL_PREFIX)
        if SUBPROTOCOL in offered:
            subprotocol = SUBPROTOCOL
        elif bearer:
            subprotocol = bearer[0]
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if token is None and scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    client = scope.get("client")
    return AuthRequest(
        token=token,
        headers=headers,
        query=query,
        client_host=client[0] if client else None,
        subprotocol=subprotocol,
    )


# ---------------------------------------------------------------- authenticators


class NoAuthenticator:
    """``DOCSERVER_AUTH=none``: everyone is anonymous (loopback only)."""

    async def authenticate(self, request: AuthRequest) -> Principal:
        return Principal(subject=None)


class JwtAuthenticator:
    """``DOCSERVER_AUTH=jwt``: an HS256 secret, or RS256/ES256 keys from a JWKS URL."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        algorithms: Sequence[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
    ) -> None:
        if bool(secret) == bool(jwks_url):
            raise ValueError("JWT authentication needs exactly one of a secret or a JWKS URL")
        self._secret = secret
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, timeout=5) if jwks_url else None
        self._algorithms = list(algorithms or (["HS256"] if secret else ["RS256", "ES256"]))
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s

    async def authenticate(self, request: AuthRequest) -> Principal:
        if not request.token:
            raise AuthFailed("authentication required: no token")
        try:
            if self._jwks is not None:
                jwks = self._jwks
                signing_key = await anyio.to_thread.run_sync(
                    jwks.get_signing_key_from_jwt, request.token
                )
                key: Any = signing_key.key
            else:
                key = self._secret
            claims = jwt.decode(
                request.token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthFailed("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthFailed("token has the wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthFailed("token has the wrong issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthFailed("token signature is invalid") from exc
        except jwt.PyJWKClientError as exc:
            raise AuthFailed("token signing key is unknown") from exc
        except jwt.PyJWTError as exc:
            raise AuthFailed(f"invalid token: {type(exc).__name__}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthFailed("token has no subject")
        return Principal(subject=subject, claims=claims)


class HookAuthenticator:
    """``DOCSERVER_AUTH=module:function``: the function returns a :class:`Principal`."""

    def __init__(self, hook: Callable[[AuthRequest], Principal | Awaitable[Principal]]) -> None:
        self._hook = hook

    async def authenticate(self, request: AuthRequest) -> Principal:
        result = self._hook(request)
        principal = await result if inspect.isawaitable(result) else result
        if not isinstance(principal, Principal):
            raise AuthFailed("authentication refused")
        return principal


# ------------------------------------------------------------------ authorizers


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def access_from_claims(claims: Mapping[str, Any], document_id: str) -> Access:
    """``docs`` patterns give read-write, ``docs_ro`` patterns read-only (pure)."""
    if any(fnmatch.fnmatchcase(document_id, p) for p in _patterns(claims.get(READ_WRITE_CLAIM))):
        return "read-write"
    if any(fnmatch.fnmatchcase(document_id, p) for p in _patterns(claims.get(READ_ONLY_CLAIM))):
        return "read-only"
    return "denied"


class ClaimsAuthorizer:
    """``DOCSERVER_AUTHZ=claims`` (the default)."""

    async def access(self, principal: Principal, document_id: str) -> Access:
        if principal.anonymous:
            return "read-write"
        return access_from_claims(principal.claims, document_id)


class HookAuthorizer:
    """``DOCSERVER_AUTHZ=module:function``: ``(principal, document_id) -> Access``."""

    def __init__(self, hook: Callable[[Principal, str], Access | Awaitable[Access]]) -> None:
        self._hook = hook

    async def access(self, principal: Principal, document_id: str) -> Access:
        result = self._hook(principal, document_id)
        decision = await result if inspect.isawaitable(result) else result
        return decision if decision in ACCESS_VALUES else "denied"


def load_hook(spec: str) -> Callable[..., Any]:
    """Import ``module:function``; ValueError names what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"{module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")  # noqa: TRY004 (one error type)
    return cast(Callable[..., Any], target)


# ------------------------------------------------------------------ start-up


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unauthenticated_bind_problem(host: str, auth: str, *, allow_remote: bool) -> str | None:
    """Why this combination must not start, or None (pure)."""
    if auth != "none" or allow_remote or is_loopback_host(host):
        return None
    return (
        f"DOCSERVER_AUTH=none while listening on {host}: anyone who can reach the port "
        "could read and write every document. Set DOCSERVER_AUTH=jwt (or a hook), "
        "listen on 127.0.0.1, or set DOCSERVER_ALLOW_UNAUTHENTICATED=true to accept that."
    )


def mint_token(
    *,
    secret: str,
    subject: str,
    documents: Sequence[str],
    read_only: bool = False,
    ttl_s: float,
    audience: str | None = None,
    issuer: str | None = None,
    now: float,
) -> str:
    """An HS256 token for trying the editor (``docagents token``)."""
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": int(now),
        "exp": int(now + ttl_s),
        READ_ONLY_CLAIM if read_only else READ_WRITE_CLAIM: list(documents),
    }
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")

"""Pure parts of the docserver's door: token sources, claims, Origins, bind check, JWTs."""

from __future__ import annotations

import time

import anyio
import jwt
import pytest

from docserver.auth import (
    AuthFailed,
    ClaimsAuthorizer,
    HookAuthenticator,
    JwtAuthenticator,
    Principal,
    access_from_claims,
    load_hook,
    mint_token,
    request_from_scope,
    unauthenticated_bind_problem,
)
from docserver.gatekeeper import origin_allowed

SECRET = "unit-secret-unit-secret-unit-secret"


def scope(*, query: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
    }


def test_token_from_query_subprotocol_and_authorization() -> None:
    assert request_from_scope(scope(query=b"token=abc&x=1")).token == "abc"
    offered = request_from_scope(scope(headers={"Sec-WebSocket-Protocol": "docagents, bearer.t1"}))
    assert (offered.token, offered.subprotocol) == ("t1", "docagents")
    alone = request_from_scope(scope(headers={"Sec-WebSocket-Protocol": "bearer.t2"}))
    assert (alone.token, alone.subprotocol) == ("t2", "bearer.t2")
    header = request_from_scope(scope(headers={"Authorization": "Bearer t3"}))
    assert header.token == "t3"
    assert request_from_scope(scope()).token is None


def test_claims_give_read_write_read_only_or_nothing() -> None:
    claims = {"docs": ["demo-*", "notes"], "docs_ro": "shared-*"}
    assert access_from_claims(claims, "demo-1") == "read-write"
    assert access_from_claims(claims, "notes") == "read-write"
    assert access_from_claims(claims, "shared-plan") == "read-only"
    assert access_from_claims(claims, "other") == "denied"
    assert access_from_claims({}, "demo-1") == "denied"
    assert access_from_claims({"docs": 5}, "demo-1") == "denied"


def test_anonymous_clients_open_everything_with_claims_authorization() -> None:
    decision = anyio.run(ClaimsAuthorizer().access, Principal(subject=None), "anything")
    assert decision == "read-write"


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "h:1", frozenset(), True),
        ("http://h:1", "h:1", frozenset(), True),
        ("http://evil.example", "h:1", frozenset(), False),
        ("http://evil.example", "h:1", frozenset({"*"}), True),
        ("https://app.example", "h:1", frozenset({"https://app.example"}), True),
        ("https://app.example/", "h:1", frozenset({"https://app.example"}), True),
        ("null", "h:1", frozenset(), False),
    ],
)
def test_origin_allow_list(
    origin: str | None, host: str, allowed: frozenset[str], ok: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is ok


@pytest.mark.parametrize(
    ("host", "auth", "allow", "refused"),
    [
        ("127.0.0.1", "none", False, False),
        ("::1", "none", False, False),
        ("localhost", "none", False, False),
        ("0.0.0.0", "none", False, True),
        ("192.0.2.7", "none", False, True),
        ("0.0.0.0", "none", True, False),
        ("0.0.0.0", "jwt", False, False),
    ],
)
def test_unauthenticated_bind(host: str, auth: str, allow: bool, refused: bool) -> None:
    assert (unauthenticated_bind_problem(host, auth, allow_remote=allow) is not None) is refused


def _authenticate(authenticator: JwtAuthenticator, token: str | None) -> Principal:
    request = request_from_scope(scope(query=f"token={token}".encode() if token else b""))
    return anyio.run(authenticator.authenticate, request)


def test_jwt_checks_signature_expiry_audience_and_issuer() -> None:
    checker = JwtAuthenticator(secret=SECRET, audience="docagents", issuer="tests")
    now = time.time()
    good = mint_token(
        secret=SECRET,
        subject="alice",
        documents=["demo-*"],
        ttl_s=60,
        audience="docagents",
        issuer="tests",
        now=now,
    )
    principal = _authenticate(checker, good)
    assert principal.subject == "alice"
    assert access_from_claims(principal.claims, "demo-1") == "read-write"
    cases = {
        None: "no token",
        "garbage": "invalid token",
        mint_token(
            secret="x" * 40,
            subject="a",
            documents=["*"],
            ttl_s=60,
            audience="docagents",
            issuer="tests",
            now=now,
        ): "signature",
        mint_token(
            secret=SECRET,
            subject="a",
            documents=["*"],
            ttl_s=60,
            audience="docagents",
            issuer="tests",
            now=now - 3600,
        ): "expired",
        mint_token(
            secret=SECRET,
            subject="a",
            documents=["*"],
            ttl_s=60,
            audience="other",
            issuer="tests",
            now=now,
        ): "audience",
        mint_token(
            secret=SECRET,
            subject="a",
            documents=["*"],
            ttl_s=60,
            audience="docagents",
            issuer="elsewhere",
            now=now,
        ): "issuer",
        jwt.encode({"sub": "a", "aud": "docagents", "iss": "tests"}, SECRET): "invalid token",
    }
    for token, reason in cases.items():
        with pytest.raises(AuthFailed, match=reason):
            _authenticate(checker, token)


def test_jwt_without_a_subject_is_refused() -> None:
    token = jwt.encode({"exp": int(time.time()) + 60}, SECRET)
    with pytest.raises(AuthFailed, match="no subject"):
        _authenticate(JwtAuthenticator(secret=SECRET), token)


def test_hooks_are_loaded_from_module_function() -> None:
    assert load_hook("docserver.auth:access_from_claims") is access_from_claims
    for bad in ("nocolon", "no.such.module:f", "docserver.auth:missing", "docserver.auth:log"):
        with pytest.raises(ValueError, match=r"."):
            load_hook(bad)

    async def hook(request: object) -> Principal:
        return Principal(subject="hooked")

    principal = anyio.run(HookAuthenticator(hook).authenticate, request_from_scope(scope()))
    assert principal.subject == "hooked"
    with pytest.raises(AuthFailed):
        anyio.run(HookAuthenticator(lambda r: None).authenticate, request_from_scope(scope()))  # type: ignore[arg-type,return-value]


def allow_team_docs(principal: Principal, document_id: str) -> str:
    """An authorization hook used below (``tests.unit...`` is importable by its module name)."""
    return "read-only" if document_id.startswith("team-") else "denied"


def test_gatekeeper_from_settings_hooks_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    from docserver.errors import AuthConfigError
    from docserver.gatekeeper import build_gatekeeper
    from docserver.settings import DocserverSettings

    def settings(**values: object) -> DocserverSettings:
        return DocserverSettings(_env_file=None, **values)  # type: ignore[call-arg]

    with pytest.raises(AuthConfigError, match="DOCSERVER_JWT_SECRET"):
        build_gatekeeper(settings(docserver_auth="jwt"))
    with pytest.raises(AuthConfigError, match="DOCSERVER_AUTH"):
        build_gatekeeper(settings(docserver_auth="no.such.module:hook"))
    with pytest.raises(AuthConfigError, match="needs a database"):
        build_gatekeeper(
            settings(docserver_auth="jwt", docserver_jwt_secret=SECRET, docserver_authz="sql")
        )
    supabase = build_gatekeeper(settings(docserver_auth="jwt", supabase_jwt_secret=SECRET))
    assert supabase.mode == "token"

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    keeper = build_gatekeeper(
        settings(
            docserver_authz="test_docserver_access_rules:allow_team_docs",
            docserver_allowed_origins="*",
        )
    )
    scope_ = {**scope(headers={"Origin": "http://anywhere.example"}), "path": "/"}
    admitted = anyio.run(keeper.admit_websocket, scope_, "team-1")
    assert getattr(admitted, "access", None) == "read-only"
    refused = anyio.run(keeper.admit_websocket, scope_, "solo")
    assert getattr(refused, "code", None) == 4403

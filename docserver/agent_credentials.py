"""Agent credentials scoped to one agent life (minted by the manager, checked by the docserver).

The manager holds the master secret (``DOCSERVER_AGENT_TOKEN``) and gives each
worker only a credential for its own life: an HS256 JWT, signed with a key
derived from the master secret, naming the document, the agent id, an expiry and
the life's fencing token (:mod:`docserver.fencing`)::

    {"typ": "docagents-agent", "doc": "...", "agent": "...", "iat": ..., "exp": ...,
     "jti": "...", "fence": 7}

The docserver accepts it on the ``X-Docagents-Agent-Token`` header for that
document only, and for one connection at a time (a copy used while the life is
connected is refused), so a leaked worker credential opens one document, once,
until it expires. The master secret itself is still accepted (``docagents
worker``, older managers). This module imports neither ``manager`` nor ``worker``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from docserver.errors import CredentialRefused

__all__ = [
    "AgentCredential",
    "mint_agent_credential",
    "verify_agent_credential",
]

_TYPE = "docagents-agent"
_KEY_CONTEXT = b"docagents agent credential v1"


@dataclass(frozen=True, slots=True)
class AgentCredential:
    document_id: str
    agent_id: str
    credential_id: str
    fence: int | None


def _key(master: str) -> bytes:
    return hmac.new(master.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def mint_agent_credential(
    master: str,
    *,
    document_id: str,
    agent_id: str,
    ttl_s: float,
    now: float,
    fence: int | None = None,
) -> str:
    claims: dict[str, Any] = {
        "typ": _TYPE,
        "doc": document_id,
        "agent": agent_id,
        "iat": int(now),
        "exp": int(now + ttl_s),
        "jti": secrets.token_urlsafe(12),
    }
    if fence is not None:
        claims["fence"] = fence
    return jwt.encode(claims, _key(master), algorithm="HS256")


def looks_like_credential(presented: str) -> bool:
    return presented.count(".") == 2


def verify_agent_credential(master: str, presented: str, *, document_id: str) -> AgentCredential:
    try:
        claims = jwt.decode(
            presented,
            _key(master),
            algorithms=["HS256"],
            options={"require": ["exp", "doc", "agent", "jti", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise CredentialRefused("agent credential expired") from exc
    except jwt.PyJWTError as exc:
        raise CredentialRefused("invalid agent credential") from exc
    if claims.get("typ") != _TYPE:
        raise CredentialRefused("invalid agent credential")
    if claims.get("doc") != document_id:
        raise CredentialRefused("agent credential is for another document")
    fence = claims.get("fence")
    return AgentCredential(
        document_id=document_id,
        agent_id=str(claims["agent"]),
        credential_id=str(claims["jti"]),
        fence=fence if isinstance(fence, int) else None,
    )

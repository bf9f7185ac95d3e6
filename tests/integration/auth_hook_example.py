"""An authentication hook as an operator would write one (``DOCSERVER_AUTH=module:function``)."""

from __future__ import annotations

from docserver.auth import AuthFailed, AuthRequest, Principal


async def authenticate(request: AuthRequest) -> Principal:
    if request.token == "let-me-in":
        return Principal(subject="hooked", claims={"docs": ["hook-*"]})
    raise AuthFailed("hook says no")

"""The OpenAI-compatible chat-completions client: the one module that imports ``openai``.

:class:`ChatClient` sends one request and returns the answer's text and token
counts. The OpenAI client's exceptions are translated here, with ``raise ... from``:
a timeout, a lost connection, a 429 or a 5xx becomes
:class:`~worker.errors.LlmCallFailed` (with the server's ``Retry-After``), any
other 4xx :class:`~worker.errors.LlmRequestRefused`. The client never retries by
itself; :class:`~worker.extract.llm.LlmExtractor` decides.

Two preparations for the manager's forkserver template, so that every worker
starts its client and makes its first call at the cost of a later one:
:func:`shared_tls_context` (the CA bundle, loaded once) and :func:`warm_up_client`
(the package's lazy imports and models, built once).
"""

from __future__ import annotations

import functools
import json
import math
import ssl
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from worker.errors import LlmCallFailed, LlmRequestRefused

__all__ = ["ChatAnswer", "ChatClient", "shared_tls_context", "warm_up_client"]


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """The first choice's text (None or empty when the model said nothing) and the
    tokens the request cost."""

    content: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatClient:
    """One ``POST /chat/completions`` at a time, against ``base_url``."""

    def __init__(self, *, api_key: str, base_url: str | None, timeout_s: float) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=shared_tls_context()),
        )

    async def complete(self, body: dict[str, Any]) -> ChatAnswer:
        """Send one request; raises :class:`~worker.errors.LlmCallFailed` (or its
        subclass :class:`~worker.errors.LlmRequestRefused`) when it fails."""
        try:
            # The client's generic POST, not ``chat.completions.create``: that one
            # first walks every parameter (the JSON schema too) through the SDK's
            # type transforms, which change nothing in this request and cost more
            # than a millisecond of CPU per call. Same wire request, same errors
            # and response type.
            response = await self._client.post(
                "/chat/completions", cast_to=ChatCompletion, body=body
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise LlmCallFailed(type(exc).__name__) from exc
        except openai.APIStatusError as exc:
            reason = f"HTTP {exc.status_code}"
            if exc.status_code != 429 and exc.status_code < 500:
                raise LlmRequestRefused(reason) from exc
            retry_after = _retry_after(exc.response.headers.get("retry-after"))
            raise LlmCallFailed(reason, retry_after_s=retry_after) from exc
        usage = response.usage
        choice = response.choices[0] if response.choices else None
        return ChatAnswer(
            content=choice.message.content if choice is not None else None,
            prompt_tokens=(usage.prompt_tokens or 0) if usage is not None else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage is not None else 0,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not used by model servers)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The process's TLS context for the LLM client, built once.

    Loading the CA bundle costs tens of milliseconds and about a MiB, and each new
    OpenAI client would load it again. The forkserver template builds this one
    before forking (when it preloads the LLM client), so every worker starts its
    client at once and shares the CA data. Built as the client's HTTP library builds
    its own (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured).
    """
    context: ssl.SSLContext = _http_library().create_ssl_context()
    return context


def _http_library() -> Any:
    """The HTTP library the installed OpenAI client is built on."""
    try:
        import httpx2 as http  # current openai releases
    except ImportError:  # older openai releases use httpx
        import httpx as http  # type: ignore[no-redef]
    return http


async def warm_up_client(response_format: dict[str, Any] | None = None) -> None:
    """One completion against an in-memory transport: for the forkserver template.

    A client's first call imports the rest of the OpenAI package and builds its
    pydantic models. Done once in the template, every worker's first call costs
    what its later ones do, and the result is shared. Nothing leaves the process
    (the transport answers in memory).
    """
    http = _http_library()

    def answer(request: Any) -> Any:
        content = json.dumps({"places": []})
        return http.Response(
            200,
            json={
                "id": "warm-up",
                "object": "chat.completion",
                "created": 0,
                "model": "warm-up",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    transport = http.MockTransport(answer)
    async with openai.AsyncOpenAI(
        api_key="warm-up",
        base_url="http://warm-up.invalid/v1",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(transport=transport),
    ) as client:
        body: dict[str, Any] = {
            "model": "warm-up",
            "messages": [{"role": "user", "content": "."}],
            "temperature": 0,
        }
        if response_format is not None:
            body["response_format"] = response_format
        await client.post("/chat/completions", cast_to=ChatCompletion, body=body)

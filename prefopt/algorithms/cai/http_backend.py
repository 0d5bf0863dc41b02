"""A :class:`ChatBackend` for OpenAI-compatible ``/v1/chat/completions`` servers
(vLLM, llama.cpp server, TGI, hosted APIs), with the standard library only.

Failures that may pass (timeouts, connection errors, HTTP 429 and 5xx, malformed bodies)
are retried with exponential backoff, ``backoff * 2**attempt`` seconds; other 4xx fail at
once. The API key is read from an environment variable, sent as ``Authorization: Bearer``
and kept out of repr, logs and error messages.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefopt.data.records import Messages
from prefopt.errors import ConfigError, PrefoptError

log = logging.getLogger(__name__)
_STRIP = " \t\n().:"   # characters around an answer letter in a token: "(A", " A", "A)"


class BackendError(PrefoptError):
    """A judge/critic server request failed for good. ``status`` is the last HTTP status
    (None for timeouts, connection errors and malformed bodies)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status, self.attempts = status, attempts


class _Retryable(Exception):
    """A failure worth another try (its message is already free of the key)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Secret:
    """A string that prints as '***' so it cannot leak through repr or vars()."""

    def __init__(self, value: str | None):
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "'***'" if self._value else "None"

    __str__ = __repr__


def chat_completions_url(base_url: str) -> str:
    """'http://h:8000' or 'http://h:8000/v1' -> 'http://h:8000/v1/chat/completions'."""
    base = base_url.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def answer_key(text: str) -> str:
    """A choice or token reduced to its answer: '(A)', ' (A', 'A)' -> 'A'."""
    return text.strip(_STRIP)


def choice_logprobs_from_content(content: list[dict], choices: Sequence[str]) -> list[float] | None:
    """Log-probs of the choices at the first generated position whose top_logprobs hold one.

    ``content`` is ``choices[0].logprobs.content`` of a chat completion: per generated token
    ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}``. Choices are
    matched by :func:`answer_key`, so "(A)" matches tokens "(A", "A", " A"; variants of one
    answer are combined by logsumexp. A choice absent from that position gets −inf. None
    when no position names any choice.
    """
    keys = [answer_key(c) for c in choices]
    for pos in content:
        cands = {(t["token"], t["logprob"]) for t in pos.get("top_logprobs") or []}
        if "token" in pos and "logprob" in pos:
            cands.add((pos["token"], pos["logprob"]))
        per_key: dict[str, list[float]] = {}
        for token, lp in cands:
            per_key.setdefault(answer_key(token), []).append(float(lp))
        if any(k in per_key for k in keys):
            return [_logsumexp(per_key.get(k, [])) for k in keys]
    return None


def _logsumexp(xs: list[float]) -> float:
    """log Σ exp(x); −inf for an empty list."""
    if not xs:
        return -math.inf
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _message_content(body: dict) -> str:
    """choices[0].message.content of a chat completion."""
    content = body["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("message content is not a string")
    return content


def _logprob_content(body: dict) -> list[dict] | None:
    """choices[0].logprobs.content, or None when the server sent no log-probs."""
    choice = body["choices"][0]
    logprobs = choice.get("logprobs")
    if not logprobs or not logprobs.get("content"):
        return None
    return logprobs["content"]


class OpenAIChatBackend:
    """Chat completions over HTTP, ``max_concurrency`` requests in flight at once."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 30.0, max_retries: int = 3, backoff: float = 0.5,
                 max_concurrency: int = 4):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url: expected an http:// or https:// URL, got {base_url!r}")
        if max_retries < 0 or max_concurrency < 1 or timeout <= 0 or backoff < 0:
            raise ConfigError("OpenAIChatBackend: need max_retries >= 0, max_concurrency >= 1, "
                              f"timeout > 0 and backoff >= 0, got {max_retries}, "
                              f"{max_concurrency}, {timeout}, {backoff}")
        self.url, self.model = chat_completions_url(base_url), model
        self.api_key_env = api_key_env
        self._api_key = _Secret(os.environ.get(api_key_env) or None)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return (f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text

    def _once(self, payload: dict, extract: Callable[[dict], Any]) -> Any:
        """One request; raises _Retryable or BackendError (4xx other than 429)."""
        headers = {"Content-Type": "application/json"}
        if self._api_key.reveal():
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode(),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = self._redact(e.read(300).decode("utf-8", "replace"))
            except OSError:
                detail = "(no body)"
            msg = f"HTTP {e.code} from {self.url}: {detail}"
            if e.code == 429 or e.code >= 500:
                raise _Retryable(msg, e.code) from None
            raise BackendError(msg, status=e.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise _Retryable(self._redact(f"{type(e).__name__} calling {self.url}: {reason}")
                             ) from None
        try:
            return extract(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retryable(f"malformed response body from {self.url} "
                             f"({type(e).__name__}: {self._redact(str(e))[:200]})") from None

    def _request(self, payload: dict, extract: Callable[[dict], Any]) -> Any:
        """_once with up to max_retries retries, sleeping backoff * 2**attempt between."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._once(payload, extract)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise BackendError(f"{e} (gave up after {attempt + 1} attempts)",
                                       status=e.status, attempts=attempt + 1) from None
                delay = self.backoff * 2 ** attempt
                log.warning("retrying in %.2fs (attempt %d/%d): %s", delay, attempt + 1,
                            self.max_retries + 1, e)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _map(self, fn: Callable[[Messages], Any], conversations: list[Messages]) -> list:
        """fn over conversations with at most max_concurrency in flight, order kept."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(fn, conversations))

    def generate(self, conversations: list[Messages], max_new_tokens: int,
                 temperature: float) -> list[str]:
        """The message content of one completion per conversation."""
        def one(conv: Messages) -> str:
            payload = {"model": self.model, "messages": conv, "max_tokens": max_new_tokens,
                       "temperature": temperature}
            return self._request(payload, _message_content)
        return self._map(one, conversations)

    def choice_logprobs(self, conversations: list[Messages],
                        choices: Sequence[str]) -> list[list[float] | None]:
        """Log-probs of single-token answers such as "(A)"/"(B)" from the server's
        top_logprobs (see :func:`choice_logprobs_from_content`); None where the server
        returns no log-probs or none of the choices is among them."""
        def extract(body: dict) -> list[float] | None:
            content = _logprob_content(body)
            return None if content is None else choice_logprobs_from_content(content, choices)

        def one(conv: Messages) -> list[float] | None:
            payload = {"model": self.model, "messages": conv, "max_tokens": 3,
                       "temperature": 0.0, "logprobs": True, "top_logprobs": 5}
            return self._request(payload, extract)
        return self._map(one, conversations)

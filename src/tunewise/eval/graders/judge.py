"""Model judges: chat completions for ``score_model``/``label_model`` graders through the official ``openai``
SDK against any OpenAI-compatible endpoint (``tunewise serve``, OpenAI, another), cached like eval calls.

Every judge request is deterministic by construction: temperature 0 unless the grader's ``sampling_params``
say otherwise, a fixed output rubric (a JSON object ``{"result": ...}`` under a ``json_schema`` response
format), and the answer stored in the eval cache (``tunewise.eval.cache``) under a key of the endpoint, model,
messages and parameters, so a rerun pays for nothing it has already asked.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.eval.cache import CompletionCache, cache_key

RETRIES = 4
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


class JudgeCallError(Exception):
    """The endpoint failed (after retries); ``details`` is what it said."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


def _transient(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.RateLimitError | openai.APIConnectionError | openai.InternalServerError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass
class Completion:
    answer: str | None
    refusal: str | None
    finish_reason: str | None
    usage: dict[str, int]
    model: str
    cached: bool


class ModelJudge:
    """A client for judge calls: ``base_url``/``api_key`` as the SDK takes them (None: ``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY``); ``cache`` True for the eval cache (``$TUNEWISE_HOME/eval-cache.sqlite``), a path,
    a ``CompletionCache``, or False."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 cache: bool | str | os.PathLike | CompletionCache = True, timeout: float = 120.0,
                 max_retries: int = 2) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY")
                                    or "unused", timeout=timeout, max_retries=max_retries)
        self.base_url = str(self.client.base_url).rstrip("/")
        self._own_cache = False
        if isinstance(cache, CompletionCache):
            self.cache: CompletionCache | None = cache
        elif cache:
            self.cache = CompletionCache(None if cache is True else Path(cache))
            self._own_cache = True
        else:
            self.cache = None
        self.requests = 0
        self._lock = threading.Lock()

    def complete(self, model: str, messages: list[dict], params: dict[str, Any]) -> Completion:
        """One chat completion (from the cache when it has been asked before)."""
        key = cache_key(self.base_url, model, messages, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return Completion(hit["answer"], hit.get("refusal"), hit.get("finish_reason"), hit["usage"],
                                  hit.get("model") or model, cached=True)
        with self._lock:
            self.requests += 1
        attempt = 0
        while True:
            try:
                response = self.client.chat.completions.create(model=model, messages=messages, **params)
                break
            except Exception as exc:
                import openai

                if _transient(exc) and attempt < RETRIES:
                    time.sleep(random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt)))
                    attempt += 1
                    continue
                if isinstance(exc, openai.OpenAIError):
                    message = getattr(exc, "message", None) or str(exc)
                    raise JudgeCallError(f"{type(exc).__name__} from {self.base_url}: {message}"[:1000]) from exc
                raise
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        record = {
            "answer": choice.message.content if choice else None,
            "refusal": getattr(choice.message, "refusal", None) if choice else None,
            "finish_reason": choice.finish_reason if choice else None,
            "usage": {
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "total_tokens": usage.total_tokens if usage else 0,
                "cached_tokens": (getattr(details, "cached_tokens", 0) or 0) if details else 0,
            },
            "model": response.model or model,
        }
        if self.cache is not None and choice is not None:
            self.cache.put(key, self.base_url, model, record)
        return Completion(record["answer"], record["refusal"], record["finish_reason"], record["usage"],
                          record["model"], cached=False)

    def close(self) -> None:
        if self._own_cache and self.cache is not None:
            self.cache.close()
            self.cache = None
        self.client.close()

    def __enter__(self) -> ModelJudge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Embedder:
    """Embeddings for the ``cosine`` metric from an OpenAI-compatible ``/v1/embeddings`` endpoint."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        import openai

        self.model = model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY")
                                    or "unused", timeout=timeout)

    def __call__(self, texts: list[str]) -> list[list[float]]:
        import openai

        try:
            response = self.client.embeddings.create(model=self.model, input=texts)
        except openai.OpenAIError as exc:
            raise JudgeCallError(f"embeddings: {getattr(exc, 'message', None) or exc}"[:1000]) from exc
        return [d.embedding for d in sorted(response.data, key=lambda d: d.index)]

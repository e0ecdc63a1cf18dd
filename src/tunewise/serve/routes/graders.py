"""``/v1/fine_tuning/alpha/graders/validate`` and ``/run``: OpenAI's grader endpoints, so the SDK's
``client.fine_tuning.alpha.graders`` works against tunewise.

The graders are ``tunewise.eval.graders``. Model graders ask ``grader_base_url`` (empty: this server itself,
with the caller's key); their answers are cached in ``data_dir/grader-cache.sqlite``. ``python`` graders are
refused unless the operator sets ``python_graders``. As in OpenAI's API, a grader that fails on the sample
answers 200 with reward 0 and the flag in ``metadata.errors``; a grader that is not valid answers 400 naming the
field.
"""

from __future__ import annotations

import os
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict

from tunewise.errors import UsageError
from tunewise.serve.app import PrincipalDep, State, StateDep

router = APIRouter(tags=["graders"])

# What ValidateGraderRequest and RunGraderRequest take at the top level (label_model only inside a multi).
TOP_LEVEL_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")

_cache_lock = threading.Lock()


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    model_sample: str
    item: dict[str, Any] | None = None


def _check(state: State, obj: dict[str, Any]):
    from tunewise.eval.graders import parse_grader

    kind = obj.get("type")
    if kind == "label_model":
        raise UsageError("grader.type: a label_model grader cannot be a fine-tuning grader on its own "
                         f"(OpenAI's graders endpoints take {', '.join(TOP_LEVEL_TYPES)}).",
                         hint="Use score_model, or put the label_model inside a multi grader.",
                         param="grader.type", code="invalid_grader")
    grader = parse_grader(obj, "grader")
    if grader.uses_python and not state.settings.python_graders:
        raise UsageError("grader: python graders are disabled on this server.",
                         hint="Run it with the tunewise library or CLI, or ask the operator to enable them "
                         "(setting python_graders, env TUNEWISE_PYTHON_GRADERS=1).",
                         param="grader.type", code="python_grader_disabled")
    return grader


def _judge_cache(state: State):
    from tunewise.eval.cache import CompletionCache

    with _cache_lock:
        cache = getattr(state, "grader_cache", None)
        if cache is None:
            cache = CompletionCache(state.settings.data_dir / "grader-cache.sqlite")
            state.grader_cache = cache
        return cache


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


@router.post("/fine_tuning/alpha/graders/validate")
def validate_grader(body: ValidateRequest, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _check(state, body.grader)
    return {"grader": body.grader}


@router.post("/fine_tuning/alpha/graders/run")
def run_grader(body: RunRequest, state: StateDep, principal: PrincipalDep,
               authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    # A plain ``def``: FastAPI runs it in a worker thread, so a model grader's call back into this server's
    # /v1/chat/completions is served by the event loop meanwhile.
    from tunewise.eval.graders import GradingContext, ModelJudge, grade

    grader = _check(state, body.grader)
    settings = state.settings
    context = GradingContext(allow_python=settings.python_graders,
                             python_timeout_s=settings.python_grader_timeout_s)
    judge = None
    if grader.uses_model:
        if settings.grader_base_url:
            base_url, key = settings.grader_base_url, os.environ.get(settings.grader_api_key_env)
        else:
            host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            base_url, key = f"http://{host}:{settings.port}/v1", _bearer(authorization)
        judge = ModelJudge(base_url, key, cache=_judge_cache(state))
        context.judge = judge
    try:
        result = grade(grader, body.model_sample, body.item or {}, context)
    finally:
        if judge is not None:
            judge.close()
    return result.to_openai()

"""``/v1/dashboard/...``: read-only endpoints the dashboard needs beyond OpenAI's API.

Every endpoint takes the same ``Authorization: Bearer`` key as ``/v1`` and sees only what that key's project sees
through ``/v1`` (another project's file answers 404 here too). None of them changes anything: they run the
library (validator, cost, catalog) over data the key can already read, or over a body it sends. Evaluation
reports are the one thing shared by every project of a server: they are files its operator put in
``DATA_DIR/reports/``, not objects of a project.

==============================================  =====================================================================
``GET  /v1/dashboard/whoami``                   the key's project and key id (the page shows whose data it is)
``GET  /v1/dashboard/catalog``                  models with context limits and prices, and the server's alias table
``POST /v1/dashboard/validate?model=``          the validator's report on a JSONL body (nothing stored), with the
                                                text of every line a finding names
``GET  /v1/dashboard/files/{id}/validation``    the same report for an uploaded file
``GET  /v1/dashboard/files/{id}/estimate``      training cost estimate (``model``, ``n_epochs``: ``auto`` or 1-25,
                                                ``method``: supervised, dpo or reinforcement); for a local model
                                                also what OpenAI would charge (``openai``)
``GET  /v1/dashboard/breakeven``                monthly costs and break-even (``tunewise.cost.breakeven``'s arguments)
``GET  /v1/dashboard/reports``                  evaluation reports under the server's ``DATA_DIR/reports/``
``GET  /v1/dashboard/reports/{name}``           one report: its HTML, Markdown and metrics
==============================================  =====================================================================
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from tunewise.errors import NotFound, TunewiseError, UsageError
from tunewise.serve.deps import PrincipalDep, StateDep
from tunewise.serve.errors import ApiError

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])

MAX_LINE_EXCERPT = 400  # characters of a line quoted beside its finding (a line can be megabytes)
MAX_QUOTED_LINES = 200  # lines quoted per report; the findings themselves are all returned
REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # one directory name, never a path
REPORT_FILES = ("report.html", "report.md", "metrics.json", "decision.json")
MAX_REPORT_BYTES = 32 * 1024 * 1024  # a report.html embeds its plots; larger than this is not one of ours

# Validation and estimates tokenize whole files: CPU-bound work that gains nothing from running side by side,
# and the first call loads a tokenizer (transformers' lazy imports are not safe to race from two threads).
_HEAVY = threading.Lock()


# -- helpers -------------------------------------------------------------------------------------------------

def _stored_file(state, project: str, file_id: str) -> dict[str, Any]:
    # The server's own lookup, so the dashboard can never see a file /v1/files would hide.
    from tunewise.serve.routes.files import get_file

    return get_file(state, project, file_id)


def _quote_lines(path: Path, wanted: set[int]) -> dict[str, str]:
    """The text of the 1-based lines in ``wanted`` (trimmed), read in one streaming pass."""
    out: dict[str, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number in wanted:
                text = raw[: MAX_LINE_EXCERPT * 4].decode("utf-8", "replace").rstrip("\r\n")
                out[str(number)] = text[:MAX_LINE_EXCERPT] + ("…" if len(text) > MAX_LINE_EXCERPT else "")
            if number >= last:
                break
    return out


def _report(path: Path, model: str | None) -> dict[str, Any]:
    """The validator's report as JSON, with the quoted lines, minus the per-example token list (large)."""
    from tunewise.data import validate

    with _HEAVY:
        report = validate(path, model=model or None)
    body = report.to_dict()
    body.pop("path", None)  # where the server keeps the file is none of the page's business
    stats = body.get("stats")
    if isinstance(stats, dict):
        stats.pop("example_tokens", None)
    wanted: set[int] = set()
    for finding in report.findings:
        for line in [finding.line, *(getattr(finding, "lines", None) or [])]:
            if isinstance(line, int) and len(wanted) < MAX_QUOTED_LINES:
                wanted.add(line)
    body["lines"] = _quote_lines(path, wanted)
    body["ok"] = bool(report.ok)
    body["n_errors"] = len(report.errors)
    body["n_warnings"] = len(report.warnings)
    return body


def _reports_dir(state) -> Path:
    return Path(state.settings.data_dir) / "reports"


def _report_dir(state, name: str) -> Path:
    if not REPORT_NAME.match(name):
        raise NotFound(f"No report named {name!r}.", param="name", code="report_not_found")
    path = _reports_dir(state) / name
    if not path.is_dir() or not any((path / f).is_file() for f in REPORT_FILES):
        # Named relative to the data directory: the server's file system layout stays its own.
        raise NotFound(f"No report named {name!r} in reports/ of the server's data directory.", param="name",
                       code="report_not_found", hint="GET /v1/dashboard/reports lists the reports.")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _verdict(decision: Any) -> str | None:
    if isinstance(decision, dict):
        for key in ("verdict", "decision", "recommendation"):
            if isinstance(decision.get(key), str):
                return decision[key]
    return None


# -- endpoints -----------------------------------------------------------------------------------------------

@router.get("/whoami")
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    return {"object": "dashboard.whoami", "project": principal.project, "key_id": principal.key_id}


@router.get("/catalog")
def catalog(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    from dataclasses import asdict

    from tunewise.catalog import load_catalog
    from tunewise.data import DEFAULT_MODEL

    cat = load_catalog()
    models = [asdict(cat.models[name]) for name in cat.names()]
    default = cat.find(DEFAULT_MODEL)
    # default_model: the guide's model, which the calculator and the new-job form open on (what the CLI assumes).
    return {"object": "list", "data": models, "checked": cat.checked,
            "aliases": state.settings.alias_table(), "default_local_model": state.settings.default_local_model,
            "default_model": default.name if default else None}


def _catalog_model(model: str | None, param: str = "model") -> str | None:
    """``model`` when it is a catalog or registry model name; never a path on the server (the page picks from
    the catalog, and a path would let a key probe the server's directories and load tokenizers from them)."""
    if model is None or model == "":
        return None
    from tunewise import models as registry
    from tunewise.catalog import load_catalog
    from tunewise.serve.limits import check_model_name

    check_model_name(model, param)
    if load_catalog().find(model) is not None or model in registry.REGISTRY:
        return model
    raise UsageError(f"Unknown model {model[:80]!r}: only catalog and registry model names are accepted here.",
                     param=param, hint="GET /v1/dashboard/catalog lists them.")


@router.post("/validate")
async def validate_body(request: Request, state: StateDep, principal: PrincipalDep,
                        model: str | None = None) -> dict[str, Any]:
    # A body over max_request_bytes is refused (413) by the server's middleware before it gets here; this
    # check covers a body sent without Content-Length.
    limit = state.settings.max_request_bytes
    with tempfile.TemporaryDirectory(prefix="tunewise-validate-") as tmp:
        path = Path(tmp) / "upload.jsonl"
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"Request body exceeds the limit of {limit} bytes (setting "
                                   "max_request_bytes, env TUNEWISE_MAX_REQUEST_BYTES).", code="request_too_large",
                                   hint="Upload the file through /v1/files: its refusal lists the first findings.")
                out.write(chunk)
        if size == 0:
            raise UsageError("The body is empty: send the JSONL file's bytes as the request body.", param="file")
        return await run_in_threadpool(_report, path, _catalog_model(model))


@router.get("/files/{file_id}/validation")
def file_validation(file_id: str, state: StateDep, principal: PrincipalDep,
                    model: str | None = None) -> dict[str, Any]:
    row = _stored_file(state, principal.project, file_id)
    body = _report(Path(row["path"]), _catalog_model(model))
    body["file_id"] = file_id
    body["filename"] = row["filename"]
    return body


METHODS = ("supervised", "dpo", "reinforcement")


@router.get("/files/{file_id}/estimate")
def file_estimate(file_id: str, state: StateDep, principal: PrincipalDep, model: str,
                  n_epochs: str = "auto", method: str = "supervised") -> dict[str, Any]:
    from tunewise.cost import estimate_training

    _catalog_model(model)
    if method not in METHODS:
        raise UsageError(f"Unknown method {method[:40]!r}.", param="method", hint="Use " + ", ".join(METHODS) + ".")
    row = _stored_file(state, principal.project, file_id)
    if method == "reinforcement":
        body = _reinforcement_estimate(Path(row["path"]), model)
        body["local_model"] = _local_model(state, model)
        return body
    epochs: int | str = n_epochs if n_epochs == "auto" else _int(n_epochs, "n_epochs")
    with _HEAVY, _own_path_hidden(row):
        body = estimate_training(row["path"], model, epochs=epochs, method=method).to_dict()
    body["method"] = method
    # What this server really trains for that name: an OpenAI name is priced at OpenAI's rate but trained
    # here on its local stand-in.
    body["local_model"] = _local_model(state, model)
    # A local model costs nothing here; say what fine-tuning the OpenAI model it stands in for would cost there.
    body["openai"] = None
    if body["provider"] == "local":
        openai_name = _openai_counterpart(state, body["model"])
        if openai_name:
            with _HEAVY, _own_path_hidden(row):
                there = estimate_training(row["path"], openai_name, epochs=epochs, method=method)
            body["openai"] = {"model": there.model, "billed_tokens": there.billed_tokens,
                              "n_epochs": there.n_epochs, "price_per_1m": there.price_per_1m,
                              "cost_usd": there.cost_usd}
    return body


@contextmanager
def _own_path_hidden(row: dict[str, Any]):
    """A library error about a stored file names it by its filename, not by where the server keeps it (the
    validator's hint quotes the path it read)."""
    try:
        yield
    except TunewiseError as exc:
        where = str(row["path"])
        exc.message = exc.message.replace(where, row["filename"])
        exc.hint = exc.hint.replace(where, row["filename"]) if exc.hint else exc.hint
        exc.args = (exc.message,)
        raise


def _local_model(state, model: str) -> str | None:
    """What this server really trains for ``model``: an OpenAI name is priced at OpenAI's rate but trained here
    on its local stand-in."""
    from tunewise.serve.naming import base_local_model

    try:
        return base_local_model(state.settings, model) if not model.startswith("ft:") else None
    except TunewiseError:  # a strict server refuses unknown names; the estimate is still worth showing
        return None


def _reinforcement_estimate(path: Path, model: str) -> dict[str, Any]:
    """What ``tunewise estimate FILE --method reinforcement`` says: the file checked as reinforcement prompts,
    and no price (OpenAI bills it by training time, ``tunewise.cost.RFT_BILLING``)."""
    from tunewise.cost import RFT_BILLING, get_model
    from tunewise.data import validate

    with _HEAVY:
        report = validate(path, model=model, data_format="reinforcement")
    stats = report.stats
    return {"method": "reinforcement", "model": stats.model, "provider": get_model(model).provider,
            "n_examples": stats.n_examples,
            "prompt_tokens_per_epoch": stats.billed_tokens_per_epoch, "cost_usd": None, "billing": RFT_BILLING,
            "n_errors": len(report.errors), "openai": None}


def _openai_counterpart(state, local_model: str) -> str | None:
    """The priced OpenAI model this server trains on ``local_model`` (first in its alias table), else the
    guide's model; None where the catalog has neither."""
    from tunewise.catalog import load_catalog
    from tunewise.data import DEFAULT_MODEL

    cat = load_catalog()
    names = [name for name, local in state.settings.alias_table().items() if local == local_model]
    for name in [*names, DEFAULT_MODEL]:
        info = cat.find(name)
        if info is not None and info.provider != "local":
            return info.name
    return None


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be a whole number or 'auto', not {value!r}.", param=name) from None


MAX_QUANTITY = 1e15  # tokens, calls or dollars: far past any real workload, far from overflowing a float
MAX_HORIZON_MONTHS = 1200
MIN_HORIZON_MONTHS = 1 / 31  # a day


@router.get("/breakeven")
def breakeven(principal: PrincipalDep, model: str,
              prompt_tokens: Annotated[float, Query(ge=0, le=MAX_QUANTITY)],
              ft_prompt_tokens: Annotated[float, Query(ge=0, le=MAX_QUANTITY)],
              output_tokens: Annotated[float, Query(ge=0, le=MAX_QUANTITY)],
              calls_per_month: Annotated[float, Query(ge=0, le=MAX_QUANTITY)],
              training_cost: Annotated[float | None, Query(ge=0, le=MAX_QUANTITY)] = None,
              training_tokens: Annotated[int | None, Query(ge=0, le=int(MAX_QUANTITY))] = None,
              horizon_months: Annotated[float, Query(ge=MIN_HORIZON_MONTHS, le=MAX_HORIZON_MONTHS)] = 12
              ) -> dict[str, Any]:
    from tunewise.cost import breakeven as compute

    _catalog_model(model)

    return compute(model, prompt_tokens, ft_prompt_tokens, output_tokens, calls_per_month,
                   training_cost=training_cost, training_tokens=training_tokens,
                   horizon_months=horizon_months).to_dict()


@router.get("/reports")
def list_reports(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    root = _reports_dir(state)
    data = []
    if root.is_dir():
        for path in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            if not path.is_dir() or not REPORT_NAME.match(path.name):
                continue
            present = [f for f in REPORT_FILES if (path / f).is_file()]
            if not present:
                continue
            decision = _read_json(path / "decision.json") if "decision.json" in present else None
            data.append({"object": "dashboard.report", "name": path.name, "files": present,
                         "created_at": int(path.stat().st_mtime), "verdict": _verdict(decision),
                         "summary": decision.get("summary") if isinstance(decision, dict) else None})
    # The folder is named relative to the data directory: the server's file system layout stays its own.
    return {"object": "list", "data": data, "has_more": False, "directory": "reports/ in the server's data directory"}


@router.get("/reports/{name}")
def get_report(name: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    path = _report_dir(state, name)
    body: dict[str, Any] = {"object": "dashboard.report", "name": name, "created_at": int(path.stat().st_mtime)}
    for key, filename in (("html", "report.html"), ("markdown", "report.md")):
        file = path / filename
        body[key] = (file.read_text(encoding="utf-8", errors="replace")
                     if file.is_file() and file.stat().st_size <= MAX_REPORT_BYTES else None)
    body["metrics"] = _read_json(path / "metrics.json")
    body["decision"] = _read_json(path / "decision.json")
    body["verdict"] = _verdict(body["decision"])
    return body

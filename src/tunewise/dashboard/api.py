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
``GET  /v1/dashboard/files/{id}/estimate``      training cost estimate (``model``, ``n_epochs``: ``auto`` or 1-25);
                                                for a local model also what OpenAI would charge (``openai``)
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
        raise NotFound(f"No report named {name!r} in {_reports_dir(state)}.", param="name",
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
        return await run_in_threadpool(_report, path, model)


@router.get("/files/{file_id}/validation")
def file_validation(file_id: str, state: StateDep, principal: PrincipalDep,
                    model: str | None = None) -> dict[str, Any]:
    row = _stored_file(state, principal.project, file_id)
    body = _report(Path(row["path"]), model)
    body["file_id"] = file_id
    body["filename"] = row["filename"]
    return body


@router.get("/files/{file_id}/estimate")
def file_estimate(file_id: str, state: StateDep, principal: PrincipalDep, model: str,
                  n_epochs: str = "auto") -> dict[str, Any]:
    from tunewise.cost import estimate_training

    row = _stored_file(state, principal.project, file_id)
    epochs: int | str = n_epochs if n_epochs == "auto" else _int(n_epochs, "n_epochs")
    with _HEAVY:
        body = estimate_training(row["path"], model, epochs=epochs).to_dict()
    # What this server really trains for that name: an OpenAI name is priced at OpenAI's rate but trained
    # here on its local stand-in.
    try:
        from tunewise.serve.naming import base_local_model

        body["local_model"] = base_local_model(state.settings, model) if not model.startswith("ft:") else None
    except TunewiseError:  # a strict server refuses unknown names; the estimate is still worth showing
        body["local_model"] = None
    # A local model costs nothing here; say what fine-tuning the OpenAI model it stands in for would cost there.
    body["openai"] = None
    if body["provider"] == "local":
        openai_name = _openai_counterpart(state, body["model"])
        if openai_name:
            with _HEAVY:
                there = estimate_training(row["path"], openai_name, epochs=epochs)
            body["openai"] = {"model": there.model, "billed_tokens": there.billed_tokens,
                              "n_epochs": there.n_epochs, "price_per_1m": there.price_per_1m,
                              "cost_usd": there.cost_usd}
    return body


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


@router.get("/breakeven")
def breakeven(principal: PrincipalDep, model: str,
              prompt_tokens: Annotated[float, Query(ge=0)],
              ft_prompt_tokens: Annotated[float, Query(ge=0)],
              output_tokens: Annotated[float, Query(ge=0)],
              calls_per_month: Annotated[float, Query(ge=0)],
              training_cost: Annotated[float | None, Query(ge=0)] = None,
              training_tokens: Annotated[int | None, Query(ge=0)] = None,
              horizon_months: Annotated[float, Query(gt=0)] = 12) -> dict[str, Any]:
    from tunewise.cost import breakeven as compute

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

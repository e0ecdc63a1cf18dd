"""Files and fine-tuning jobs over the official ``openai`` SDK: the same calls drive ``tunewise serve`` and OpenAI.

Where to connect (``resolve_target``): ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` when set, else the local
server's ``$TUNEWISE_HOME/credentials.json`` (``{"base_url", "api_key"}``, written by ``tunewise serve``), else
OpenAI itself when only ``OPENAI_API_KEY`` is set. Every SDK error (``openai.APIStatusError`` subclasses,
connection errors, timeouts) becomes a ``tunewise.errors`` error whose message is one clear line.

The library never prints: ``watch_job`` yields ``Progress`` snapshots and the CLI draws them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openai

from tunewise import paths
from tunewise.errors import Conflict, DataError, NotFound, TunewiseError, UsageError

OPENAI_HOST = "api.openai.com"
OPENAI_BASE_URL = "https://api.openai.com/v1"
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
DEFAULT_TIMEOUT_S = 60.0
"""Per-request timeout; uploads of large files are streamed and may take longer on slow links."""
LOCAL_CONNECT_RETRIES = 4
"""Connection attempts retried against a server on this machine (0 + 0.5 + 1 + 2 s of back-off): it may be starting."""
WATCH_INTERVAL_S = 2.0
"""How often ``watch_job`` polls the job and its events."""


class ServiceError(TunewiseError):
    """The service answered with an error that has no closer ``tunewise.errors`` class (5xx, 429, 403, ...)."""


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str = field(repr=False)
    source: str
    """Where the settings came from: ``arguments``, ``environment``, ``credentials`` (the file's path)."""
    note: str | None = None
    """Something the user should be told about the choice (an environment key that was not used, ...)."""

    @property
    def is_local(self) -> bool:
        """True when the service runs on this machine (a loopback address)."""
        host = urlparse(self.base_url).hostname or ""
        return host in ("localhost", "::1") or host.startswith("127.")

    @property
    def is_openai(self) -> bool:
        """True when this is OpenAI itself (prices apply), not a ``tunewise serve``."""
        return (urlparse(self.base_url).hostname or "") == OPENAI_HOST


def resolve_target(base_url: str | None = None, api_key: str | None = None) -> Target:
    """Which service to talk to, and with which key (arguments, then environment, then credentials file)."""
    env_url = os.environ.get("OPENAI_BASE_URL") or None
    env_key = os.environ.get("OPENAI_API_KEY") or None
    url, key, source = base_url, api_key, "arguments"
    note = None
    if url is None and env_url:
        url, source = env_url, "environment"
    if url is None:
        creds = paths.read_credentials()
        if creds is not None:
            # The credentials file pairs the local server with its own key: a global OPENAI_API_KEY is
            # meant for OpenAI, so it does not override this one.
            url, source = creds["base_url"], str(paths.credentials_file())
            if key is None and env_key and env_key != creds["api_key"]:
                note = (f"using the local server {creds['base_url']} with its saved key; OPENAI_API_KEY is set "
                        "but is not used without OPENAI_BASE_URL (pass --api-key, or set OPENAI_BASE_URL "
                        "to the service that key belongs to)")
            key = key or creds["api_key"]
        elif key or env_key:
            url, source = OPENAI_BASE_URL, "environment"
        else:
            raise UsageError("No service to talk to: no OPENAI_BASE_URL and no local server credentials.",
                             hint="Start one with `tunewise serve`, or set OPENAI_BASE_URL and OPENAI_API_KEY.")
    key = key or env_key
    if key is None:
        creds = paths.read_credentials()
        if creds is not None and creds["base_url"].rstrip("/") == url.rstrip("/"):
            key = creds["api_key"]
    if key is None:
        raise UsageError(f"No API key for {url}.",
                         hint="Set OPENAI_API_KEY (a local server prints its key on first start; "
                              "`tunewise keys create` makes another).")
    return Target(base_url=url.rstrip("/"), api_key=key, source=source, note=note)


def _error_text(exc: openai.APIStatusError) -> tuple[str, str | None, str | None]:
    body = exc.body if isinstance(exc.body, dict) else {}
    if isinstance(body.get("error"), dict):
        body = body["error"]
    message = body.get("message") or exc.message or exc.response.reason_phrase
    return str(message).strip(), body.get("code"), body.get("param")


@contextmanager
def sdk_errors(target: Target):
    """Turn SDK exceptions into one-line ``tunewise.errors`` errors (never a traceback at the CLI)."""
    try:
        yield
    except openai.APIStatusError as exc:
        message, code, param = _error_text(exc)
        status = exc.status_code
        text = f"{target.base_url} answered {status}: {message}"
        if status == 401:
            raise UsageError(text, hint="Check OPENAI_API_KEY (or the key in "
                                        f"{paths.credentials_file()}).", code=code, param=param) from None
        if status == 404:
            raise NotFound(text, code=code, param=param) from None
        if status == 409:
            raise Conflict(text, code=code, param=param) from None
        if status in (400, 413, 422):
            raise DataError(text, code=code, param=param) from None
        err = ServiceError(text, code=code, param=param)
        err.status = status
        raise err from None
    except openai.APITimeoutError:
        raise ServiceError(f"{target.base_url} did not answer in time.",
                           hint="Check the server is running and not overloaded, then retry.") from None
    except openai.APIConnectionError as exc:
        hint = ("Start the local server with `tunewise serve`, or point OPENAI_BASE_URL at a running service."
                if target.is_local else
                "Check the address (OPENAI_BASE_URL or --base-url) and the network; the service may be down.")
        raise ServiceError(f"Cannot reach {target.base_url} ({exc.__cause__ or exc}).", hint=hint) from None


def _plain(obj: Any) -> Any:
    """An SDK model as plain JSON-able data."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=False)
    return obj


def _read_schema(schema: dict | str | os.PathLike) -> dict:
    """A JSON Schema given as a dict or a path to a JSON file (the service checks that it is a valid schema)."""
    if isinstance(schema, dict):
        return schema
    path = Path(schema)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read the eval schema {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise UsageError(f"The eval schema {path} is not JSON: {exc}.",
                         hint="Give a JSON Schema file, e.g. {\"type\": \"object\", ...}.") from None
    if not isinstance(value, dict):
        raise UsageError(f"The eval schema {path} must hold a JSON object (a JSON Schema).")
    return value


METHODS = ("supervised", "dpo", "reinforcement")
"""OpenAI's fine-tuning methods (``method.type`` of a job)."""


def check_job_settings(hyperparameters: dict[str, Any], suffix: str | None = None,
                       method: str = "supervised") -> None:
    """What the service would refuse in a job's settings, refused here first (before any upload)."""
    from tunewise.hyperparameters import (
        DPO_RANGES,
        HYPERPARAMETER_RANGES,
        REASONING_EFFORTS,
        REINFORCEMENT_RANGES,
        check_hyperparameter,
    )

    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, not {method!r}.", param="method")
    ranges = {"dpo": DPO_RANGES, "reinforcement": REINFORCEMENT_RANGES}.get(method, HYPERPARAMETER_RANGES)
    for name, value in hyperparameters.items():
        if name == "reasoning_effort" and method == "reinforcement":
            if value is not None and value not in REASONING_EFFORTS:
                raise UsageError(f"Invalid reasoning_effort {value!r}: expected one of "
                                 f"{', '.join(REASONING_EFFORTS)}.", param="hyperparameters.reasoning_effort")
            continue
        check_hyperparameter(name, value, ranges)
    if suffix is not None and len(suffix) > 64:
        raise UsageError(f"The suffix is {len(suffix)} characters; at most 64.", param="suffix")


def read_grader(grader: dict | str | os.PathLike) -> dict:
    """A reinforcement job's grader, given as an OpenAI grader object or a path to a JSON or YAML file holding
    one, checked as the service would check it (``tunewise.eval.graders``: the field at fault is named).

    Model graders (``score_model``, or a ``label_model`` inside a ``multi``) are taken: OpenAI runs them, and a
    ``tunewise serve`` asks its ``grader_base_url`` (empty: itself) as the judge while the job trains.
    """
    from tunewise.eval.graders import load_graders, parse_grader

    if isinstance(grader, dict):
        parsed = parse_grader(grader, "grader")
    else:
        graders = load_graders(grader)
        if len(graders) != 1:
            raise UsageError(f"{grader} holds {len(graders)} graders; reinforcement fine-tuning takes one.",
                             hint="Combine them in one multi grader (its calculate_output weighs them).",
                             param="grader")
        parsed = graders[0]
    if parsed.type == "label_model":
        raise UsageError("grader.type: a label_model grader cannot be a fine-tuning grader on its own.",
                         hint="Use score_model, or put the label_model inside a multi grader.",
                         param="grader.type", code="invalid_grader")
    return parsed.to_dict()


def _grader_without_rft() -> UsageError:
    return UsageError("A grader is for reinforcement fine-tuning.", param="grader",
                      hint="Use method 'reinforcement' (--method reinforcement), or leave the grader out.")


@dataclass
class JobPlan:
    """What ``create_job`` will do, for the caller to show before it happens."""

    training_file: str
    """A local path to upload, or a file id already on the service."""
    model: str
    target: Target
    report: Any = None
    """The local file's ``tunewise.data.Report`` (None for a file id)."""
    estimate: Any = None
    """``tunewise.cost.TrainingEstimate`` (cost 0 for a local service); None when it could not be priced."""
    notes: list[str] = field(default_factory=list)
    method: str = "supervised"
    billing: str | None = None
    """How OpenAI bills the job when it is not by tokens (reinforcement: by training time); then no estimate."""
    grader: dict | None = None
    """A reinforcement job's grader, checked."""

    def to_dict(self) -> dict[str, Any]:
        return {"training_file": self.training_file, "model": self.model, "base_url": self.target.base_url,
                "method": self.method,
                "estimate": self.estimate.to_dict() if self.estimate is not None else None,
                "billing": self.billing, "grader": self.grader,
                "report": self.report.to_dict() if self.report is not None else None,
                "notes": self.notes}


@dataclass
class Progress:
    """One snapshot of a watched job."""

    job: dict
    """The job as the service returned it."""
    status: str
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    messages: list[str] = field(default_factory=list)
    """New non-metric event messages since the last snapshot, oldest first."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _retrying_http_client():
    """The SDK's own HTTP client, with a transport that retries refused connections (the SDK's HTTP library is
    httpx or its fork httpx2 depending on the SDK's version: the transport comes from the same one)."""
    import importlib

    root = next(c.__module__ for c in openai.DefaultHttpxClient.__mro__ if not c.__module__.startswith("openai"))
    library = importlib.import_module(root.split(".")[0])
    return openai.DefaultHttpxClient(transport=library.HTTPTransport(retries=LOCAL_CONNECT_RETRIES))


class Client:
    """Files and fine-tuning jobs on one service (``tunewise serve`` or OpenAI), through the official SDK."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = resolve_target(base_url, api_key)
        # A local server either answers or is down: its errors are not retried, they only delay the clear one.
        # But one started a moment ago (`tunewise serve &` and the next command) may not listen yet, so a refused
        # connection is tried again a few times over about 3.5 s (httpx retries connection failures only).
        http_client = None
        if self.target.is_local:
            http_client = _retrying_http_client()
        self.sdk = openai.OpenAI(base_url=self.target.base_url, api_key=self.target.api_key, timeout=timeout,
                                 max_retries=2 if self.target.is_openai else 0, http_client=http_client)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with sdk_errors(self.target):
            return fn(*args, **kwargs)

    # --- files ----------------------------------------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike, purpose: str = "fine-tune") -> dict:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path} is not a file.")
        with open(path, "rb") as fh:
            return _plain(self._call(self.sdk.files.create, file=fh, purpose=purpose))

    def list_files(self, purpose: str | None = None, limit: int | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {}
        if purpose:
            kwargs["purpose"] = purpose
        if limit:
            kwargs["limit"] = limit
        with sdk_errors(self.target):
            page = self.sdk.files.list(**kwargs)
            # With a limit, one page is the answer; without, follow the cursor to the end.
            items = page.data if limit else list(page)
        return [_plain(f) for f in items]

    def get_file(self, file_id: str) -> dict:
        return _plain(self._call(self.sdk.files.retrieve, file_id))

    def delete_file(self, file_id: str) -> dict:
        return _plain(self._call(self.sdk.files.delete, file_id))

    # --- jobs -----------------------------------------------------------------------------------------------

    def plan_job(self, training_file: str, model: str, n_epochs: int | str | None = None,
                 prices: str | os.PathLike | None = None, validation_file: str | None = None,
                 method: str = "supervised", grader: dict | str | os.PathLike | None = None) -> JobPlan:
        """Validate a local training file and price it; raise ``DataError`` if it has errors.

        OpenAI prices apply when the service is OpenAI; a local service trains for free (cost 0).
        A file id (not a local path) is neither validated nor priced here: the service checks it. A local
        ``validation_file`` is validated too (it is not billed). ``method="reinforcement"`` takes a ``grader``
        (an OpenAI grader object or a JSON/YAML file): the files are checked as reinforcement prompts with the
        fields it reads, and nothing is priced (``billing`` says how OpenAI bills it: by training time).
        """
        plan = JobPlan(training_file=training_file, model=model, target=self.target, method=method)
        check_job_settings({"n_epochs": n_epochs} if n_epochs is not None else {}, method=method)
        if method == "reinforcement":
            from tunewise.cost import RFT_BILLING

            plan.grader = self._grader(grader)
            plan.billing = RFT_BILLING
        elif grader is not None:
            raise _grader_without_rft()
        if not Path(training_file).is_file():
            if not str(training_file).startswith("file-"):
                raise UsageError(f"{training_file} is neither a local file nor a file id (file-...).")
            plan.notes.append(f"{training_file} is already uploaded: the service validates it.")
            return plan
        from tunewise import cost
        from tunewise.catalog import load_catalog
        from tunewise.data import validate

        info = load_catalog(prices).find(model)
        # DPO's data: OpenAI's preference format; reinforcement's: prompts with the fields the grader reads.
        data_format = {"dpo": "preference", "reinforcement": "reinforcement"}.get(method)
        plan.report = validate(training_file, model=info.name if info else None, prices=prices,
                               data_format=data_format, grader=plan.grader)
        plan.report.raise_for_errors()
        if validation_file and Path(validation_file).is_file():
            validate(validation_file, model=info.name if info else None, prices=prices,
                     data_format=data_format, grader=plan.grader).raise_for_errors()
        if method == "reinforcement":
            if not self.target.is_openai:
                plan.notes.append(f"{self.target.base_url} is a local service: training costs nothing.")
            if info is None:
                plan.notes.append(f"{model} is not in the catalog: validated with default limits.")
            return plan
        if info is None:
            plan.notes.append(f"{model} is not in the catalog: validated with default limits, not priced.")
            return plan
        estimate = cost.estimate_training(plan.report, info.name, epochs=n_epochs or "auto", prices=prices,
                                          method=method)
        if not self.target.is_openai and estimate.cost_usd:
            plan.notes.append(f"{self.target.base_url} is a local service: training costs nothing "
                              f"(OpenAI would charge ${estimate.cost_usd:.4f} for {estimate.billed_tokens:,} "
                              "tokens).")
            estimate = replace(estimate, cost_usd=0.0, price_per_1m=0.0)
        plan.estimate = estimate
        return plan

    def _grader(self, grader: dict | str | os.PathLike | None) -> dict:
        """A reinforcement job's grader, required and checked."""
        if grader is None:
            raise UsageError("A reinforcement job needs a grader: the grader that scores each sampled answer.",
                             hint="Write one OpenAI grader to a JSON file (see docs/graders.md) and pass "
                             "--grader FILE (grader=... in the library).", param="grader")
        return read_grader(grader)

    def _file_id(self, file_or_id: str, purpose: str = "fine-tune") -> str:
        if Path(file_or_id).is_file():
            return self.upload_file(file_or_id, purpose=purpose)["id"]
        if str(file_or_id).startswith("file-"):
            return file_or_id
        raise UsageError(f"{file_or_id} is neither a local file nor a file id (file-...).")

    def create_job(self, training_file: str, model: str, *, validation_file: str | None = None,
                   n_epochs: int | str | None = None, batch_size: int | str | None = None,
                   learning_rate_multiplier: float | str | None = None, suffix: str | None = None,
                   seed: int | None = None, metadata: dict[str, str] | None = None,
                   eval_file: str | None = None, eval_schema: dict | str | os.PathLike | None = None,
                   eval_limit: int | None = None, eval_max_tokens: int | None = None,
                   method: str = "supervised", beta: float | str | None = None,
                   grader: dict | str | os.PathLike | None = None,
                   compute_multiplier: float | str | None = None, eval_interval: int | str | None = None,
                   eval_samples: int | str | None = None, reasoning_effort: str | None = None) -> dict:
        """Upload local files (ids are used as they are) and create a fine-tuning job: supervised, with
        ``method="dpo"`` a DPO job on preference data (``beta``: DPO's, a number in (0, 2] or 'auto'), or with
        ``method="reinforcement"`` a reinforcement job: its ``grader`` (an OpenAI grader object or a JSON/YAML
        file holding one) and its own hyperparameters (``compute_multiplier`` in (0, 10], ``eval_interval``,
        ``eval_samples`` 1-64, each a number or 'auto'; ``reasoning_effort`` default/low/medium/high).

        ``eval_file`` (a local chat JSONL file or a file id), ``eval_schema`` (a JSON Schema dict or a path to
        one), ``eval_limit`` and ``eval_max_tokens`` ask ``tunewise serve`` to score each checkpoint on that
        held-out set (its ``eval`` extension; OpenAI rejects or ignores it).
        """
        hyper = {k: v for k, v in (("n_epochs", n_epochs), ("batch_size", batch_size),
                                   ("learning_rate_multiplier", learning_rate_multiplier)) if v is not None}
        if beta is not None:
            if method != "dpo":
                raise UsageError(f"beta is DPO's hyperparameter; a {method} job has none.",
                                 hint="Use method 'dpo', or leave beta out.", param="beta")
            hyper["beta"] = beta
        rft = {k: v for k, v in (("compute_multiplier", compute_multiplier), ("eval_interval", eval_interval),
                                 ("eval_samples", eval_samples), ("reasoning_effort", reasoning_effort))
               if v is not None}
        if rft and method != "reinforcement":
            name = next(iter(rft))
            raise UsageError(f"{name} is a reinforcement fine-tuning hyperparameter; a {method} job has none.",
                             hint=f"Use method 'reinforcement' (with a grader), or leave {name} out.", param=name)
        if grader is not None and method != "reinforcement":
            raise _grader_without_rft()
        hyper.update(rft)
        check_job_settings(hyper, suffix, method)  # before anything is uploaded
        method_body = None
        if method == "dpo":
            method_body = {"type": "dpo", "dpo": {"hyperparameters": hyper}}
        elif method == "reinforcement":
            method_body = {"type": "reinforcement",
                           "reinforcement": {"grader": self._grader(grader), "hyperparameters": hyper}}
        if eval_file is None and (eval_schema is not None or eval_limit is not None or eval_max_tokens is not None):
            raise UsageError("An eval schema, limit or max tokens needs an eval file.",
                             hint="Add --eval-file with held-out chat examples.")
        uploaded: list[str] = []  # deleted again if the job is refused: no orphan uploads
        try:
            return self._create_job(training_file, model, validation_file, hyper, suffix, seed, metadata,
                                    eval_file, eval_schema, eval_limit, eval_max_tokens, uploaded, method_body)
        except BaseException:
            for file_id in uploaded:
                try:
                    self.sdk.files.delete(file_id)
                except Exception:  # the refusal is what the caller needs to see
                    pass
            raise

    def _create_job(self, training_file, model, validation_file, hyper, suffix, seed, metadata, eval_file,
                    eval_schema, eval_limit, eval_max_tokens, uploaded: list[str],
                    method_body: dict[str, Any] | None = None) -> dict:
        def file_id(file_or_id: str, purpose: str = "fine-tune") -> str:
            fid = self._file_id(file_or_id, purpose=purpose)
            if fid != file_or_id:
                uploaded.append(fid)
            return fid

        kwargs: dict[str, Any] = {"model": model, "training_file": file_id(training_file)}
        if validation_file:
            kwargs["validation_file"] = file_id(validation_file)
        if method_body is not None:  # OpenAI takes DPO's and RFT's hyperparameters in `method` only
            kwargs["method"] = method_body
        elif hyper:
            kwargs["hyperparameters"] = hyper
        for key, value in (("suffix", suffix), ("seed", seed), ("metadata", metadata)):
            if value is not None:
                kwargs[key] = value
        if eval_file:
            # Uploaded as `evals`: fine-tune uploads must hold 10+ examples, a held-out set may be smaller.
            spec: dict[str, Any] = {"file": file_id(eval_file, purpose="evals")}
            if eval_schema is not None:
                spec["schema"] = _read_schema(eval_schema)
            for key, value in (("limit", eval_limit), ("max_tokens", eval_max_tokens)):
                if value is not None:
                    spec[key] = value
            # Not an OpenAI parameter: the SDK sends it unchanged in the request body.
            kwargs["extra_body"] = {"eval": spec}
        return _plain(self._call(self.sdk.fine_tuning.jobs.create, **kwargs))

    def list_jobs(self, limit: int | None = None) -> list[dict]:
        with sdk_errors(self.target):
            page = self.sdk.fine_tuning.jobs.list(**({"limit": limit} if limit else {}))
            items = page.data if limit else list(page)
        return [_plain(j) for j in items]

    def get_job(self, job_id: str) -> dict:
        return _plain(self._call(self.sdk.fine_tuning.jobs.retrieve, job_id))

    def list_events(self, job_id: str, limit: int | None = None) -> list[dict]:
        """Events, newest first (as the API returns them)."""
        with sdk_errors(self.target):
            page = self.sdk.fine_tuning.jobs.list_events(job_id, **({"limit": limit} if limit else {}))
            items = page.data if limit else list(page)
        return [_plain(e) for e in items]

    def list_checkpoints(self, job_id: str) -> list[dict]:
        with sdk_errors(self.target):
            items = list(self.sdk.fine_tuning.jobs.checkpoints.list(job_id))
        return [_plain(c) for c in items]

    def cancel_job(self, job_id: str) -> dict:
        return _plain(self._call(self.sdk.fine_tuning.jobs.cancel, job_id))

    def pause_job(self, job_id: str) -> dict:
        return _plain(self._call(self.sdk.fine_tuning.jobs.pause, job_id))

    def resume_job(self, job_id: str) -> dict:
        return _plain(self._call(self.sdk.fine_tuning.jobs.resume, job_id))

    def watch_job(self, job_id: str, interval: float = WATCH_INTERVAL_S,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[Progress]:
        """Poll a job until it ends, yielding a snapshot after each poll (the last one has ``done``)."""
        seen: set[str] = set()
        last = Progress(job={}, status="")
        while True:
            job = self.get_job(job_id)
            new: list[dict] = []
            with sdk_errors(self.target):
                # Newest first: page back only until an event already seen.
                for event in self.sdk.fine_tuning.jobs.list_events(job_id, limit=100):
                    if event.id in seen:
                        break
                    new.append(_plain(event))
            progress = Progress(job=job, status=job.get("status", ""), step=last.step,
                                total_steps=last.total_steps, train_loss=last.train_loss,
                                valid_loss=last.valid_loss)
            for event in reversed(new):
                seen.add(event["id"])
                data = event.get("data") or {}
                if event.get("type") == "metrics" and isinstance(data, dict):
                    progress.step = data.get("step", progress.step)
                    progress.total_steps = data.get("total_steps", progress.total_steps)
                    progress.train_loss = data.get("train_loss", progress.train_loss)
                    if data.get("valid_loss") is not None:
                        progress.valid_loss = data["valid_loss"]
                else:
                    progress.messages.append(event.get("message", ""))
            yield progress
            if progress.done:
                return
            last = progress
            sleep(interval)

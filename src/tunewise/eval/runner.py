"""The runner: every held-out example through every candidate, over the official ``openai`` SDK.

Requests run concurrently (a thread pool), each retried on transient errors (the SDK's own retries, then an
exponential backoff of ours on 429, 5xx and connection errors), and each successful answer is cached in SQLite
so a rerun only pays for what changed. Results land in an output directory:

- ``results.jsonl``: one row per (candidate, example): the example's id, the prompt sent, the answer, the
  reference, every metric, latency, tokens, cost and error, so every failure can be read. A call that still
  failed after the retries is ``"failed": true`` with every metric ``null``: it is not an answer, so it is
  left out of the candidate's rates and of every paired comparison (and counted, in ``n_failed``);
- ``metrics.json``: per-candidate summaries with 95% intervals;
- ``candidates.json`` and ``config.json``: the resolved candidates (keys redacted) and run settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunewise.catalog import load_catalog
from tunewise.errors import DataError, NotFound, TunewiseError, UsageError
from tunewise.eval import metrics as M
from tunewise.eval.cache import CompletionCache, cache_key
from tunewise.eval.candidates import Candidate, check_unique, resolve_endpoint

DEFAULT_CONCURRENCY = 4
SDK_MAX_RETRIES = 2
"""Retries the SDK makes itself (it honours ``Retry-After``)."""
BACKOFF_RETRIES = 3
"""Our retries on top, for a transient error the SDK gave up on."""
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
REQUEST_TIMEOUT_S = 600.0
GRADER_PREFIX = "grader:"
"""A grader's reward in a results row is under ``grader:NAME``."""


# ---------------------------------------------------------------- examples and prompts

@dataclass(frozen=True)
class Example:
    line: int
    """Line number in the test file (1-based)."""
    prompt: list[dict]
    """The messages before the reference answer, as written in the file."""
    reference: str
    """The last assistant message: the answer the candidates are scored against."""
    item: dict = field(default_factory=dict, compare=False, hash=False)
    """The example's row as graders see it (``{{ item.* }}``): the JSONL object's keys, plus ``reference``."""
    tools: list | None = field(default=None, compare=False, hash=False)
    """The example's ``tools``: every candidate is given them."""
    reference_calls: list | None = field(default=None, compare=False, hash=False)
    """When the reference answer is a tool call: its calls (``metrics.canonical_calls``); ``reference`` is then
    their JSON."""

    @property
    def id(self) -> str:
        """A stable id of the example (its prompt and reference): candidates are paired by it."""
        return example_id(self.prompt, self.reference)


def example_id(prompt: list[dict], reference: str) -> str:
    blob = json.dumps([prompt, reference], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_examples(path: str | os.PathLike, limit: int | None = None) -> list[Example]:
    """Held-out examples from chat JSONL; the reference is each example's last assistant message."""
    from tunewise.data.reading import text_lines

    path = Path(path)
    examples: list[Example] = []
    for n, line in text_lines(path, "Test file", "Pass a held-out chat JSONL file."):
        try:
            messages = json.loads(line)["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}, line {n}: not a chat example ({{\"messages\": [...]}}).",
                            hint=f"Check it with `tunewise validate {path}`.") from None
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        calls = messages[last].get("tool_calls") if last is not None else None
        if last is None or not (isinstance(messages[last].get("content"), str)
                                or (isinstance(calls, list) and calls)):
            raise DataError(f"{path}, line {n}: no assistant message to use as the reference answer.",
                            hint="Each held-out example ends with the expected assistant answer (or tool calls).")
        prompt = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last]]
        row = json.loads(line)
        tools = row.get("tools") if isinstance(row.get("tools"), list) and row.get("tools") else None
        reference_calls = M.canonical_calls(calls) if isinstance(calls, list) and calls else None
        reference = (json.dumps(reference_calls, ensure_ascii=False) if reference_calls is not None
                     else messages[last]["content"])
        examples.append(Example(n, prompt, reference, {**row, "reference": reference}, tools=tools,
                                reference_calls=reference_calls))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"Test file {path} holds no examples.", hint="Pass a non-empty chat JSONL file.")
    return examples


def build_messages(prompt: list[dict], candidate: Candidate) -> list[dict]:
    """The messages a candidate sends: its system prompt in place of the example's, few-shot turns after it."""
    if candidate.system_prompt is None:
        system = [m for m in prompt if m.get("role") == "system"][:1]
    else:
        system = [{"role": "system", "content": candidate.system_prompt}]
    rest = [m for m in prompt if m.get("role") != "system"]
    return system + [dict(m) for m in candidate.few_shot] + rest


# ---------------------------------------------------------------- one request

def _transient(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.RateLimitError | openai.APIConnectionError | openai.InternalServerError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _fatal(exc: Exception, candidate: Candidate, base_url: str) -> TunewiseError | None:
    """A configuration error that every request would hit: stop the run and say how to fix it."""
    import openai

    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UsageError(f"Candidate '{candidate.name}': {base_url} refused the API key ({exc.status_code}).",
                          hint="Check the candidate's api_key_env, OPENAI_API_KEY, or restart `tunewise serve` "
                          "to refresh credentials.json.")
    if isinstance(exc, openai.NotFoundError):
        return NotFound(f"Candidate '{candidate.name}': {base_url} answered 404 for model '{candidate.model}'.",
                        hint=f"Check the candidate's model against the endpoint's models (GET {base_url}/models); "
                        "if the model is right, check that base_url ends in /v1.", param="model")
    return None


def _error_text(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:500]


def call_candidate(client, candidate: Candidate, messages: list[dict],
                   stop: threading.Event | None = None, tools: list | None = None) -> dict[str, Any]:
    """One chat completion with our backoff around the SDK's retries; returns the answer, its tool calls (with
    ``tools``), usage and latency.

    ``stop``, once set, ends the retrying (the run is being abandoned).
    """
    attempt = 0
    params = candidate.params(tools)
    while True:
        start = time.perf_counter()
        try:
            response = client.chat.completions.create(model=candidate.model, messages=messages, **params)
        except Exception as exc:
            if _transient(exc) and attempt < BACKOFF_RETRIES and not (stop and stop.is_set()):
                # Full jitter: concurrent workers that failed together should not retry together.
                time.sleep(random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt)))
                attempt += 1
                continue
            raise
        latency = time.perf_counter() - start
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        calls = getattr(choice.message, "tool_calls", None) if choice is not None else None
        return {
            "answer": choice.message.content if choice is not None else None,
            "tool_calls": [{"name": c.function.name, "arguments": c.function.arguments} for c in calls
                           if getattr(c, "function", None) is not None] if calls else None,
            "finish_reason": choice.finish_reason if choice is not None else None,
            "input_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else None,
            "latency_s": latency,
        }


# ---------------------------------------------------------------- pricing

@dataclass(frozen=True)
class Pricing:
    """What one candidate's tokens cost (USD per 1M) and which encoding prices them."""

    price_model: str | None
    input: float
    output: float
    fine_tuned: bool
    recount_model: str | None
    """An OpenAI model to recount tokens with, when the candidate runs elsewhere but is priced as it."""
    note: str = ""

    def per_call(self, input_tokens: float | None, output_tokens: float | None) -> float | None:
        if input_tokens is None or output_tokens is None:
            return None
        return (input_tokens * self.input + output_tokens * self.output) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pricing_for(candidate: Candidate, prices: str | os.PathLike | None = None) -> Pricing:
    """Prices for a candidate: its ``price_model`` or its own model; ``ft:`` models at fine-tuned rates."""
    fine_tuned = candidate.model.startswith("ft:") or (candidate.price_model or "").startswith("ft:")
    name = candidate.price_model or candidate.model
    info = load_catalog(prices).find(name)
    if info is None:
        return Pricing(None, 0.0, 0.0, fine_tuned, None,
                       note=f"'{name}' is not in the catalog: cost not computed (set price_model).")
    inp, out = (info.ft_input, info.ft_output) if fine_tuned else (info.input, info.output)
    own = load_catalog(prices).find(candidate.model)
    recount = info.name if (info.provider == "openai" and (own is None or own.name != info.name)) else None
    note = "local model: no token price" if info.is_local else ""
    return Pricing(info.name, inp, out, fine_tuned, recount, note)


def recount_tokens(model: str, messages: list[dict], answer: str | None, tools: list | None = None,
                   tool_calls: list | None = None) -> tuple[int, int] | None:
    """Input and output tokens as ``model``'s encoding counts them (None if token counting is unavailable): the
    tools' definitions are input, the calls' names and arguments output."""
    try:
        from tunewise.tokens import count_messages, count_text
    except ImportError:
        return None
    output = (answer or "") + "".join(f"{c.get('name') or ''}{c.get('arguments') or ''}" for c in tool_calls or [])
    return count_messages(messages, model=model, tools=tools), count_text(output, model=model)


# ---------------------------------------------------------------- the run

@dataclass
class EvalRun:
    """A finished evaluation: settings, candidates, per-example rows and per-candidate metrics."""

    out_dir: Path | None
    config: dict[str, Any]
    candidates: list[dict]
    results: list[dict]
    metrics: dict[str, Any]
    cache_hits: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def rows(self, candidate: str) -> list[dict]:
        """The candidate's rows in example order."""
        return sorted((r for r in self.results if r["candidate"] == candidate), key=lambda r: r["index"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_failed(row: dict) -> bool:
    """A call that failed after its retries (older results: an error recorded)."""
    return bool(row.get("failed") or row.get("error"))


def static_prefix_tokens(rows: list[dict], model: str | None) -> int | None:
    """Tokens of the leading messages every prompt of ``rows`` shares (system prompt, few-shot turns): the part
    a provider's prompt cache can serve. None when it cannot be counted (no OpenAI encoding for ``model``)."""
    prompts = [r.get("prompt") or [] for r in rows]
    if not prompts or not model:
        return None
    # The example's own last message (the user's input) is never part of the prefix.
    longest = min(len(p) for p in prompts) - 1
    k = 0
    while k < longest and all(p[k] == prompts[0][k] for p in prompts):
        k += 1
    try:
        from tunewise.tokens import count_messages

        return count_messages(prompts[0][:k], model=model) - 3 if k else 0
    except Exception:  # no encoding for this model (a local one): nothing a cache would price
        return None


def summarize(rows: list[dict], pricing: Pricing | None = None) -> dict[str, Any]:
    """One candidate's metrics over its rows: rates with Wilson intervals, means with bootstrap intervals.

    Failed calls are not answers: they are counted (``n_failed``, ``failure_rate``) and left out of every
    metric, whose ``n`` is the number of answers scored.
    """
    failed = sum(1 for r in rows if is_failed(r))
    out: dict[str, Any] = {"n": len(rows), "n_errors": failed, "n_failed": failed,
                           "failure_rate": failed / len(rows) if rows else 0.0}
    rows = [r for r in rows if not is_failed(r)]
    for name in M.RATE_METRICS:
        values = [r[name] for r in rows if r.get(name) is not None]
        out[name] = M.wilson(sum(values), len(values)).to_dict() if values else None
    for name in M.MEAN_METRICS:
        values = [r[name] for r in rows if r.get(name) is not None]
        out[name] = M.bootstrap_mean(values).to_dict() if values else None
    grader_names = sorted({k for r in rows for k in r if k.startswith(GRADER_PREFIX)})
    if grader_names:
        out["graders"] = {}
        for key in grader_names:
            values = [r[key] for r in rows if r.get(key) is not None]
            out["graders"][key[len(GRADER_PREFIX):]] = M.bootstrap_mean(values).to_dict() if values else None
    ok = [r for r in rows if not r.get("error")]
    for name in ("input_tokens", "output_tokens", "priced_input_tokens", "priced_output_tokens"):
        values = [r[name] for r in ok if r.get(name) is not None]
        out[name] = M.bootstrap_mean(values).to_dict() if values else None
    latencies = [r["latency_s"] for r in ok if r.get("latency_s") is not None]
    out["latency_p50_s"] = M.percentile(latencies, 50)
    out["latency_p95_s"] = M.percentile(latencies, 95)
    costs = [r["cost_usd"] for r in ok if r.get("cost_usd") is not None]
    out["cost_per_1k_usd"] = M.bootstrap_mean([c * 1000 for c in costs]).to_dict() if costs else None
    if pricing is not None:
        out["pricing"] = pricing.to_dict()
        if pricing.price_model and pricing.input:
            out["static_prefix_tokens"] = static_prefix_tokens(rows, pricing.recount_model or pricing.price_model)
    return out


def in_daemon_threads(job: Callable[[Any], Any], tasks: list, concurrency: int, stopping: threading.Event,
                      name: str) -> Iterator[Any]:
    """``job(task)`` for every task on ``concurrency`` threads; yields the results as they finish.

    Daemon worker threads over a task queue rather than a ThreadPoolExecutor: an executor's threads are joined at
    interpreter exit, so after a fatal error or Ctrl-C the process would wait for every request in flight (minutes
    each on a busy CPU server); daemon threads are simply dropped. The first exception of a job (a fatal error:
    bad key, unknown model, or a bug) is raised here, after ``stopping`` is set so that the workers take no new
    task and stop retrying; so is an exception of the caller's loop (Ctrl-C).
    """
    queued: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        queued.put(task)
    done: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while not stopping.is_set():
            try:
                task = queued.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((True, job(task)))
            except BaseException as exc:  # handed to the caller, which decides
                done.put((False, exc))

    for k in range(min(concurrency, len(tasks))):
        threading.Thread(target=worker, name=f"{name}-{k}", daemon=True).start()
    try:
        for _ in tasks:
            ok, value = done.get()
            if not ok:
                raise value
            yield value
    except BaseException:
        stopping.set()
        raise


def run_eval(test_file: str | os.PathLike, candidates: list[Candidate], *, schema: dict | None = None,
             out_dir: str | os.PathLike | None = None, concurrency: int = DEFAULT_CONCURRENCY,
             limit: int | None = None, cache: bool | str | os.PathLike = True, prices=None,
             progress: bool = False, timeout: float = REQUEST_TIMEOUT_S, graders: list | None = None,
             grading=None) -> EvalRun:
    """Run every example of ``test_file`` through every candidate and score the answers.

    ``cache``: True for the default cache (``$TUNEWISE_HOME/eval-cache.sqlite``), a path for another, False
    to send every request. ``progress`` shows a tqdm bar on stderr. Writes results to ``out_dir`` when given.
    ``graders``: ``tunewise.eval.graders.Grader`` objects (OpenAI's shapes) run on every answer, each reward in
    the row as ``grader:NAME`` and its mean with an interval in the metrics; ``grading``: their
    ``GradingContext`` (the judge for model graders, whether python graders may run).
    """
    import openai
    from tqdm import tqdm

    if not candidates:
        raise UsageError("No candidates to evaluate.", hint="Pass --candidates FILE, --model or --candidate.")
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, not {concurrency}.")
    check_unique(candidates)
    test_path = Path(test_file)
    examples = load_examples(test_path, limit)
    validator = M.make_validator(schema) if schema is not None else None
    endpoints = {c.name: resolve_endpoint(c) for c in candidates}
    pricings = {c.name: pricing_for(c, prices) for c in candidates}
    clients: dict[tuple[str, str], Any] = {}
    for ep in endpoints.values():
        if (ep.base_url, ep.api_key) not in clients:
            clients[(ep.base_url, ep.api_key)] = openai.OpenAI(
                base_url=ep.base_url, api_key=ep.api_key, max_retries=SDK_MAX_RETRIES, timeout=timeout)
    store = None
    if cache:
        store = CompletionCache(None if cache is True else cache)
    requests = [0]
    count_lock = threading.Lock()
    stopping = threading.Event()

    def job(candidate: Candidate, index: int, example: Example) -> dict:
        ep = endpoints[candidate.name]
        messages = build_messages(example.prompt, candidate)
        key = cache_key(ep.base_url, candidate.model, messages, candidate.params(example.tools))
        response = store.get(key) if store is not None else None
        cached = response is not None
        error = None
        if response is None:
            try:
                with count_lock:
                    requests[0] += 1
                response = call_candidate(clients[(ep.base_url, ep.api_key)], candidate, messages, stopping,
                                          tools=example.tools)
            except openai.OpenAIError as exc:
                fatal = _fatal(exc, candidate, ep.base_url)
                if fatal is not None:
                    raise fatal from None
                error = _error_text(exc)
                response = {"answer": None, "finish_reason": None, "input_tokens": None,
                            "output_tokens": None, "latency_s": None}
            else:
                if store is not None:
                    store.put(key, ep.base_url, candidate.model, response)
        row: dict[str, Any] = {"candidate": candidate.name, "index": index, "line": example.line,
                               "example_id": example.id, "prompt": messages, "answer": response["answer"],
                               "reference": example.reference, "failed": error is not None}
        if example.tools:
            row["tool_calls"] = response.get("tool_calls")
        if example.reference_calls is not None:
            # A tool-call reference: the tool metrics; the answer's own JSON and text metrics do not apply.
            scores = {name: None for name in (*M.RATE_METRICS, *M.MEAN_METRICS)}
            scores.update(M.score_tool_calls(M.canonical_calls(response.get("tool_calls")),
                                             example.reference_calls))
        else:
            scores = M.score_answer(response["answer"], example.reference, validator)
        if error is not None:
            # A failed call is not an answer: no score, so it is neither right nor wrong anywhere.
            scores = {k: None for k in scores}
        row.update(scores)
        if graders:
            if error is None:
                from tunewise.eval.graders import grade_all

                graded = grade_all(graders, response["answer"] or "", example.item, grading)
                row["graders"] = {name: result.summary() for name, result in graded.items()}
                row.update({GRADER_PREFIX + name: result.reward for name, result in graded.items()})
            else:
                row.update({GRADER_PREFIX + g.name: None for g in graders})
        row.update({k: response[k] for k in ("latency_s", "input_tokens", "output_tokens", "finish_reason")})
        pricing = pricings[candidate.name]
        priced = (response["input_tokens"], response["output_tokens"])
        if pricing.recount_model and error is None:
            counted = recount_tokens(pricing.recount_model, messages, response["answer"], example.tools,
                                     response.get("tool_calls"))
            if counted is not None:
                priced = counted
        row["priced_input_tokens"], row["priced_output_tokens"] = priced
        row["cost_usd"] = pricing.per_call(*priced) if pricing.price_model and error is None else None
        row["cached"] = cached
        row["error"] = error
        return row

    results: list[dict] = []
    bar = tqdm(total=len(examples) * len(candidates), desc="eval", unit="call", disable=not progress,
               dynamic_ncols=True)
    tasks = [(c, i, ex) for c in candidates for i, ex in enumerate(examples)]
    try:
        for value in in_daemon_threads(lambda task: job(*task), tasks, concurrency, stopping, "tunewise-eval"):
            results.append(value)
            bar.update(1)
    except BaseException:
        stopping.set()  # also for an interrupt of this loop itself
        for client in clients.values():
            client.close()
        raise
    finally:
        bar.close()
        hits = store.hits if store is not None else 0
        if store is not None:
            store.close()
    results.sort(key=lambda r: ([c.name for c in candidates].index(r["candidate"]), r["index"]))

    if all(ex.reference_calls is not None for ex in examples):
        task = "tools"
    else:
        task = "json" if all(M.is_json_answer(ex.reference) for ex in examples) else "text"
    notes = []
    for c in candidates:
        p = pricings[c.name]
        if p.recount_model:
            notes.append(f"{c.name}: priced as {p.recount_model}"
                         + (" at fine-tuned rates" if p.fine_tuned else "")
                         + ", its tokens recounted in that model's encoding.")
        if p.note:
            notes.append(f"{c.name}: {p.note}")
    metrics = {
        "task": task,
        "n_examples": len(examples),
        "schema": schema is not None,
        "candidates": {c.name: {"model": c.model, "role": c.role, "few_shot": len(c.few_shot) // 2,
                                **summarize([r for r in results if r["candidate"] == c.name], pricings[c.name])}
                       for c in candidates},
        "notes": notes,
    }
    config = {
        "test_file": str(test_path.resolve()),
        "test_sha256": _sha256(test_path),
        "n_examples": len(examples),
        "limit": limit,
        "schema": schema,
        "concurrency": concurrency,
        "cache": str(store.path) if store is not None else None,
        "endpoints": {name: {"base_url": ep.base_url, "source": ep.source} for name, ep in endpoints.items()},
        "graders": [g.spec for g in graders] if graders else [],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    run = EvalRun(Path(out_dir) if out_dir else None, config, [c.resolved() for c in candidates], results,
                  metrics, cache_hits=hits, requests=requests[0], notes=notes)
    if out_dir:
        save_run(run, out_dir)
    return run


def save_run(run: EvalRun, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "w", encoding="utf-8") as fh:
        for row in run.results:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(run.metrics, indent=2) + "\n", encoding="utf-8")
    (out / "candidates.json").write_text(json.dumps(run.candidates, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (out / "config.json").write_text(json.dumps(run.config, indent=2) + "\n", encoding="utf-8")
    run.out_dir = out
    return out


def load_run(eval_dir: str | os.PathLike) -> EvalRun:
    """An evaluation written by ``run_eval`` (``tunewise eval --out DIR``)."""
    d = Path(eval_dir)
    missing = [n for n in ("results.jsonl", "metrics.json", "candidates.json", "config.json")
               if not (d / n).is_file()]
    if missing:
        raise UsageError(f"{d} is not an evaluation directory (missing {', '.join(missing)}).",
                         hint="Pass the --out directory of `tunewise eval`.")
    try:
        results = [json.loads(line) for line in (d / "results.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        candidates = json.loads((d / "candidates.json").read_text(encoding="utf-8"))
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{d}: a results file is damaged ({exc}).", hint="Rerun `tunewise eval`.") from None
    return EvalRun(d, config, candidates, results, metrics, notes=metrics.get("notes", []))

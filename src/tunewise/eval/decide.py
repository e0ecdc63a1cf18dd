"""The decision: fine-tune, keep prompting, use structured outputs, or not enough evidence.

The evaluation's candidates fall into three roles: ``prompting`` (a base model with a prompt, perhaps long and
with few-shot turns), ``structured`` (a base model with a ``response_format``: constrained decoding gives the
format without training) and ``fine-tuned``. The procedure, fixed before looking at the data:

1. **Measures.** The primary measure is named up front: format (schema adherence, or valid JSON without a
   schema) for structured answers, token F1 for free text, the right function (``tool_name_match``) for tool
   calls; ``primary="accuracy"`` makes exact match (``tool_exact_match`` for tool calls: the right function with
   exactly the right arguments) primary instead. The other (exact match, or format) is secondary.
2. **Failed calls** (after the runner's retries) are not answers: they are left out of every metric and every
   paired comparison, and counted. Above ``max_failure_rate`` (5%) for any candidate that decides, there is no
   verdict.
3. **Representatives.** When a role has several candidates, its representative is chosen on a random half of
   the examples (the selection split, seeded) and every comparison uses only the other half, so picking the
   best of several does not inflate its results (the winner's curse).
4. **Paired tests**, by example id (different example sets are an error): rates by McNemar's exact test with
   its exact interval, means by a paired permutation test with the interval that inverts it. Every test that
   feeds the verdict (up to two measures x three pairs of roles) is Holm-adjusted at 5% family-wise.
5. **Equivalence** only by two one-sided tests: the 95% interval of the difference (Newcombe's paired score
   interval for rates) lies within +-``margin`` (5 points) on every measure.
6. **Verdict.** Any significant regression of the fine-tuned model blocks "fine-tune" (on the primary measure
   always; on the secondary too). "fine-tune" needs a significant gain and no regression, against prompting
   and against structured outputs (or equivalence with them and a lower cost). Structured outputs that beat
   prompting with no regression -> "use structured outputs". Where candidates are equivalent, cost decides
   among all of them, structured outputs included, training amortised over the horizon; an unknown training
   cost is never taken as $0. Everything else is "not enough evidence", with what would settle it. Every
   significant difference, either way, is listed.

Cost: each candidate priced with its own measured tokens at its own catalog prices; with ``cache_hit_rate``,
the static prompt prefix (system prompt and few-shot turns, when 1,024 tokens or more) at the cached-input
price where the model has one.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, NotFound, UsageError
from tunewise.eval import metrics as M
from tunewise.eval.runner import GRADER_PREFIX, EvalRun, is_failed, load_run

FINE_TUNE = "fine-tune"
KEEP_PROMPTING = "keep prompting"
STRUCTURED = "use structured outputs"
NOT_ENOUGH = "not enough evidence"
VERDICTS = (FINE_TUNE, KEEP_PROMPTING, STRUCTURED, NOT_ENOUGH)

ALPHA = M.ALPHA
"""Family-wise error rate of the tests that feed the verdict (Holm)."""
EQUIVALENCE_MARGIN = 0.05
"""Two candidates are equivalent on a measure when the 95% interval of their difference lies within +-5 points
(two one-sided tests at 2.5% each)."""
MAX_FAILURE_RATE = 0.05
"""No verdict when more than this share of a deciding candidate's calls failed."""
DEFAULT_CALLS_PER_MONTH = 10_000
"""Volume assumed when none is given (the report says so, and says when the verdict depends on it)."""
DEFAULT_HORIZON_MONTHS = 12
SELECTION_SEED = 0
"""Seed of the selection split (which examples choose a role's representative)."""
MIN_CACHED_PREFIX = 1024
"""OpenAI's prompt cache serves only prompts of 1,024 tokens or more."""
PRIMARY_CHOICES = ("format", "accuracy")
METRICS_CSV_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
ROLES = ("prompting", "structured", "fine-tuned")


@dataclass
class Decision:
    """The verdict with its evidence: what the report shows and ``decision.json`` holds."""

    verdict: str
    """One of ``VERDICTS``."""
    headline: str
    """One sentence: the verdict and the main reason."""
    reasons: list[str]
    """Why, in the guide's terms; every significant difference, either way, is among them."""
    task: str
    """``json`` or ``text``: which metrics decided."""
    format_metric: str | None
    accuracy_metric: str
    chosen: dict[str, str]
    """Role -> the candidate that represents it."""
    candidates: dict[str, dict]
    """Per-candidate metrics (``metrics.json``), with ``monthly_cost_usd`` and ``cost_per_call_usd`` added."""
    comparisons: list[dict]
    """Paired comparisons between the chosen candidates (``Comparison.to_dict()``), Holm-adjusted."""
    calls_per_month: float
    calls_per_month_assumed: bool
    training_cost: float | None
    """USD; None when unknown (never taken as $0)."""
    breakeven: dict | None
    """Fine-tuned against prompting, each with its own tokens and prices, when both are priced."""
    loss_curve: list[dict] | None = None
    """Rows of the training metrics CSV (step, train_loss, valid_loss, ...), when one was given."""
    eval_dir: str | None = None
    n_examples: int = 0
    notes: list[str] = field(default_factory=list)
    primary_metric: str | None = None
    """The measure named up front (its regression blocks "fine-tune")."""
    secondary_metrics: list[str] = field(default_factory=list)
    alpha: float = ALPHA
    margin: float = EQUIVALENCE_MARGIN
    max_failure_rate: float = MAX_FAILURE_RATE
    failures: dict[str, dict] = field(default_factory=dict)
    """Candidate -> {"failed": n, "n": n, "rate": share}."""
    selection: dict | None = None
    """The selection split when a role had several candidates: examples used to choose, and to compare."""
    significant: list[str] = field(default_factory=list)
    """Every significant difference, in words."""
    depends_on_volume: bool = False
    """True when the verdict came from cost and would change at another volume."""
    cache_hit_rate: float = 0.0
    training_cost_known: bool = False
    claims: list[dict] = field(default_factory=list)
    """The guide's claims this evaluation speaks to (``tunewise.eval.claims``): claim, measured, outcome,
    diff with its 95% interval, detail."""
    shift: dict | None = None
    """With a shifted split: candidate -> its primary measure on the held-out and the shifted split, and the
    drop with its interval."""
    claim: str | None = None
    """Which of the guide's claims the primary grader speaks to (``tunewise.eval.claims.CLAIM_CHOICES``)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------- inputs

def read_metrics_csv(source: str | os.PathLike | bytes) -> list[dict]:
    """An OpenAI-format step metrics CSV (``step,train_loss,train_accuracy,valid_loss,...``) as rows.

    ``source`` is a path or the file's bytes; OpenAI serves the file base64-encoded, which is decoded here.
    Empty cells (validation runs only every few steps) become None.
    """
    if isinstance(source, bytes | bytearray):
        data, where = bytes(source), "metrics CSV"
    else:
        where = str(source)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"Metrics CSV {source} does not exist.",
                             hint="Pass the job's step metrics file (--metrics-csv) or --job JOB_ID.") from None
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.lstrip().startswith("step"):
        try:
            text = base64.b64decode(data, validate=False).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            pass
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "step" not in reader.fieldnames or "train_loss" not in reader.fieldnames:
        raise DataError(f"{where} is not a step metrics CSV (its header lacks step and train_loss).",
                        hint="Expected columns: " + ",".join(METRICS_CSV_COLUMNS) + ".")
    rows = []
    for n, raw in enumerate(reader, 2):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None:
                continue
            value = (value or "").strip()
            try:
                row[key] = float(value) if value else None
            except ValueError:
                raise DataError(f"{where}, line {n}: {key}={value!r} is not a number.") from None
        if row.get("step") is None:
            continue
        row["step"] = int(row["step"])
        rows.append(row)
    return rows


def fetch_job(job_id: str, base_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    """A fine-tuning job's metrics CSV rows and trained tokens, through the official SDK.

    The endpoint is found as for candidates: ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, else the local
    server's ``credentials.json``.
    """
    import openai

    from tunewise.eval.candidates import Candidate, resolve_endpoint

    ep = resolve_endpoint(Candidate(name="job", model="-", base_url=base_url, api_key=api_key))
    client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=2)
    try:
        job = client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError:
        raise NotFound(f"Fine-tuning job {job_id} does not exist at {ep.base_url}.",
                       hint="List jobs with `tunewise jobs list`.") from None
    except openai.OpenAIError as exc:
        raise UsageError(f"Could not fetch job {job_id} from {ep.base_url}: {exc}.") from None
    if not job.result_files:
        raise NotFound(f"Job {job_id} has no result files yet (status {job.status}).",
                       hint="Wait for the job to finish, or pass --metrics-csv.")
    content = client.files.content(job.result_files[0]).content
    return {"rows": read_metrics_csv(content), "trained_tokens": job.trained_tokens, "model": job.model,
            "fine_tuned_model": job.fine_tuned_model}


def training_cost_from(training_cost: float | None = None, training_file: str | os.PathLike | None = None,
                       model: str | None = None, epochs: int | str = "auto", prices=None) -> float | None:
    """The training cost in USD: given, or estimated from a training file and model (``tunewise.cost``)."""
    if training_cost is not None and training_file is not None:
        raise UsageError("Give --training-cost or --training-file, not both.")
    if training_cost is not None:
        if training_cost < 0:
            raise UsageError(f"--training-cost must be non-negative, not {training_cost}.")
        return float(training_cost)
    if training_file is not None:
        if not model:
            raise UsageError("--training-file needs --model (the model to price training on).",
                             hint="e.g. --model gpt-4o-mini")
        from tunewise.cost import estimate_training

        return float(estimate_training(training_file, model, epochs, prices=prices).cost_usd)
    return None


# ---------------------------------------------------------------- formatting

LABELS = {"schema_adherence": "schema adherence", "valid_json": "valid JSON", "exact_match": "exact match",
          "text_f1": "token F1", "text_exact_match": "text exact match", "field_f1": "field F1",
          "tool_name_match": "right function", "tool_exact_match": "tool-call exact match",
          "tool_args_f1": "argument field F1"}


def _label(metric: str | None) -> str:
    if metric and metric.startswith(GRADER_PREFIX):
        return f"grader '{metric[len(GRADER_PREFIX):]}'"
    return LABELS.get(metric or "", (metric or "").replace("_", " "))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<1e-16" if p <= 0 else f"{p:.2g}"


def usd(x: float | None) -> str:
    """Money with the precision it needs: $1,234 / $12.34 / $0.0123 (three significant digits under $1)."""
    if x is None:
        return "unknown"
    if x == 0:
        return "$0"
    a = abs(x)
    if a >= 100:
        return f"${x:,.0f}"
    if a >= 1:
        return f"${x:,.2f}"
    digits = 2 - math.floor(math.log10(a))
    return f"${x:.{digits}f}"


def months_text(m: float | None) -> str:
    """Months with the precision they need (never "0.0 months" for a real, small value)."""
    if m is None:
        return "never"
    if m == 0:
        return "no time (nothing to recover)"
    if m < 1:
        days = m * 30.44
        return f"{m:.2g} months (about {days:.2g} days)" if days >= 1 else f"{m:.2g} months (under a day)"
    return f"{m:.1f} months" if m < 100 else f"{m:,.0f} months"


def _cmp_text(c: M.Comparison, a: str | None = None) -> str:
    """``c`` in words, oriented so that ``a`` comes first (the difference's sign flips when needed)."""
    flip = a is not None and a == c.b
    x, y = (c.b, c.a) if flip else (c.a, c.b)
    xv, yv = (c.b_value, c.a_value) if flip else (c.a_value, c.b_value)
    sign = -1 if flip else 1
    lo, hi = (-c.high, -c.low) if flip else (c.low, c.high)
    excluded = f", {c.n_excluded} example(s) left out for failed calls" if c.n_excluded else ""
    adjusted = f", Holm-adjusted p={_p(c.p_adjusted)}" if c.p_adjusted is not None else ""
    return (f"{_label(c.metric)}: {x} {_pct(xv)} against {y} {_pct(yv)}, {_pts(sign * c.diff)} points "
            f"(95% CI {_pts(lo)} to {_pts(hi)}; {c.test} p={_p(c.p_value)}{adjusted}; n={c.n}{excluded})")


# ---------------------------------------------------------------- pairing and selection

def _keyed_rows(run: EvalRun, name: str) -> dict[str, dict]:
    """The candidate's rows by example id (older results without ids: by line); repeats numbered."""
    out: dict[str, dict] = {}
    seen: dict[str, int] = {}
    for r in run.rows(name):
        base = r.get("example_id") or f"line-{r.get('line', r.get('index'))}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out[base if k == 0 else f"{base}#{k}"] = r
    return out


def _paired_examples(run: EvalRun, names: list[str]) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """Every candidate's rows by example id, and the ids in example order; an error when the sets differ."""
    keyed = {n: _keyed_rows(run, n) for n in names}
    first = names[0]
    ref = set(keyed[first])
    for n in names[1:]:
        ids = set(keyed[n])
        if ids != ref:
            only_a, only_b = sorted(ref - ids), sorted(ids - ref)

            def where(name: str, missing: list[str]) -> str:
                if not missing:
                    return ""
                r = keyed[name][missing[0]]
                return f", {len(missing)} only in {name}'s (e.g. line {r.get('line')})"

            raise DataError(
                f"Candidates '{first}' and '{n}' were evaluated on different examples ({len(ref)} and "
                f"{len(ids)}{where(first, only_a)}{where(n, only_b)}): they cannot be paired.",
                hint="Evaluate every candidate on the same test file (and --limit) in one `tunewise eval` run.")
    order = sorted(ref, key=lambda k: (keyed[first][k].get("index", 0), k))
    return keyed, order


def _mean_on(rows: list[dict], metric: str | None) -> float:
    values = [r[metric] for r in rows if metric and not is_failed(r) and r.get(metric) is not None]
    return sum(values) / len(values) if values else -1.0


def _choose(run: EvalRun, by_role: dict[str, list[str]], keyed: dict[str, dict[str, dict]], ids: list[str],
            measures: list[str]) -> tuple[dict[str, str], dict | None, list[str]]:
    """Each role's representative, and the examples left for the comparisons.

    A role with one candidate needs no choice. With several, the choice is made on a seeded random half of
    the examples (primary measure, then secondary, then fewer input tokens) and all comparisons use the other
    half only: the chosen one's results are then not inflated by having been chosen.
    """
    several = {role: names for role, names in by_role.items() if len(names) > 1}
    if not several:
        return {role: names[0] for role, names in by_role.items() if names}, None, ids
    shuffled = list(ids)
    random.Random(SELECTION_SEED).shuffle(shuffled)
    n_select = len(shuffled) // 2
    select = set(shuffled[:n_select])
    confirm = [k for k in ids if k not in select]
    chosen: dict[str, str] = {}
    for role, names in by_role.items():
        if not names:
            continue
        if len(names) == 1:
            chosen[role] = names[0]
            continue

        def key(name: str):
            rows = [keyed[name][k] for k in select]
            tokens = [r.get("priced_input_tokens") or 0 for r in rows if not is_failed(r)]
            return tuple(_mean_on(rows, m) for m in measures) + (-(sum(tokens) / max(1, len(tokens))),)

        chosen[role] = max(names, key=key)
    selection = {"seed": SELECTION_SEED, "n_select": n_select, "n_compare": len(confirm),
                 "roles": {role: names for role, names in several.items()}}
    return chosen, selection, confirm


# ---------------------------------------------------------------- cost

def _per_call_cost(summary: dict, cache_hit_rate: float, prices) -> tuple[float | None, float]:
    """USD per call from the candidate's own measured tokens and prices; and the tokens priced as cached."""
    from tunewise.catalog import load_catalog
    from tunewise.cost import input_cost

    pricing = summary.get("pricing") or {}
    name = pricing.get("price_model")
    tin = (summary.get("priced_input_tokens") or {}).get("value")
    tout = (summary.get("priced_output_tokens") or {}).get("value")
    if not name or tin is None or tout is None:
        legacy = (summary.get("cost_per_1k_usd") or {}).get("value")
        return (None if legacy is None else legacy / 1000), 0.0
    info = load_catalog(prices).find(name)
    if info is None:
        return None, 0.0
    fine_tuned = bool(pricing.get("fine_tuned"))
    static = summary.get("static_prefix_tokens") or 0
    has_cache_price = (info.ft_cached_input if fine_tuned else info.cached_input) is not None
    cached = 0.0
    if cache_hit_rate and static >= MIN_CACHED_PREFIX and has_cache_price:
        cached = min(float(tin), static * cache_hit_rate)
    out_price = info.ft_output if fine_tuned else info.output
    return input_cost(info, float(tin), cached, fine_tuned) + tout * out_price / 1e6, cached


def payback(base_call: float, ft_call: float, training: float | None, volume: float,
            horizon: float = DEFAULT_HORIZON_MONTHS) -> dict[str, Any]:
    """When the per-call saving of ``ft_call`` over ``base_call`` pays ``training`` back (None: unknown)."""
    saving = base_call - ft_call
    monthly_saving = saving * volume
    out: dict[str, Any] = {
        "base_per_call": base_call, "ft_per_call": ft_call, "base_per_1k": base_call * 1000,
        "ft_per_1k": ft_call * 1000, "base_monthly": base_call * volume, "ft_monthly": ft_call * volume,
        "saving_per_call": saving, "monthly_saving": monthly_saving, "training_cost": training,
        "training_cost_known": training is not None, "horizon_months": horizon,
        "never_pays": saving < 0 or (saving == 0 and (training is None or training > 0)),
        "months_to_recover": None, "breakeven_calls_per_month": None, "breakeven_calls": None,
        "max_training_cost": max(0.0, monthly_saving * horizon),
    }
    if saving > 0 and training is not None:
        out["breakeven_calls"] = math.ceil(training / saving)
        out["breakeven_calls_per_month"] = math.ceil(training / (saving * horizon))
        out["months_to_recover"] = training / monthly_saving if monthly_saving > 0 else None
    elif saving == 0 and training == 0:
        out.update(breakeven_calls=0, breakeven_calls_per_month=0, months_to_recover=0.0)
    return out


# ---------------------------------------------------------------- the decision

@dataclass
class _Rel:
    better: list[str]
    worse: list[str]
    equivalent: bool
    comparisons: list[M.Comparison]

    @property
    def dominates(self) -> bool:
        return bool(self.better) and not self.worse


def decide(eval_dir: str | os.PathLike | EvalRun, *, calls_per_month: float | None = None,
           training_cost: float | None = None, training_file: str | os.PathLike | None = None,
           model: str | None = None, epochs: int | str = "auto", job: str | None = None,
           metrics_csv: str | os.PathLike | None = None, prices=None,
           margin: float = EQUIVALENCE_MARGIN, primary: str | None = None, cache_hit_rate: float = 0.0,
           max_failure_rate: float = MAX_FAILURE_RATE,
           horizon_months: float = DEFAULT_HORIZON_MONTHS,
           shifted: str | os.PathLike | EvalRun | None = None, claim: str | None = None) -> Decision:
    """Turn an evaluation (a ``tunewise eval`` output directory or an ``EvalRun``) into a verdict with reasons.

    ``calls_per_month``: the user's volume (default ``DEFAULT_CALLS_PER_MONTH``, flagged as assumed).
    Training cost: ``training_cost`` USD, or estimated from ``training_file`` on ``model`` for ``epochs``, or
    from a fetched ``job``'s trained tokens; otherwise unknown (never $0). ``metrics_csv`` (or ``job``) adds
    the loss curve. ``primary``: ``format`` (default for JSON answers) or ``accuracy``. ``margin``: the
    equivalence margin (a rate difference). ``cache_hit_rate``: the share of calls whose static prompt prefix
    the provider's prompt cache serves (0 assumes no caching). ``max_failure_rate``: the most failed calls a
    deciding candidate may have for a verdict. ``shifted``: the same candidates evaluated on a split from a
    shifted distribution; the decision then reports both side by side and tests the guide's claim that
    few-shot degrades under the shift and fine-tuning does not (``Decision.shift`` and ``Decision.claims``).
    ``claim``: which of the guide's claims the primary measure speaks to: ``style`` (the default for a grader),
    ``vocabulary`` or ``facts`` (the negative claim; a fine-tuned model worse on it is told to keep the facts in
    the prompt); it names the claims table's row and never changes the verdict's procedure.
    """
    run = eval_dir if isinstance(eval_dir, EvalRun) else load_run(eval_dir)
    if calls_per_month is not None and calls_per_month < 0:
        raise UsageError(f"--calls-per-month must be non-negative, not {calls_per_month}.")
    if not 0 < margin < 1:
        raise UsageError(f"--margin must be between 0 and 1 (a share: 0.05 is 5 points), not {margin}.")
    if not 0 <= cache_hit_rate <= 1:
        raise UsageError(f"--cache-hit-rate must be between 0 and 1, not {cache_hit_rate}.")
    if not 0 <= max_failure_rate <= 1:
        raise UsageError(f"--max-failure-rate must be between 0 and 1, not {max_failure_rate}.")
    if horizon_months <= 0:
        raise UsageError(f"--horizon-months must be positive, not {horizon_months}.")
    from tunewise.eval.claims import CLAIM_CHOICES

    if claim is not None and claim not in CLAIM_CHOICES:
        raise UsageError(f"--claim must be one of {', '.join(CLAIM_CHOICES)}, not {claim!r}.",
                         hint="style: a house voice; vocabulary: a fixed technical vocabulary; facts: questions "
                         "about facts (the guide's negative claim).")
    graded = sorted({g for c in run.metrics["candidates"].values() for g in (c.get("graders") or {})})
    grader_primary = None
    if primary is not None and primary not in PRIMARY_CHOICES:
        name = primary[len(GRADER_PREFIX):] if primary.startswith(GRADER_PREFIX) else primary
        if name not in graded:
            known = [*PRIMARY_CHOICES, *graded]
            raise UsageError(f"--primary must be one of {', '.join(known)}, not {primary!r}.",
                             hint="A grader is a primary measure once `tunewise eval --grader FILE` has run it."
                             if not graded else "Name a grader the evaluation ran, or format or accuracy.")
        grader_primary = GRADER_PREFIX + name
    assumed = calls_per_month is None
    volume = float(DEFAULT_CALLS_PER_MONTH if assumed else calls_per_month)
    notes: list[str] = list(run.metrics.get("notes", []))

    training = training_cost_from(training_cost, training_file, model, epochs, prices)
    loss_curve = read_metrics_csv(metrics_csv) if metrics_csv is not None else None
    if job is not None:
        fetched = fetch_job(job)
        if loss_curve is None:
            loss_curve = fetched["rows"]
        if training is None and fetched.get("trained_tokens"):
            from tunewise.catalog import load_catalog

            info = load_catalog(prices).find(fetched["model"] or "")
            if info is not None and info.training:
                training = fetched["trained_tokens"] * info.training / 1e6

    task = run.metrics.get("task", "json")
    cands: dict[str, dict] = run.metrics["candidates"]
    if task == "json":
        fmt = "schema_adherence" if run.metrics.get("schema") else "valid_json"
        accuracy = "exact_match"
        measures = [fmt, accuracy] if primary in (None, "format") or grader_primary else [accuracy, fmt]
    elif task == "tools":
        # Tool calls: the right function is the format, the call with exactly the right arguments the accuracy.
        fmt, accuracy = "tool_name_match", "tool_exact_match"
        measures = [fmt, accuracy] if primary in (None, "format") or grader_primary else [accuracy, fmt]
    else:
        if primary == "format":
            raise UsageError("--primary format applies to JSON answers; these references are free text.",
                             hint="Leave --primary out (token F1 is the measure for free text).")
        fmt, accuracy = None, "text_f1"
        measures = [accuracy]
    if grader_primary:  # the grader decides; the usual measures stay, Holm-controlled, as secondaries
        measures = [grader_primary, *measures]
    primary_metric = measures[0]

    by_role: dict[str, list[str]] = {role: [] for role in ROLES}
    for name, s in cands.items():
        by_role.setdefault(s.get("role", "prompting"), []).append(name)
    names = [n for role in by_role for n in by_role[role]]
    keyed, ids = _paired_examples(run, names) if names else ({}, [])
    chosen, selection, confirm = _choose(run, by_role, keyed, ids, measures)
    F, P, S = chosen.get("fine-tuned"), chosen.get("prompting"), chosen.get("structured")
    if selection:
        for role, members in selection["roles"].items():
            notes.append(f"{chosen[role]} stands for the {role} candidates ({', '.join(members)}): chosen on "
                         f"{selection['n_select']} of the {len(ids)} examples (a seeded random half), and "
                         f"compared on the other {selection['n_compare']} only, so that picking the best of "
                         f"{len(members)} does not flatter it.")

    # ----- failed calls
    failures: dict[str, dict] = {}
    for name in names:
        rows = list(keyed[name].values())
        failed = sum(1 for r in rows if is_failed(r))
        failures[name] = {"failed": failed, "n": len(rows), "rate": failed / len(rows) if rows else 0.0}
    too_many = [n for n in chosen.values() if failures[n]["rate"] > max_failure_rate]

    # ----- paired comparisons, Holm-adjusted
    pairs = [(x, y) for x, y in ((F, P), (S, P), (F, S)) if x and y]
    raw: list[M.Comparison] = []
    for x, y in pairs:
        for metric in measures:
            def values(name: str, metric: str = metric) -> list:
                return [None if is_failed(keyed[name][k]) else keyed[name][k].get(metric) for k in confirm]

            c = M.compare(metric, x, values(x), y, values(y), ALPHA, margin)
            if c.n:
                raw.append(c)
    comparisons = M.holm(raw, ALPHA)
    by_pair: dict[tuple[str, str], list[M.Comparison]] = {}
    for c in comparisons:
        by_pair.setdefault((c.a, c.b), []).append(c)

    def rel(x: str | None, y: str | None) -> _Rel | None:
        if not x or not y:
            return None
        cs, sign = by_pair.get((x, y)), 1
        if cs is None:
            cs, sign = by_pair.get((y, x)), -1
        if not cs:
            return None
        better = [c.metric for c in cs if c.significant and sign * c.diff > 0]
        worse = [c.metric for c in cs if c.significant and sign * c.diff < 0]
        equivalent = len(cs) == len(measures) and all(c.equivalent for c in cs)
        return _Rel(better, worse, equivalent, cs)

    # ----- cost at the user's volume, each candidate with its own tokens and prices
    per_call: dict[str, float | None] = {}
    for name, s in cands.items():
        if "static_prefix_tokens" not in s and (s.get("pricing") or {}).get("input"):
            from tunewise.eval.runner import static_prefix_tokens

            s["static_prefix_tokens"] = static_prefix_tokens(
                [r for r in keyed.get(name, {}).values() if not is_failed(r)], s["pricing"]["price_model"])
        cost, cached = _per_call_cost(s, cache_hit_rate, prices)
        per_call[name] = cost
        s["cost_per_call_usd"] = cost
        s["cached_input_tokens"] = cached
        s["monthly_cost_usd"] = None if cost is None else cost * volume
        if not cache_hit_rate and cost and (s.get("static_prefix_tokens") or 0) >= MIN_CACHED_PREFIX:
            cached_cost, cached_tokens = _per_call_cost(s, 1.0, prices)
            if cached_tokens and cached_cost is not None and cached_cost < cost:
                notes.append(f"{name}'s prompts share a static prefix of {s['static_prefix_tokens']:,} tokens: "
                             f"with every call served from the prompt cache it would cost "
                             f"{usd(cached_cost * volume)}/month instead of {usd(cost * volume)} (no caching is "
                             "assumed; set --cache-hit-rate).")
    for name, s in cands.items():
        note = (s.get("pricing") or {}).get("note")
        if note and not any(note in n for n in notes):
            notes.append(f"{name}: {note}" + ("; compare it on quality and latency." if "local" in note else ""))
    be = None
    base_for_ft = P or S
    if F and base_for_ft and per_call.get(F) is not None and per_call.get(base_for_ft) is not None:
        be = payback(per_call[base_for_ft], per_call[F], training, volume, horizon_months)
        be.update(model=((cands[F].get("pricing") or {}).get("price_model")), base_candidate=base_for_ft,
                  ft_candidate=F, calls_per_month=volume)

    reasons: list[str] = []
    depends_on_volume = False
    verdict = NOT_ENOUGH

    def monthly_total(name: str) -> float | None:
        cost = per_call.get(name)
        if cost is None:
            return None
        if name == F:
            return None if training is None else cost * volume + training / horizon_months
        return cost * volume

    def cost_decides(pool: list[str]) -> str:
        """The cheapest of candidates of equivalent quality (training amortised over the horizon)."""
        nonlocal depends_on_volume
        verdict_of = {P: KEEP_PROMPTING, S: STRUCTURED, F: FINE_TUNE}
        unpriced = [n for n in pool if per_call.get(n) is None]
        if unpriced:
            reasons.append(f"Equal quality, but {', '.join(unpriced)} cannot be priced (not in the catalog: "
                           "set its price_model), so cost cannot decide.")
            return NOT_ENOUGH
        others = [n for n in pool if n != F]
        cheapest_other = min(others, key=lambda n: (per_call[n], ROLES.index(cands[n].get("role", "prompting"))))
        if F in pool and training is None and per_call[F] < per_call[cheapest_other]:
            saving = (per_call[cheapest_other] - per_call[F]) * volume
            reasons.append(f"Same quality, and {F} costs less per call ({usd(per_call[F] * 1000)} against "
                           f"{usd(per_call[cheapest_other] * 1000)} per 1k calls, {usd(saving)}/month at "
                           f"{volume:,.0f} calls{' (assumed)' if assumed else ''}); whether that pays for "
                           f"training depends on its cost, which is unknown: fine-tuning pays back within "
                           f"{horizon_months:g} months if training costs under {usd(saving * horizon_months)}. "
                           "Pass --training-cost or --training-file.")
            depends_on_volume = True
            return NOT_ENOUGH
        totals = {n: monthly_total(n) for n in pool if monthly_total(n) is not None}
        winner = min(totals, key=lambda n: (totals[n], ROLES.index(cands[n].get("role", "prompting"))))
        parts = [f"{n} {usd(totals[n])}/month" + (f" (with training {usd(training)} over {horizon_months:g} "
                                                   "months)" if n == F else "") for n in totals]
        vol = f"{volume:,.0f} calls a month" + (" (assumed: pass --calls-per-month)" if assumed else "")
        if F in pool and F not in totals:
            parts.append(f"{F} {usd(per_call[F] * volume)}/month before training (training cost unknown)")
        reasons.append(f"Quality is equivalent (within +-{100 * margin:g} points on every measure), so cost "
                       f"decides, at {vol}: " + ", ".join(parts) + f". Cheapest: {winner}.")
        if F in totals and training and len(totals) > 1:
            rival = cheapest_other if winner == F else winner
            saving = per_call[rival] - per_call[F]
            if saving > 0:
                flip = math.ceil(training / (saving * horizon_months))
                depends_on_volume = True
                side = "below" if winner == F else "above"
                other = verdict_of[rival] if winner == F else FINE_TUNE
                reasons.append(f"The verdict depends on the volume: {side} {flip:,} calls a month it would be "
                               f"'{other}'" + (" (and the volume here is assumed)." if assumed else "."))
        return verdict_of[winner]

    def blocked_text(x: str, y: str, r: _Rel) -> str:
        which = ", ".join(_label(m) for m in r.worse)
        text = f"{x} is significantly worse than {y} on {which}"
        if primary_metric in r.worse:
            text += " (the primary measure)" if len(r.worse) == 1 else f" (the primary measure is {_label(primary_metric)})"
        text += ": that blocks fine-tuning."
        if accuracy in r.worse or (claim == "facts" and primary_metric in r.worse):
            text += (" Fine-tuning teaches behaviour (format, style, shorter prompts), not new facts or "
                     "reasoning: put the knowledge in the prompt (or retrieval) instead.")
        if r.better:
            text += (f" It is better on {', '.join(_label(m) for m in r.better)}, but a regression is not "
                     "offset by a gain elsewhere.")
        return text

    def fine_tune_text(r: _Rel, base: str) -> str:
        text = (f"{F} is significantly better than {base} on {', '.join(_label(m) for m in r.better)}, and "
                "worse on nothing.")
        if fmt in r.better and task == "json":
            p_fmt = (cands[base].get(fmt) or {}).get("value")
            if p_fmt is not None and 0.85 <= p_fmt <= 0.90:
                text += " As the guide says, prompting alone holds the format 85-90% of the time."
            elif p_fmt is not None:
                text += (f" (The guide cites 85-90% format adherence for prompting; here {base} measured "
                         f"{_pct(p_fmt)}.)")
        if task == "text" and (accuracy in r.better or primary_metric in r.better):
            if claim == "vocabulary":
                text += (" A domain vocabulary is learned from examples better than from a list spelt out in the "
                         "prompt.")
            elif claim is None or claim == "style":
                text += " Style and tone are learned from examples, which few-shot prompts imitate less reliably."
        return text

    if len(chosen) < 2:
        reasons.append("Only one kind of candidate was evaluated ("
                       + ", ".join(f"{r}: {n}" for r, n in chosen.items())
                       + "): a decision needs a fine-tuned or structured-outputs candidate beside a prompting one.")
    elif too_many:
        reasons.append("Too many failed calls for a verdict: " + ", ".join(
            f"{n} {failures[n]['failed']} of {failures[n]['n']} ({_pct(failures[n]['rate'])})" for n in too_many)
            + f", above the {_pct(max_failure_rate)} allowed (--max-failure-rate). Failed calls are not answers "
            "and are left out of the comparison, but so many could hide or fake a difference: fix the endpoint "
            "and rerun `tunewise eval` (answers already given come from the cache).")
    elif F and (P or S):
        base = P or S
        r = rel(F, base)
        rs = rel(S, P) if (S and P) else None
        if r is None:
            reasons.append(f"No paired comparison of {F} and {base} was possible (no examples both answered).")
        elif r.worse:
            reasons.append(blocked_text(F, base, r))
            verdict = STRUCTURED if (base == S or (rs is not None and rs.dominates)) else KEEP_PROMPTING
            if verdict == STRUCTURED and base == P and rs is not None:
                reasons.append(f"Structured outputs ({S}) are significantly better than prompting on "
                               f"{', '.join(_label(m) for m in rs.better)} and worse on nothing.")
        elif r.equivalent:
            pool = [F, base]
            if S and base == P and rs is not None:
                rsf = rel(S, F)
                if rs.dominates and rsf is not None and not rsf.worse:
                    verdict = STRUCTURED
                    reasons.append(f"Structured outputs ({S}) beat prompting on "
                                   f"{', '.join(_label(m) for m in rs.better)} and are worse on nothing, while "
                                   f"{F} only matches prompting.")
                    pool = []
                elif rs.equivalent:
                    pool.append(S)
                elif not rs.worse:
                    notes.append(f"{S} against {P} is inconclusive: structured outputs are left out of the cost "
                                 "comparison.")
            if pool:
                reasons.insert(0, f"{F} and {base} are equivalent: every measure's 95% interval of the "
                               f"difference lies within +-{100 * margin:g} points.")
                verdict = cost_decides(pool)
        elif r.dominates:
            # Structured outputs already shown worse than prompting are out of the running.
            rfs = rel(F, S) if (S and base == P and not (rs is not None and rs.worse)) else None
            if rfs is None:
                verdict = FINE_TUNE
                reasons.append(fine_tune_text(r, base))
            elif rfs.worse and not rfs.better:
                verdict = STRUCTURED
                reasons.append(f"{F} beats {base}, but structured outputs ({S}) beat {F} on "
                               f"{', '.join(_label(m) for m in rfs.worse)} without any training.")
            elif rfs.equivalent:
                reasons.append(fine_tune_text(r, base))
                reasons.append(f"Structured outputs ({S}) are equivalent to {F} (within +-{100 * margin:g} "
                               "points on every measure), without any training.")
                verdict = cost_decides([F, S])
            elif rfs.dominates:
                verdict = FINE_TUNE
                reasons.append(fine_tune_text(r, base))
                reasons.append(f"{F} is also significantly better than structured outputs ({S}) on "
                               f"{', '.join(_label(m) for m in rfs.better)}: constrained decoding gives the "
                               "format, not the right content.")
            else:
                reasons.append(fine_tune_text(r, base))
                reasons.append(f"But {F} against structured outputs ({S}) is "
                               + ("a trade-off (better on some measures, worse on others)" if rfs.better
                                  else "inconclusive: neither better nor shown equivalent")
                               + ", and structured outputs need no training: evaluate on more examples.")
        elif S and base == P and rs is not None and rs.dominates and not (rel(S, F) and rel(S, F).worse):
            verdict = STRUCTURED
            reasons.append(f"Structured outputs ({S}) are significantly better than prompting on "
                           f"{', '.join(_label(m) for m in rs.better)} and worse on nothing; {F} against "
                           f"{P} is inconclusive.")
    elif S and P:
        r = rel(S, P)
        if r is None:
            reasons.append(f"No paired comparison of {S} and {P} was possible (no examples both answered).")
        elif r.worse:
            verdict = KEEP_PROMPTING
            reasons.append(f"Structured outputs ({S}) are significantly worse than {P} on "
                           f"{', '.join(_label(m) for m in r.worse)}: constrained decoding fixes the format "
                           "but here it cost accuracy; keep the prompt.")
        elif r.equivalent:
            reasons.insert(0, f"{S} and {P} are equivalent: every measure's 95% interval of the difference "
                           f"lies within +-{100 * margin:g} points.")
            verdict = cost_decides([P, S])
        elif r.dominates:
            verdict = STRUCTURED
            reasons.append(f"Structured outputs ({S}) are significantly better than {P} on "
                           f"{', '.join(_label(m) for m in r.better)} and worse on nothing: constrained "
                           "decoding gives the format without training.")

    if verdict == NOT_ENOUGH and not reasons:
        reasons.append(f"The comparisons on {len(confirm)} held-out examples are inconclusive: no candidate is "
                       "shown better, and none is shown equivalent (within "
                       f"+-{100 * margin:g} points): evaluate on more before paying for training.")
    if verdict == NOT_ENOUGH and len(chosen) >= 2 and not too_many:
        for c in comparisons:
            if c.significant or c.equivalent:
                continue
            if c.discordant is not None and c.diff != 0:
                need = M.pairs_needed(abs(c.diff), 0.0, c.discordant / c.n)
                if need:
                    rough = f"; a rough figure from only {c.discordant} disagreements" if c.discordant < 5 else ""
                    reasons.append(f"{_label(c.metric)}, {c.a} against {c.b}: {_pts(c.diff)} points is not "
                                   f"significant; about {need:,} paired examples would detect a difference this "
                                   f"size (80% power at 5%), assuming the observed difference and disagreement "
                                   f"rate ({_pct(c.discordant / c.n)}) are the true ones{rough}.")
            half = (c.eq_high - c.eq_low) / 2
            if half > margin:
                reasons.append(f"{_label(c.metric)}, {c.a} against {c.b}: equivalence is not shown (95% interval "
                               f"{_pts(c.eq_low)} to {_pts(c.eq_high)} points, wider than +-{100 * margin:g}); "
                               f"roughly {math.ceil(c.n * (half / margin) ** 2):,} examples would narrow it "
                               "enough if the difference is really zero.")

    # ----- every significant difference, either way
    significant = [_cmp_text(c) for c in comparisons if c.significant]
    if significant:
        reasons.append("Significant differences (Holm-adjusted, 5% family-wise over "
                       f"{len(comparisons)} tests): " + "; ".join(significant) + ".")
    elif comparisons:
        reasons.append(f"No difference is significant after the Holm adjustment over {len(comparisons)} tests.")
    for name, f in failures.items():
        if f["failed"]:
            notes.append(f"{name}: {f['failed']} of {f['n']} calls failed after retries ({_pct(f['rate'])}); "
                         "they are not answers, so they count in no rate and are left out of every paired "
                         "comparison (see results.jsonl, \"failed\": true).")

    # ----- shorter prompts, latency and cost, whatever the verdict
    if F and (P or S):
        base = P or S
        fi = (cands[F].get("priced_input_tokens") or {}).get("value")
        pi = (cands[base].get("priced_input_tokens") or {}).get("value")
        if fi is not None and pi is not None and pi > 0 and fi < pi:
            reasons.append(f"Shorter prompts: {F} sends {fi:.0f} input tokens per call against {base}'s {pi:.0f} "
                           f"({100 * (1 - fi / pi):.0f}% fewer).")
        lf, lp = cands[F].get("latency_p50_s"), cands[base].get("latency_p50_s")
        if lf and lp:
            reasons.append(f"Latency p50: {F} {lf * 1000:.0f} ms, {base} {lp * 1000:.0f} ms.")
    if be is not None:
        reasons.append(_cost_reason(be, volume, assumed, cands))
    if training is None and F:
        notes.append("Training cost unknown (pass --training-cost, --training-file with --model, or --job): it "
                     "is not counted as $0; the cost comparison says what it would have to stay under.")
    if assumed:
        notes.append(f"Volume assumed: {DEFAULT_CALLS_PER_MONTH:,} calls a month (pass --calls-per-month)"
                     + ("; the verdict depends on it." if depends_on_volume else "; the verdict does not depend "
                        "on it." if verdict != NOT_ENOUGH else "."))

    shifted_run = None
    if shifted is not None:
        shifted_run = shifted if isinstance(shifted, EvalRun) else load_run(shifted)
        missing = sorted(set(cands) - set(shifted_run.metrics["candidates"]))
        if missing:
            raise UsageError(f"the shifted evaluation has no results for {', '.join(missing)}.",
                             hint="Evaluate the same candidates file on the shifted split.")
    from tunewise.eval.claims import claims as guide_claims

    claim_rows, shift = guide_claims(run, comparisons=[c.to_dict() for c in comparisons], chosen=chosen,
                                     candidates=cands, task=task, format_metric=fmt, accuracy_metric=accuracy,
                                     primary_metric=primary_metric, shifted=shifted_run, claim=claim)
    headline = f"Verdict: {verdict}. {reasons[0]}" if reasons else f"Verdict: {verdict}."
    return Decision(verdict=verdict, headline=headline, reasons=reasons, task=task, format_metric=fmt,
                    accuracy_metric=accuracy, chosen=chosen, candidates=cands,
                    comparisons=[c.to_dict() for c in comparisons], calls_per_month=volume,
                    calls_per_month_assumed=assumed, training_cost=training, breakeven=be,
                    loss_curve=loss_curve, eval_dir=str(run.out_dir) if run.out_dir else None,
                    n_examples=int(run.metrics.get("n_examples", 0)), notes=notes,
                    primary_metric=primary_metric, secondary_metrics=measures[1:], alpha=ALPHA, margin=margin,
                    max_failure_rate=max_failure_rate, failures=failures, selection=selection,
                    significant=significant, depends_on_volume=depends_on_volume,
                    cache_hit_rate=cache_hit_rate, training_cost_known=training is not None,
                    claims=claim_rows, shift=shift, claim=claim)


def _cost_reason(be: dict, volume: float, assumed: bool, cands: dict[str, dict]) -> str:
    vol = f"{volume:,.0f} calls a month" + (" (assumed; pass --calls-per-month)" if assumed else "")
    b, f = be["base_candidate"], be["ft_candidate"]

    def tokens(name: str) -> str:
        s = cands[name]
        tin = (s.get("priced_input_tokens") or {}).get("value")
        tout = (s.get("priced_output_tokens") or {}).get("value")
        cached = s.get("cached_input_tokens") or 0
        if tin is None or tout is None:
            return ""
        extra = f", {cached:,.0f} of them cached" if cached else ""
        return f" ({tin:,.0f} input{extra} + {tout:,.0f} output tokens per call)"

    text = (f"Cost at {vol}, each candidate with its own measured tokens: {b} {usd(be['base_monthly'])}/month"
            f"{tokens(b)}, {f} {usd(be['ft_monthly'])}/month{tokens(f)}; training "
            f"{usd(be['training_cost']) if be['training_cost_known'] else 'unknown'}.")
    if be["never_pays"] and be["saving_per_call"] <= 0:
        text += " Fine-tuning never pays back on cost: only a quality gain can justify it."
    elif not be["training_cost_known"]:
        text += (f" Fine-tuning saves {usd(be['monthly_saving'])}/month: it pays back within "
                 f"{be['horizon_months']:g} months if training costs under {usd(be['max_training_cost'])}.")
    elif be.get("breakeven_calls_per_month") is not None:
        text += (f" Break-even: {be['breakeven_calls_per_month']:,} calls a month pay training back within "
                 f"{be['horizon_months']:g} months")
        if be.get("months_to_recover") is not None:
            text += f"; at this volume it takes {months_text(be['months_to_recover'])}"
        text += "."
    return text

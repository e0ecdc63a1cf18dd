"""The decision: fine-tune, keep prompting, use structured outputs, or not enough evidence.

The evaluation's candidates fall into three roles: ``prompting`` (a base model with a prompt, perhaps long and
with few-shot turns), ``structured`` (a base model with a ``response_format``: constrained decoding gives the
format without training) and ``fine-tuned``. The best candidate of each role is compared with the others on
the same examples, on two things the guide cares about:

- **format**: schema adherence (valid JSON when no schema was given), for JSON answers;
- **accuracy**: exact match of the parsed answer for JSON, token F1 for free text.

Each difference is tested on the paired examples (McNemar's exact test for rates, a paired bootstrap for
means) at the 5% level. A difference that is not significant is no difference; two candidates are only called
equivalent when the whole 95% interval of the difference lies within ``EQUIVALENCE_MARGIN``. Then:

1. fine-tuned significantly less accurate than prompting -> **keep prompting** (fine-tuning teaches behaviour,
   not facts or reasoning);
2. fine-tuned significantly better on accuracy or format (and not worse on the other) -> **fine-tune**, unless
   a structured-outputs candidate is as good on both -> **use structured outputs**;
3. structured significantly better on format than prompting, not worse on accuracy -> **use structured outputs**;
4. fine-tuned and prompting equivalent on both -> the cheaper at the user's volume (training amortised over the
   cost model's horizon): **fine-tune** for the shorter prompt, or **keep prompting**;
5. otherwise -> **not enough evidence**, with the number of examples that would settle it.

Cost comes from each candidate's measured tokens and catalog prices; the break-even point from
``tunewise.cost.breakeven``.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, NotFound, UsageError
from tunewise.eval import metrics as M
from tunewise.eval.runner import EvalRun, load_run

FINE_TUNE = "fine-tune"
KEEP_PROMPTING = "keep prompting"
STRUCTURED = "use structured outputs"
NOT_ENOUGH = "not enough evidence"
VERDICTS = (FINE_TUNE, KEEP_PROMPTING, STRUCTURED, NOT_ENOUGH)

EQUIVALENCE_MARGIN = 0.05
"""Two candidates are equivalent on a metric when the 95% interval of their difference lies within +-5 points."""
DEFAULT_CALLS_PER_MONTH = 10_000
"""Volume assumed when none is given (the report says so)."""
METRICS_CSV_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


@dataclass
class Decision:
    """The verdict with its evidence: what the report shows and ``decision.json`` holds."""

    verdict: str
    """One of ``VERDICTS``."""
    headline: str
    """One sentence: the verdict and the main reason."""
    reasons: list[str]
    """Why, in the guide's terms (format adherence, shorter prompts, style; facts and reasoning; structured outputs)."""
    task: str
    """``json`` or ``text``: which metrics decided."""
    format_metric: str | None
    accuracy_metric: str
    chosen: dict[str, str]
    """Role -> the candidate that represents it (the best of that role by accuracy)."""
    candidates: dict[str, dict]
    """Per-candidate metrics (``metrics.json``), with ``monthly_cost_usd`` added."""
    comparisons: list[dict]
    """Paired comparisons between the chosen candidates (``Comparison.to_dict()``)."""
    calls_per_month: float
    calls_per_month_assumed: bool
    training_cost: float | None
    breakeven: dict | None
    """``tunewise.cost.Breakeven.to_dict()`` for fine-tuned vs prompting, when both are priced."""
    loss_curve: list[dict] | None = None
    """Rows of the training metrics CSV (step, train_loss, valid_loss, ...), when one was given."""
    eval_dir: str | None = None
    n_examples: int = 0
    notes: list[str] = field(default_factory=list)

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


# ---------------------------------------------------------------- the decision

def _value(summary: dict, metric: str | None) -> float | None:
    entry = summary.get(metric) if metric else None
    return entry["value"] if entry else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _est(summary: dict, metric: str) -> str:
    e = summary.get(metric)
    if not e or e.get("value") is None:
        return "n/a"
    return f"{_pct(e['value'])} [{_pct(e['low'])}, {_pct(e['high'])}]"


def _diff(c: M.Comparison) -> str:
    return (f"{100 * c.diff:+.1f} points (95% CI {100 * c.low:+.1f} to {100 * c.high:+.1f}; "
            f"{c.test} p={c.p_value:.3g}, n={c.n})")


def _equivalent(c: M.Comparison | None, margin: float) -> bool:
    return c is not None and -margin <= c.low and c.high <= margin


def _pick(run: EvalRun, names: list[str], accuracy: str, fmt: str | None) -> str | None:
    """The best candidate of a role: highest accuracy, then format, then fewest input tokens."""
    if not names:
        return None
    cands = run.metrics["candidates"]

    def key(name: str):
        s = cands[name]
        tokens = (s.get("input_tokens") or {}).get("value") or 0
        return (_value(s, accuracy) or 0, _value(s, fmt) or 0, -tokens)

    return max(names, key=key)


def _per_example(run: EvalRun, name: str, metric: str) -> list:
    return [r.get(metric) for r in run.rows(name)]


def _cost_per_call(summary: dict) -> float | None:
    cost = summary.get("cost_per_1k_usd")
    return None if not cost or cost.get("value") is None else cost["value"] / 1000


def _mean(summary: dict, name: str) -> float | None:
    entry = summary.get(name)
    return None if not entry else entry.get("value")


def decide(eval_dir: str | os.PathLike | EvalRun, *, calls_per_month: float | None = None,
           training_cost: float | None = None, training_file: str | os.PathLike | None = None,
           model: str | None = None, epochs: int | str = "auto", job: str | None = None,
           metrics_csv: str | os.PathLike | None = None, prices=None,
           margin: float = EQUIVALENCE_MARGIN) -> Decision:
    """Turn an evaluation (a ``tunewise eval`` output directory or an ``EvalRun``) into a verdict with reasons.

    ``calls_per_month``: the user's volume (default ``DEFAULT_CALLS_PER_MONTH``, flagged as assumed).
    Training cost: ``training_cost`` USD, or estimated from ``training_file`` on ``model`` for ``epochs``, or
    from a fetched ``job``'s trained tokens. ``metrics_csv`` (or ``job``) adds the loss curve.
    """
    run = eval_dir if isinstance(eval_dir, EvalRun) else load_run(eval_dir)
    if calls_per_month is not None and calls_per_month < 0:
        raise UsageError(f"--calls-per-month must be non-negative, not {calls_per_month}.")
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
    else:
        fmt, accuracy = None, "text_f1"

    by_role: dict[str, list[str]] = {"prompting": [], "structured": [], "fine-tuned": []}
    for name, s in cands.items():
        by_role.setdefault(s.get("role", "prompting"), []).append(name)
    chosen = {role: _pick(run, names, accuracy, fmt) for role, names in by_role.items()}
    chosen = {role: name for role, name in chosen.items() if name}
    F, P, S = chosen.get("fine-tuned"), chosen.get("prompting"), chosen.get("structured")
    for role, names in by_role.items():
        if len(names) > 1:
            notes.append(f"{chosen[role]} stands for the {role} candidates, the most accurate of {len(names)} "
                         f"({', '.join(names)}); picking the best of several favours it slightly.")

    comparisons: list[M.Comparison] = []

    def cmp(a: str | None, b: str | None, metric: str | None) -> M.Comparison | None:
        if a is None or b is None or metric is None:
            return None
        c = M.compare(metric, a, _per_example(run, a, metric), b, _per_example(run, b, metric))
        if c.n == 0:
            return None
        comparisons.append(c)
        return c

    fa, ff = cmp(F, P, accuracy), cmp(F, P, fmt)
    sa, sf = cmp(F, S, accuracy), cmp(F, S, fmt)
    spa, spf = cmp(S, P, accuracy), cmp(S, P, fmt)
    if task == "json" and F and P:
        cmp(F, P, "field_f1")

    # ----- cost at the user's volume
    for s in cands.values():
        per_call = _cost_per_call(s)
        s["monthly_cost_usd"] = None if per_call is None else per_call * volume
    be = None
    if F and P:
        be = _breakeven(cands[F], cands[P], volume, training, prices, notes)

    reasons: list[str] = []
    out = lambda o: "same" if o is None else o.outcome  # noqa: E731

    def fmt_reason(a: str, b: str, c: M.Comparison) -> str:
        label = "schema adherence" if fmt == "schema_adherence" else "valid JSON"
        return (f"Format adherence: {a} {_est(cands[a], fmt)} {label} against {b} {_est(cands[b], fmt)}, "
                f"a difference of {_diff(c)}.")

    def acc_reason(a: str, b: str, c: M.Comparison) -> str:
        label = "exact match" if accuracy == "exact_match" else "token F1"
        return f"Accuracy ({label}): {a} {_est(cands[a], accuracy)} against {b} {_est(cands[b], accuracy)}, {_diff(c)}."

    verdict = NOT_ENOUGH
    if len(chosen) < 2:
        reasons.append("Only one kind of candidate was evaluated ("
                       + ", ".join(f"{r}: {n}" for r, n in chosen.items())
                       + "): a decision needs a fine-tuned or structured-outputs candidate beside a prompting one.")
    elif F and P and out(fa) == "worse":
        verdict = KEEP_PROMPTING
        reasons.append(acc_reason(F, P, fa))
        if ff is not None and out(ff) != "worse":
            reasons.append("The fine-tuned model keeps the format but gets the content wrong more often. "
                           "Fine-tuning teaches behaviour (format, style, shorter prompts), not new facts or "
                           "reasoning: put the knowledge in the prompt (or retrieval) instead.")
        else:
            reasons.append("Fine-tuning does not help with facts or reasoning, and here it did not even hold "
                           "the format better.")
    elif S and P and not F and out(spa) == "worse":
        verdict = KEEP_PROMPTING
        reasons.append(acc_reason(S, P, spa))
        reasons.append("Constrained decoding fixes the format but here it cost accuracy: keep the prompt"
                       + (f" (format adherence: {_diff(spf)})." if spf is not None else "."))
    elif F and P and (out(fa) == "better" or (out(ff) == "better" and out(fa) != "worse")):
        if S and out(sa) != "better" and out(sf) != "better" and out(spa) != "worse":
            verdict = STRUCTURED
            gaps = [f"{label} {_diff(c)}" for label, c in (("format", sf), ("accuracy", sa)) if c is not None]
            reasons.append(f"Structured outputs ({S}) match the fine-tuned model ({F}) on format and accuracy "
                           f"without any training ({F} minus {S}: " + "; ".join(gaps) + ").")
            if spf is not None and out(spf) == "better":
                reasons.append(fmt_reason(S, P, spf))
        else:
            verdict = FINE_TUNE
            if out(ff) == "better":
                reasons.append(fmt_reason(F, P, ff) + " The guide: fine-tuning produces near-100% adherence "
                               "where prompting produces 85-90%.")
            if fa is not None and out(fa) == "better":
                reasons.append(acc_reason(F, P, fa) + (" Style and tone are learned from examples, which "
                                                       "few-shot prompts imitate less reliably."
                                                       if task == "text" else ""))
            if S and sa is not None and out(sa) == "better":
                reasons.append(f"Structured outputs ({S}) already give the format "
                               f"({_est(cands[S], fmt) if fmt else 'n/a'}) but not the right content: "
                               f"{acc_reason(F, S, sa)}")
    elif S and P and out(spf) == "better" and out(spa) != "worse" and not (F and out(sa) == "better"):
        verdict = STRUCTURED
        reasons.append(fmt_reason(S, P, spf) + " Constrained decoding gives the format without training.")
        if spa is not None:
            reasons.append(acc_reason(S, P, spa))
    elif F and P and _equivalent(fa, margin) and (ff is None or _equivalent(ff, margin)):
        reasons.append(f"{F} and {P} are equivalent in quality: every difference's 95% interval lies within "
                       f"+-{100 * margin:.0f} points ({_diff(fa)}).")
        if be is not None and not be.get("never_pays") and be.get("monthly_saving", 0) > 0 and (
                be.get("months_to_recover") is not None and be["months_to_recover"] <= be["horizon_months"]):
            verdict = FINE_TUNE
            reasons.append("Shorter prompts: same quality for less per call, and at this volume the saving pays "
                           f"training back in {be['months_to_recover']:.1f} months.")
        else:
            verdict = KEEP_PROMPTING
            reasons.append("Same quality, and fine-tuning does not pay for itself at this volume: keep the prompt.")
    else:
        pairs = [c for c in (fa, ff, spa, spf) if c is not None]
        for c in pairs:
            if c.significant:
                continue
            extra = ""
            if c.metric in M.RATE_METRICS:
                a_vals, b_vals = _per_example(run, c.a, c.metric), _per_example(run, c.b, c.metric)
                both = [(x, y) for x, y in zip(a_vals, b_vals, strict=True) if x is not None and y is not None]
                disc = sum(1 for x, y in both if x != y) / max(1, len(both))
                need = M.pairs_needed(_value(cands[c.a], c.metric) or 0, _value(cands[c.b], c.metric) or 0, disc)
                if need:
                    extra = f"; about {need} examples would be needed to detect a difference this size"
            reasons.append(f"{c.metric.replace('_', ' ')}: {c.a} vs {c.b} differs by {_diff(c)}: not "
                           f"significant{extra}.")
        if not pairs:
            reasons.append("No paired comparison was possible (the candidates share no scored examples).")
        reasons.insert(0, f"No difference between the candidates is significant on {run.metrics.get('n_examples')} "
                       "held-out examples: evaluate on more before paying for training.")

    # Shorter prompts and cost, whatever the verdict.
    if F and P:
        fi, pi = _mean(cands[F], "priced_input_tokens"), _mean(cands[P], "priced_input_tokens")
        if fi is not None and pi is not None and pi > 0 and fi < pi:
            reasons.append(f"Shorter prompts: {F} sends {fi:.0f} input tokens per call against {P}'s {pi:.0f} "
                           f"({100 * (1 - fi / pi):.0f}% fewer).")
        lf, lp = cands[F].get("latency_p50_s"), cands[P].get("latency_p50_s")
        if lf and lp:
            reasons.append(f"Latency p50: {F} {lf * 1000:.0f} ms, {P} {lp * 1000:.0f} ms.")
    if be is not None:
        reasons.append(_cost_reason(be, volume, assumed))
    if any(cands[n].get("n_errors") for n in cands):
        notes.append("Some calls failed and count as wrong answers: "
                     + ", ".join(f"{n}: {s['n_errors']}" for n, s in cands.items() if s.get("n_errors"))
                     + " (see results.jsonl).")

    headline = f"Verdict: {verdict}. {reasons[0]}" if reasons else f"Verdict: {verdict}."
    return Decision(verdict=verdict, headline=headline, reasons=reasons, task=task, format_metric=fmt,
                    accuracy_metric=accuracy, chosen=chosen, candidates=cands,
                    comparisons=[c.to_dict() for c in comparisons], calls_per_month=volume,
                    calls_per_month_assumed=assumed, training_cost=training, breakeven=be,
                    loss_curve=loss_curve, eval_dir=str(run.out_dir) if run.out_dir else None,
                    n_examples=int(run.metrics.get("n_examples", 0)), notes=notes)


def _breakeven(f: dict, p: dict, volume: float, training: float | None, prices, notes: list[str]) -> dict | None:
    """``tunewise.cost.breakeven`` for the fine-tuned candidate's base model, from measured tokens."""
    pf, pp = f.get("pricing") or {}, p.get("pricing") or {}
    base = pf.get("price_model")
    if not base:
        notes.append("The fine-tuned candidate has no catalog price: no break-even (set its price_model).")
        return None
    if pp.get("price_model") and pp["price_model"] != base:
        notes.append(f"Break-even uses {base}'s base and fine-tuned prices; the prompting candidate is priced "
                     f"as {pp['price_model']}, so its own cost line in the plot differs.")
    pin, fin = _mean(p, "priced_input_tokens"), _mean(f, "priced_input_tokens")
    out_tokens = _mean(f, "priced_output_tokens")
    if pin is None or fin is None or out_tokens is None:
        notes.append("Token counts are missing (every call failed?): no break-even.")
        return None
    from tunewise.cost import breakeven

    be = breakeven(base, pin, fin, out_tokens, volume, training_cost=training, prices=prices)
    notes.extend(n for n in be.notes if n not in notes)
    return be.to_dict()


def _cost_reason(be: dict, volume: float, assumed: bool) -> str:
    vol = f"{volume:,.0f} calls a month" + (" (assumed; pass --calls-per-month)" if assumed else "")
    text = (f"Cost at {vol}: prompting ${be['base_monthly']:,.2f}/month, fine-tuned ${be['ft_monthly']:,.2f}/month"
            f" (per 1k calls ${be['base_per_1k']:.4f} vs ${be['ft_per_1k']:.4f}), training ${be['training_cost']:,.2f}.")
    if be.get("never_pays"):
        text += " Fine-tuning never pays back on cost: only a quality gain can justify it."
    elif be.get("breakeven_calls_per_month") is not None:
        text += (f" Break-even: {be['breakeven_calls_per_month']:,} calls a month pay training back within "
                 f"{be['horizon_months']:g} months")
        if be.get("months_to_recover") is not None:
            text += f"; at your volume it takes {be['months_to_recover']:.1f} months"
        text += "."
    return text

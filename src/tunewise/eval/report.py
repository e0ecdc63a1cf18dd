"""The report: a self-contained HTML page (plots embedded as base64 PNG, no external assets) and a Markdown
summary beside its PNG files, both written from a ``Decision``.

Plots (matplotlib, Agg backend so no display is needed): training and validation loss by step (when a metrics
CSV was given), format adherence and accuracy per candidate with 95% intervals, and monthly cost against
calls per month with the break-even point marked.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from tunewise.eval.decide import Decision, _p, usd

PLOT_DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window, never need a display
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _legend_below(fig, ncols: int) -> None:
    """The figure's legend under the axes (outside them: it never covers a bar, a line or a point)."""
    handles, labels = [], []
    for ax in fig.axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, len(handles))),
                   frameon=False, fontsize=9)


def loss_figure(rows: list[dict]):
    """The loss plot as a matplotlib figure (None without losses); ``plot_loss`` renders it."""
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    valid = [(r["step"], r["valid_loss"]) for r in rows if r.get("valid_loss") is not None]
    if not train and not valid:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.9), layout="constrained")
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss", color="#4c72b0", linewidth=1.2)
    if valid:
        ax.plot(*zip(*valid, strict=True), label="validation loss", color="#dd8452", marker="o", markersize=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 2.5 or 7.5
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    _legend_below(fig, ncols=2)
    return fig


def plot_loss(rows: list[dict]) -> bytes | None:
    """Training (and validation, where measured) loss by step."""
    fig = loss_figure(rows)
    return None if fig is None else _png(fig)


def quality_figure(decision: Decision):
    """The quality plot as a matplotlib figure (None without candidates); ``plot_quality`` renders it."""
    metrics = [m for m in (decision.format_metric, decision.accuracy_metric) if m]
    names = list(decision.candidates)
    if not names:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 4.2), layout="constrained")
    width = 0.8 / len(metrics)
    colors = ["#55a868", "#4c72b0"]
    for k, metric in enumerate(metrics):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(names):
            e = decision.candidates[name].get(metric)
            if not e or e.get("value") is None:
                continue
            xs.append(i + (k - (len(metrics) - 1) / 2) * width)
            ys.append(100 * e["value"])
            lo.append(max(0.0, 100 * (e["value"] - e["low"])))
            hi.append(max(0.0, 100 * (e["high"] - e["value"])))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=4, color=colors[k % 2], label=metric.replace("_", " "))
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of examples (95% CI)")
    ax.set_title("Format adherence and accuracy per candidate")
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, ncols=len(metrics))
    return fig


def plot_quality(decision: Decision) -> bytes | None:
    """Format adherence and accuracy per candidate, bars with 95% interval whiskers."""
    fig = quality_figure(decision)
    return None if fig is None else _png(fig)


def cost_figure(decision: Decision):
    """The cost plot as a matplotlib figure (None without per-call costs); ``plot_cost`` renders it."""
    import numpy as np

    be = decision.breakeven
    per_call = {n: s.get("cost_per_call_usd") for n, s in decision.candidates.items()}
    per_call = {n: v for n, v in per_call.items() if v is not None}
    if not per_call:
        return None
    top = max(decision.calls_per_month, 1.0) * 10
    if be and be.get("breakeven_calls_per_month"):
        top = max(top, be["breakeven_calls_per_month"] * 3)
    x = np.logspace(2, np.log10(max(top, 1000)), 200)
    horizon = (be or {}).get("horizon_months") or 12
    training = decision.training_cost or 0.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for name, cost in per_call.items():
        role = decision.candidates[name].get("role")
        y = cost * x
        label = name
        if role == "fine-tuned" and training:
            y = y + training / horizon
            label += f" (+ training over {horizon:g} months)"
        elif role == "fine-tuned" and decision.training_cost is None:
            label += " (training cost unknown, not included)"
        ax.plot(x, y, label=label, linewidth=1.4)
    ax.axvline(decision.calls_per_month, color="grey", linestyle=":", label="your volume")
    if be and be.get("breakeven_calls_per_month"):
        bx = be["breakeven_calls_per_month"]
        f_name = decision.chosen.get("fine-tuned")
        by = (per_call.get(f_name, be["ft_per_call"])) * bx + training / horizon
        ax.plot([bx], [by], marker="*", markersize=14, color="crimson", linestyle="none",
                label=f"break-even: {bx:,} calls/month")
    ax.set_xscale("log")
    if all(v > 0 for v in per_call.values()):
        # Costs span orders of magnitude with volume: on a log scale the lines stay apart and the crossing shows.
        ax.set_yscale("log")
    elif not training and not any(per_call.values()):
        # Nothing is priced (local models): a flat line at $0, on an axis that does not go below it.
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.55, "every candidate costs $0 here (local models, no price)", transform=ax.transAxes,
                ha="center", va="center", color="#555555", bbox={"facecolor": "white", "edgecolor": "none"})
    ax.set_xlabel("calls per month")
    ax.set_ylabel("USD per month")
    ax.set_title("Monthly cost against volume")
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, ncols=2)
    return fig


def plot_cost(decision: Decision) -> bytes | None:
    """Monthly cost against calls per month; the fine-tuned line carries training amortised over the horizon."""
    fig = cost_figure(decision)
    return None if fig is None else _png(fig)


def _fmt_est(e: dict | None, pct: bool = True, digits: int = 1) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    scale = 100 if pct else 1
    unit = "%" if pct else ""
    return (f"{scale * e['value']:.{digits}f}{unit} [{scale * e['low']:.{digits}f}, "
            f"{scale * e['high']:.{digits}f}]")


def _table_rows(decision: Decision) -> tuple[list[str], list[list[str]]]:
    tools = decision.task == "tools"
    quality = (("right function", "tool_name_match"), ("tool-call exact match", "tool_exact_match"),
               ("argument field F1", "tool_args_f1")) if tools else (
        ("valid JSON", "valid_json"), ("schema", "schema_adherence"), ("exact match", "exact_match"),
        ("field F1", "field_f1"), ("text F1", "text_f1"))
    head = ["candidate", "role", "model", "n", "failed calls", *(label for label, _ in quality), "input tok",
            "output tok", "p50 ms", "p95 ms", "$ / 1k calls", "$ / month"]
    rows = []
    for name, s in decision.candidates.items():
        p50, p95 = s.get("latency_p50_s"), s.get("latency_p95_s")
        cost = (s.get("cost_per_1k_usd") or {}).get("value")
        monthly = s.get("monthly_cost_usd")
        per_call = s.get("cost_per_call_usd")
        if per_call is not None:
            cost = per_call * 1000
        failed = s.get("n_failed", s.get("n_errors", 0))
        rows.append([name, s.get("role", ""), s.get("model", ""), str(s.get("n", "")), str(failed),
                     *(_fmt_est(s.get(metric)) for _, metric in quality),
                     _fmt_est(s.get("priced_input_tokens"), pct=False, digits=0),
                     _fmt_est(s.get("priced_output_tokens"), pct=False, digits=0),
                     "n/a" if p50 is None else f"{p50 * 1000:.0f}", "n/a" if p95 is None else f"{p95 * 1000:.0f}",
                     usd(cost), usd(monthly)])
    return head, rows


def _comparison_rows(decision: Decision) -> tuple[list[str], list[list[str]]]:
    head = ["metric", "a", "b", "n", "left out (failed)", "a - b (points)", "95% CI (with the test)", "test", "p",
            "Holm p", "equivalence 95% CI", f"within +-{100 * decision.margin:g}", "outcome"]
    rows = []
    for c in decision.comparisons:
        primary = " (primary)" if c["metric"] == decision.primary_metric else ""
        rows.append([c["metric"] + primary, c["a"], c["b"], str(c["n"]), str(c.get("n_excluded", 0)),
                     f"{100 * c['diff']:+.1f}", f"{100 * c['low']:+.1f} to {100 * c['high']:+.1f}", c["test"],
                     _p(c["p_value"]), _p(c.get("p_adjusted")),
                     f"{100 * c.get('eq_low', -1):+.1f} to {100 * c.get('eq_high', 1):+.1f}",
                     "yes" if c.get("equivalent") else "no", c["outcome"]])
    return head, rows


def _claim_rows(decision: Decision) -> tuple[list[str], list[list[str]]]:
    head = ["the guide's claim", "measured", "outcome", "difference (points)", "95% CI", "in words"]
    rows = []
    for c in decision.claims:
        exact = c.get("low") is None
        diff = "" if c.get("diff") is None else f"{100 * c['diff']:+.1f}"
        ci = "exact (no sampling)" if exact else f"{100 * c['low']:+.1f} to {100 * c['high']:+.1f}"
        rows.append([c["claim"], c["measured"], c["outcome"], diff, ci, c["detail"]])
    return head, rows


def _shift_rows(decision: Decision) -> tuple[list[str], list[list[str]]]:
    metric = (decision.primary_metric or "").split(":", 1)[-1]
    head = ["candidate", "role", "few-shot examples", f"{metric}: held-out", f"{metric}: shifted",
            "drop (points)", "95% CI (Welch)"]
    rows = [[name, t.get("role") or "", str(t.get("few_shot") or 0),
             f"{100 * t['in_distribution']:.1f}% (n={t['n_in']})", f"{100 * t['shifted']:.1f}% (n={t['n_shifted']})",
             f"{100 * t['drop']:+.1f}", f"{100 * t['drop_low']:+.1f} to {100 * t['drop_high']:+.1f}"]
            for name, t in (decision.shift or {}).items()]
    return head, rows


CLAIMS_NOTE = ("Each of the guide's claims this evaluation can speak to. \"cannot show\": the model or the data "
               "is too small for the claim to show either way, which is not evidence against it.")


def _procedure(decision: Decision) -> str:
    """The decision procedure in one paragraph, with this evaluation's settings."""
    primary = (decision.primary_metric or "").replace("_", " ")
    secondary = ", ".join(m.replace("_", " ") for m in decision.secondary_metrics) or "none"
    split = ""
    if decision.selection:
        split = (f" Roles with several candidates were represented by the one chosen on "
                 f"{decision.selection['n_select']} examples (seeded random half); comparisons use the other "
                 f"{decision.selection['n_compare']}.")
    return (f"Primary measure: {primary}; secondary: {secondary}. Paired by example id; failed calls left out "
            f"(no verdict above {100 * decision.max_failure_rate:g}% failed). Rates: exact McNemar test with its "
            "exact interval; means: paired permutation test with the interval that inverts it. All tests that "
            f"feed the verdict Holm-adjusted ({100 * decision.alpha:g}% family-wise). Equivalence: two one-sided "
            f"tests, the 95% interval (Newcombe's for rates) within +-{100 * decision.margin:g} points. Any "
            "significant regression of the fine-tuned model blocks fine-tuning." + split)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} .verdict{font-size:1.3em;padding:.6em 1em;border-radius:6px;background:#eef3fb;
border-left:6px solid #4c72b0} table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left} th{background:#f3f3f3} img{max-width:100%}
.notes{color:#555;font-size:.9em}
"""


def write_report(decision: Decision, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``decision.json`` and ``plots/*.png`` to ``out_dir``.

    Returns the paths written, by name (``html``, ``markdown``, ``json`` and one per plot).
    """
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots: dict[str, bytes] = {}
    for name, make in (("loss", lambda: plot_loss(decision.loss_curve) if decision.loss_curve else None),
                       ("quality", lambda: plot_quality(decision)), ("cost", lambda: plot_cost(decision))):
        png = make()
        if png is not None:
            plots[name] = png
    captions = {"loss": "Training and validation loss by step", "quality": "Format adherence and accuracy "
                "per candidate (95% intervals)", "cost": "Monthly cost against calls per month, break-even marked"}
    written: dict[str, Path] = {}
    for name, png in plots.items():
        path = out / "plots" / f"{name}.png"
        path.write_bytes(png)
        written[name] = path

    head, rows = _table_rows(decision)
    chead, crows = _comparison_rows(decision)
    volume = f"{decision.calls_per_month:,.0f}" + (" (assumed)" if decision.calls_per_month_assumed else "")
    if decision.depends_on_volume:
        volume += ", and the verdict depends on it"
    training = "unknown (not counted as $0)" if decision.training_cost is None else usd(decision.training_cost)

    md = [f"# Should I fine-tune? {decision.verdict}", "", f"**{decision.headline}**", ""]
    khead, krows = _claim_rows(decision)
    if krows:
        md += ["## The guide's claims on this data", "", CLAIMS_NOTE, "", _md_table(khead, krows), ""]
    shead, srows = _shift_rows(decision)
    if srows:
        md += ["## Held-out and shifted split, side by side", "", _md_table(shead, srows), ""]
    md += ["## Why", ""]
    md += [f"- {r}" for r in decision.reasons]
    md += ["", "## Candidates", "", f"{decision.n_examples} held-out examples; calls per month {volume}; "
           f"training cost {training}. Rates and means with 95% intervals.", "", _md_table(head, rows), ""]
    md += ["## How this was decided", "", _procedure(decision), ""]
    if crows:
        md += ["## Paired comparisons", "", _md_table(chead, crows), ""]
    if plots:
        md += ["## Plots", ""] + [f"![{captions[n]}](plots/{n}.png)\n" for n in plots]
    if decision.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in decision.notes] + [""]
    if decision.eval_dir:
        md += [f"Per-example results: `{Path(decision.eval_dir) / 'results.jsonl'}`", ""]
    written["markdown"] = out / "report.md"
    written["markdown"].write_text("\n".join(md), encoding="utf-8")

    imgs = "".join(f'<figure><img alt="{html.escape(captions[n])}" src="data:image/png;base64,'
                   f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(captions[n])}</figcaption>'
                   "</figure>" for n, png in plots.items())
    page = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tunewise decision: {html.escape(decision.verdict)}</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Should I fine-tune?</h1>", f'<p class="verdict">{html.escape(decision.headline)}</p>',
        *([f"<h2>The guide's claims on this data</h2><p>{html.escape(CLAIMS_NOTE)}</p>", _html_table(khead, krows)]
          if krows else []),
        *(["<h2>Held-out and shifted split, side by side</h2>", _html_table(shead, srows)] if srows else []),
        "<h2>Why</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons) + "</ul>",
        f"<h2>Candidates</h2><p>{decision.n_examples} held-out examples; calls per month {html.escape(volume)}; "
        f"training cost {html.escape(training)}. Rates and means with 95% intervals.</p>", _html_table(head, rows),
    ]
    page += ["<h2>How this was decided</h2>", f"<p>{html.escape(_procedure(decision))}</p>"]
    if crows:
        page += ["<h2>Paired comparisons</h2>", _html_table(chead, crows)]
    if imgs:
        page += ["<h2>Plots</h2>", imgs]
    if decision.notes:
        page += ['<h2>Notes</h2><ul class="notes">'
                 + "".join(f"<li>{html.escape(n)}</li>" for n in decision.notes) + "</ul>"]
    page += ["</body></html>"]
    written["html"] = out / "report.html"
    written["html"].write_text("\n".join(page), encoding="utf-8")
    written["json"] = out / "decision.json"
    written["json"].write_text(json.dumps(_jsonable(decision.to_dict()), indent=2) + "\n", encoding="utf-8")
    return written


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x

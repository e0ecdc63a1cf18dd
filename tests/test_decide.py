"""The decision on constructed evaluations: a clearly better candidate, noise, structured outputs, a fine-tuned
model that loses on content, equivalence decided by cost; and the report written and well-formed."""

from __future__ import annotations

import base64
import json
import random
from html.parser import HTMLParser

import pytest

from tunewise.cost import breakeven
from tunewise.errors import DataError, UsageError
from tunewise.eval import Candidate, decide, read_metrics_csv, write_report
from tunewise.eval import metrics as M
from tunewise.eval.decide import FINE_TUNE, KEEP_PROMPTING, NOT_ENOUGH, STRUCTURED
from tunewise.eval.runner import EvalRun, load_run, pricing_for, save_run, summarize

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "store": {"type": "string"}},
          "required": ["total", "store"], "additionalProperties": False}


def reference(i: int) -> str:
    return json.dumps({"total": round(3 + i * 1.25, 2), "store": f"Shop {i}"})


def answer(i: int, kind: str) -> str:
    """``right``: the reference; ``content``: valid and schema-conform, wrong total; ``format``: prose."""
    if kind == "right":
        return json.dumps({"store": f"Shop {i}", "total": round(3 + i * 1.25, 2)})
    if kind == "content":
        return json.dumps({"total": 999.0, "store": f"Shop {i}"})
    return f"The total at Shop {i} is {3 + i * 1.25}"


def build_run(tmp_path, spec: dict[str, dict], n: int, schema=SCHEMA) -> EvalRun:
    """An evaluation directory from per-example outcomes, scored by the real metrics and saved like run_eval."""
    validator = M.make_validator(schema) if schema else None
    results, summaries, candidates = [], {}, []
    for name, s in spec.items():
        cand = Candidate(name=name, model=s["model"], price_model=s.get("price_model"),
                         response_format=s.get("response_format"))
        pricing = pricing_for(cand)
        rows = []
        for i in range(n):
            ans = answer(i, s["kinds"][i])
            row = {"candidate": name, "index": i, "line": i + 1, "prompt": [], "answer": ans,
                   "reference": reference(i), **M.score_answer(ans, reference(i), validator),
                   "latency_s": s.get("latency", 0.2), "input_tokens": s["input_tokens"],
                   "output_tokens": 20, "priced_input_tokens": s["input_tokens"], "priced_output_tokens": 20,
                   "cached": False, "error": None, "finish_reason": "stop"}
            row["cost_usd"] = pricing.per_call(s["input_tokens"], 20) if pricing.price_model else None
            rows.append(row)
        results += rows
        summaries[name] = {"model": cand.model, "role": cand.role, **summarize(rows, pricing)}
        candidates.append(cand.resolved())
    metrics = {"task": "json", "n_examples": n, "schema": schema is not None, "candidates": summaries, "notes": []}
    run = EvalRun(None, {"n_examples": n}, candidates, results, metrics)
    save_run(run, tmp_path / "eval")
    return load_run(tmp_path / "eval")


def kinds(n: int, right: float, fmt_fail: float = 0.0, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        out.append("right" if r < right else ("format" if r < right + fmt_fail else "content"))
    return out


BASE = {"model": "gpt-4o-mini", "input_tokens": 900}
FT = {"model": "ft:gpt-4o-mini-2024-07-18:org::abc123", "input_tokens": 60}
STRUCT = {"model": "gpt-4o-mini", "input_tokens": 400, "response_format": {"type": "json_schema"}}


def test_clearly_better_fine_tuned_model(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    d = decide(run, calls_per_month=200_000, training_cost=2.0)
    assert d.verdict == FINE_TUNE
    assert d.chosen == {"prompting": "base", "fine-tuned": "ft"}
    text = " ".join(d.reasons)
    assert "Format adherence" in text and "85-90%" in text  # the guide's terms
    assert "Shorter prompts" in text
    outcomes = {c["metric"]: c["outcome"] for c in d.comparisons if {c["a"], c["b"]} == {"ft", "base"}}
    assert outcomes["exact_match"] == "better" and outcomes["schema_adherence"] == "better"
    # Cost comes from tunewise.cost.breakeven on the measured tokens.
    expected = breakeven("gpt-4o-mini-2024-07-18", 900, 60, 20, 200_000, training_cost=2.0)
    assert d.breakeven["ft_monthly"] == pytest.approx(expected.ft_monthly)
    assert d.breakeven["breakeven_calls_per_month"] == expected.breakeven_calls_per_month
    assert d.candidates["base"]["monthly_cost_usd"] == pytest.approx(expected.base_monthly)


def test_noise_is_not_enough_evidence(tmp_path):
    n = 20
    a = kinds(n, 0.6, 0.1, seed=3)
    b = a[5:] + a[:5]  # same rates, shuffled: any difference is noise
    run = build_run(tmp_path, {"base": {**BASE, "kinds": a}, "ft": {**FT, "kinds": b}}, n)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH
    assert "No difference" in d.reasons[0]
    assert d.calls_per_month_assumed
    assert all(c["outcome"] == "same" for c in d.comparisons)


def test_small_gain_on_few_examples_is_not_enough(tmp_path):
    # 70% vs 55% on 20 examples looks like a gain, but its interval spans zero.
    n = 20
    base = ["right"] * 11 + ["content"] * 9
    ft = ["right"] * 11 + ["right"] * 3 + ["content"] * 6
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH
    assert any("examples would be needed" in r for r in d.reasons)


def test_structured_outputs_match_fine_tuning(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.5, 0.45, seed=2)},
                               "ft": {**FT, "kinds": ["right"] * 36 + ["content"] * 4},
                               "structured": {**STRUCT, "kinds": ["right"] * 35 + ["content"] * 5}}, n)
    d = decide(run)
    assert d.verdict == STRUCTURED
    assert d.chosen["structured"] == "structured"
    assert "without any training" in d.reasons[0]


def test_structured_gives_format_not_content(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.3, 0.5, seed=4)},
                               "ft": {**FT, "kinds": ["right"] * 37 + ["content"] * 3},
                               "structured": {**STRUCT, "kinds": ["right"] * 14 + ["content"] * 26}}, n)
    d = decide(run)
    assert d.verdict == FINE_TUNE
    assert any("already give the format" in r and "not the right content" in r for r in d.reasons)


def test_structured_beats_prompting_without_fine_tuned_candidate(tmp_path):
    n = 30
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 15 + ["format"] * 15},
                               "structured": {**STRUCT, "kinds": ["right"] * 15 + ["content"] * 15}}, n)
    assert decide(run).verdict == STRUCTURED


def test_structured_outputs_that_cost_accuracy(tmp_path):
    n = 30
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 27 + ["format"] * 3},
                               "structured": {**STRUCT, "kinds": ["right"] * 12 + ["content"] * 18}}, n)
    d = decide(run)
    assert d.verdict == KEEP_PROMPTING
    assert "cost accuracy" in d.reasons[1]


def test_best_of_several_prompts_stands_for_prompting(tmp_path):
    n = 30
    run = build_run(tmp_path, {"short": {**BASE, "input_tokens": 100, "kinds": ["format"] * 30},
                               "long": {**BASE, "kinds": ["right"] * 20 + ["format"] * 10},
                               "ft": {**FT, "kinds": ["right"] * 21 + ["format"] * 9}}, n)
    d = decide(run)
    assert d.chosen["prompting"] == "long"
    assert any("most accurate of 2" in note for note in d.notes)
    assert d.verdict == NOT_ENOUGH


def test_fine_tuned_model_that_gets_content_wrong(tmp_path):
    # Fine-tuned: perfect format, wrong facts. Prompting: knows the facts. Fine-tuning does not add facts.
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 34 + ["format"] * 6},
                               "ft": {**FT, "kinds": ["right"] * 15 + ["content"] * 25}}, n)
    d = decide(run)
    assert d.verdict == KEEP_PROMPTING
    assert "not new facts or reasoning" in " ".join(d.reasons)


@pytest.mark.parametrize(("ft_tokens", "verdict"), [(60, FINE_TUNE), (2000, KEEP_PROMPTING)])
def test_equivalent_quality_decided_by_cost(tmp_path, ft_tokens, verdict):
    # 400 examples, identical answers: the difference's interval is +-0, well inside the equivalence margin.
    n = 400
    same = ["right"] * 360 + ["content"] * 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": same},
                               "ft": {**FT, "input_tokens": ft_tokens, "kinds": same}}, n)
    d = decide(run, calls_per_month=1_000_000, training_cost=5.0)
    assert d.verdict == verdict
    assert "equivalent" in d.reasons[0]


def test_one_kind_of_candidate_is_not_enough(tmp_path):
    run = build_run(tmp_path, {"a": {**BASE, "kinds": ["right"] * 10}, "b": {**BASE, "kinds": ["format"] * 10}}, 10)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH and "Only one kind" in d.reasons[0]


def test_training_cost_arguments(tmp_path):
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 10}, "ft": {**FT, "kinds": ["right"] * 10}}, 10)
    with pytest.raises(UsageError, match="not both"):
        decide(run, training_cost=1.0, training_file="x.jsonl")
    with pytest.raises(UsageError, match="needs --model"):
        decide(run, training_file="x.jsonl")
    with pytest.raises(UsageError, match="non-negative"):
        decide(run, calls_per_month=-1)
    with pytest.raises(UsageError, match="not an evaluation directory"):
        decide(tmp_path / "nowhere")


METRICS_CSV = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n" + "".join(
    f"{s},{2.5 / s:.4f},{0.5 + s / 40:.3f},{(f'{2.7 / s:.4f}') if s % 5 == 0 else ''},"
    f"{(f'{0.5 + s / 45:.3f}') if s % 5 == 0 else ''}\n" for s in range(1, 21))


def test_read_metrics_csv_plain_and_base64(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    rows = read_metrics_csv(path)
    assert len(rows) == 20 and rows[0]["step"] == 1 and rows[0]["train_loss"] == 2.5
    assert rows[0]["valid_loss"] is None and rows[4]["valid_loss"] == pytest.approx(0.54)
    # OpenAI serves the result file base64-encoded.
    assert read_metrics_csv(base64.b64encode(METRICS_CSV.encode())) == rows
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a step metrics CSV"):
        read_metrics_csv(bad)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.images, self.external, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)
        if tag == "img":
            self.images.append(a["src"])
        for key in ("href", "src"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_and_well_formed(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    (tmp_path / "m.csv").write_text(METRICS_CSV)
    d = decide(run, calls_per_month=50_000, training_cost=3.0, metrics_csv=tmp_path / "m.csv")
    paths = write_report(d, tmp_path / "report")

    page = _Page()
    page.feed(paths["html"].read_text())
    page.close()
    assert page.stack == []  # every element closed
    assert page.external == []  # no external assets
    assert len(page.images) == 3  # loss, quality, cost
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    text = " ".join(page.text)
    assert "fine-tune" in text and "Format adherence" in text

    md = paths["markdown"].read_text()
    assert md.startswith("# Should I fine-tune? fine-tune")
    for name in ("loss", "quality", "cost"):
        assert f"(plots/{name}.png)" in md
        assert (tmp_path / "report" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| base | prompting |" in md
    saved = json.loads(paths["json"].read_text())
    assert saved["verdict"] == FINE_TUNE and len(saved["loss_curve"]) == 20


def test_report_without_prices_or_loss(tmp_path):
    # Local models with no price and no metrics CSV: the report is still written, with the plots that apply.
    n = 10
    run = build_run(tmp_path, {"base": {"model": "smollm2-135m-instruct", "input_tokens": 300,
                                        "kinds": ["format"] * n},
                               "ft": {"model": "ft:smollm2-135m-instruct:p::x", "input_tokens": 50,
                                      "kinds": ["right"] * n}}, n, schema=None)
    d = decide(run)
    assert d.format_metric == "valid_json"
    assert d.verdict == FINE_TUNE
    paths = write_report(d, tmp_path / "r")
    assert "loss" not in paths and "quality" in paths
    assert any("local model" in note for note in d.notes)

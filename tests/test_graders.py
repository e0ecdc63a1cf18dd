"""Graders in OpenAI's shapes (``tunewise.eval.graders``): each against known values and against the library
it wraps, templates, the formula evaluator, the loader's errors, and python graders in their subprocess."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewise.errors import LocalFileNotFound, UsageError
from tunewise.eval.graders import (
    GraderError,
    GradingContext,
    Sample,
    TemplateError,
    grade,
    load_graders,
    meteor_synonyms,
    parse_grader,
    parse_graders,
    render,
)
from tunewise.eval.graders import formula as F
from tunewise.eval.graders import similarity as S


def check(op: str, input: str = "{{ sample.output_text }}", reference: str = "{{ item.label }}") -> dict:
    return {"type": "string_check", "name": f"check-{op}", "input": input, "reference": reference,
            "operation": op}


def sim(metric: str) -> dict:
    return {"type": "text_similarity", "name": metric, "input": "{{ sample.output_text }}",
            "reference": "{{ item.reference }}", "evaluation_metric": metric}


# ---------------------------------------------------------------- string_check

@pytest.mark.parametrize("op, output, label, expected", [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("eq", "Paris ", "Paris", 0.0),
    ("ne", "Paris", "Paris", 0.0), ("ne", "Lyon", "Paris", 1.0),
    ("like", "The capital is Paris.", "Paris", 1.0), ("like", "the capital is paris.", "Paris", 0.0),
    ("ilike", "the capital is PARIS.", "Paris", 1.0), ("ilike", "Lyon", "Paris", 0.0),
])
def test_string_check_operations(op, output, label, expected):
    result = grade(check(op), output, {"label": label})
    assert result.reward == expected
    assert result.passed is (expected == 1.0)
    assert result.ok


def test_openai_run_response_shape(shared_dir):
    from tunewise.serve.testing import validate_schema

    result = grade(check("eq"), "Paris", {"label": "Paris"})
    validate_schema(shared_dir / "reference" / "openai-openapi.yaml", "RunGraderResponse", result.to_openai())
    assert result.to_openai()["metadata"]["type"] == "string_check"


# ---------------------------------------------------------------- text_similarity

PAIRS = [("The cat sat on the mat", "The cat sat on the mat"),
         ("The cats sat on the mat quickly", "The cat sat on the mat"),
         ("A dog barked at night", "The cat sat on the mat"),
         ("kitten", "sitting")]


@pytest.mark.parametrize("hyp, ref", PAIRS)
def test_similarity_matches_the_libraries(hyp, ref):
    import sacrebleu
    from nltk.translate.gleu_score import sentence_gleu
    from nltk.translate.meteor_score import meteor_score
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer

    item = {"reference": ref}
    assert grade(sim("fuzzy_match"), hyp, item).reward == pytest.approx(fuzz.ratio(hyp, ref) / 100)
    assert grade(sim("bleu"), hyp, item).reward == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score / 100)
    toks = lambda s: sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(s).split()  # noqa: E731
    assert grade(sim("gleu"), hyp, item).reward == pytest.approx(sentence_gleu([toks(ref)], toks(hyp)))
    assert grade(sim("meteor"), hyp, item).reward == pytest.approx(
        meteor_score([toks(ref)], toks(hyp), wordnet=S.wordnet()))
    for n in "12345":
        scorer = rouge_scorer.RougeScorer([f"rouge{n}"])
        expected = scorer.score(ref, hyp)[f"rouge{n}"].fmeasure
        assert grade(sim(f"rouge_{n}"), hyp, item).reward == pytest.approx(expected)
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure
    assert grade(sim("rouge_l"), hyp, item).reward == pytest.approx(expected)


def test_similarity_known_values():
    assert grade(sim("fuzzy_match"), "kitten", {"reference": "sitting"}).reward == pytest.approx(8 / 13)
    same = {"reference": "The cat sat on the mat"}
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_l"):
        assert grade(sim(metric), "The cat sat on the mat", same).reward == pytest.approx(1.0), metric
    # ROUGE-1: all 3 words of the hypothesis are in the 6-word reference: P = 1, R = 1/2, F = 2/3.
    assert grade(sim("rouge_1"), "the cat sat", same).reward == pytest.approx(2 / 3)
    assert grade(sim("rouge_2"), "dogs bark loudly", same).reward == 0.0
    # METEOR's Porter stems: "cats" matches "cat" with no WordNet at all.
    assert grade(sim("meteor"), "the cats sat", {"reference": "the cat sat"}).reward > 0.9
    assert grade(sim("bleu"), "", {"reference": ""}).reward == 1.0
    assert grade(sim("bleu"), "", {"reference": "x"}).reward == 0.0


def test_meteor_works_without_wordnet_data():
    # nltk's WordNet data is not installed here; synonyms are off, exact and stem matches still count.
    assert isinstance(meteor_synonyms(), bool)
    score = grade(sim("meteor"), "a quick brown dog", {"reference": "a fast brown dog"}).reward
    assert 0.0 < score < 1.0


def test_pass_threshold_and_cosine_needs_an_endpoint():
    grader = {**sim("fuzzy_match"), "pass_threshold": 0.9}
    assert grade(grader, "kitten", {"reference": "kitten"}).passed is True
    assert grade(grader, "kitten", {"reference": "sitting"}).passed is False
    with pytest.raises(GraderError, match="embeddings endpoint"):
        grade(sim("cosine"), "a", {"reference": "b"})
    assert S.cosine_of([1, 0], [1, 0]) == pytest.approx(1.0)
    assert S.cosine_of([1, 0], [0, 1]) == pytest.approx(0.0)


# ---------------------------------------------------------------- templates

def test_templates_fill_item_and_sample():
    item = {"label": "Paris", "meta": {"tags": ["a", "b"], "n": 3}, "obj": {"x": 1}}
    sample = Sample.from_text('{"city": "Paris", "rank": [1, 2]}')
    assert render("{{item.label}}|{{ item.meta.tags[1] }}|{{ item.meta.n }}", item, sample) == "Paris|b|3"
    assert render("{{ item.obj }}", item, sample) == '{"x": 1}'
    assert render("{{ sample.output_json.city }} {{ sample.output_json.rank[0] }}", item, sample) == "Paris 1"
    assert render("{{ sample.output_text }}", item, "plain") == "plain"
    with pytest.raises(TemplateError, match="has no .missing"):
        render("{{ item.missing }}", item, sample)
    with pytest.raises(TemplateError) as exc:
        render("{{ sample.output_json.city }}", item, "not json")
    assert exc.value.kind == "sample_parse"


def test_template_failures_are_flags_not_exceptions():
    result = grade(check("eq", reference="{{ item.nope }}"), "x", {"label": "x"})
    assert result.reward == 0.0 and result.errors["invalid_variable_error"] and not result.ok
    result = grade(check("eq", input="{{ sample.output_json.a }}"), "not json", {"label": "x"})
    assert result.errors["sample_parse_error"]
    result = grade(check("eq", input="{{ sample.output_json.a }}"), '{"a": "x"}', {"label": "x"})
    assert result.reward == 1.0


# ---------------------------------------------------------------- multi and calculate_output

def test_multi_combines_by_formula():
    grader = {"type": "multi", "name": "combo", "calculate_output": "0.5 * sim + 0.5 * exact ^ 2",
              "graders": {"sim": sim("rouge_1"), "exact": check("ilike", reference="{{ item.reference }}")}}
    result = grade(grader, "the cat sat", {"reference": "The cat sat on the mat"})
    assert result.sub_rewards == {"sim": pytest.approx(2 / 3), "exact": 0.0}
    assert result.reward == pytest.approx(0.5 * 2 / 3)
    result = grade(grader, "The cat sat on the mat", {"reference": "the cat sat on the mat"})
    assert result.reward == pytest.approx(1.0)
    assert result.details["graders"]["exact"]["reward"] == 1.0


def test_multi_in_openai_example_forms():
    # OpenAI's schema: `graders` is one grader; its example: a list referenced as <type>_score.
    one = {"type": "multi", "name": "one", "graders": check("eq"), "calculate_output": "1 - string_check_score"}
    assert grade(one, "a", {"label": "a"}).reward == 0.0
    many = {"type": "multi", "name": "many", "calculate_output": "0.5 * text_similarity_score + 0.5 * string_check_score",
            "graders": [{**sim("fuzzy_match"), "reference": "The reference text"},
                        check("eq", reference="{{ item.label }}")]}
    assert grade(many, "The reference text", {"label": "The reference text"}).reward == pytest.approx(1.0)


def test_formula_errors_at_run_time_are_flagged():
    grader = {"type": "multi", "name": "div", "graders": {"a": check("eq")}, "calculate_output": "1 / a"}
    result = grade(grader, "x", {"label": "y"})
    assert result.errors["formula_parse_error"] and result.reward == 0.0
    assert "division by zero" in result.details["error"]


@pytest.mark.parametrize("formula, message", [
    ("__import__('os').system('true')", "only the functions"),
    ("a.__class__", "Attribute"),
    ("b + 1", "unknown name 'b'"),
    ("a if a else 1", "IfExp"),
    ("'x'", "is not a number"),
    ("a +", "not an arithmetic expression"),
    ("min", "is a function"),
    ("sqrt(a, a)", "takes 1 argument"),
    ("a < 1", "Compare"),
    ("", "empty"),
])
def test_formula_refuses_what_is_not_arithmetic(formula, message):
    with pytest.raises(GraderError, match="calculate_output") as exc:
        parse_grader({"type": "multi", "name": "m", "graders": {"a": check("eq")}, "calculate_output": formula})
    assert message in str(exc.value)
    assert exc.value.param == "grader.calculate_output"


def test_formula_functions():
    values = {"a": 0.25, "b": 0.81}
    assert F.evaluate("min(a, b) + max(a, b)", values) == pytest.approx(1.06)
    assert F.evaluate("sqrt(b) + abs(-a) + floor(1.7) + ceil(0.2)", values) == pytest.approx(0.9 + 0.25 + 2)
    assert F.evaluate("log(exp(2)) + clip(3, 0, 1) + round(0.26, 1)", values) == pytest.approx(3.3)
    assert F.evaluate("2 ^ 3 ^ 2", {}) == 2 ** 9  # right-associative power, as ** is
    with pytest.raises(F.FormulaError, match="too large"):
        F.evaluate("2 ^ 100000", {})


_numbers = st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def _expressions(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(st.one_of(_numbers.map(repr), st.sampled_from(["a", "b"])))
    op = draw(st.sampled_from(["+", "-", "*"]))
    return f"({draw(_expressions(depth + 1))} {op} {draw(_expressions(depth + 1))})"


@settings(max_examples=200, deadline=None)
@given(expr=_expressions(), a=_numbers, b=_numbers)
def test_formula_agrees_with_python_arithmetic(expr, a, b):
    # The expressions are generated here, so Python's own evaluation is a trustworthy reference.
    expected = eval(expr, {"__builtins__": {}}, {"a": a, "b": b})  # noqa: S307
    assert F.evaluate(F.parse(expr, {"a", "b"}), {"a": a, "b": b}) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- the loader

def test_load_graders_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "graders.yaml"
    yaml_file.write_text("""
graders:
  exact:
    type: string_check
    input: "{{ sample.output_text }}"
    reference: "{{ item.label }}"
    operation: eq
  close:
    type: text_similarity
    input: "{{ sample.output_text }}"
    reference: "{{ item.label }}"
    evaluation_metric: rouge_l
""")
    graders = load_graders(yaml_file)
    assert [g.name for g in graders] == ["exact", "close"]
    json_file = tmp_path / "one.json"
    json_file.write_text(json.dumps(check("eq")))
    assert [g.type for g in load_graders(json_file)] == ["string_check"]
    list_file = tmp_path / "list.yaml"
    list_file.write_text(json.dumps([check("eq"), check("like")]))
    assert len(load_graders(list_file)) == 2


@pytest.mark.parametrize("obj, param, message", [
    ({"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "contains"},
     "grader.operation", "must be one of eq, ne, like, ilike"),
    ({"type": "string_check", "name": "x", "input": "a", "operation": "eq"}, "grader.reference", "is missing"),
    ({"type": "string_check", "name": "x", "input": "a", "reference": "b", "operation": "eq", "extra": 1},
     "grader.extra", "is not a field"),
    ({"type": "fuzzy", "name": "x"}, "grader.type", "must be one of"),
    ({"type": "text_similarity", "name": "x", "input": "a", "reference": "b", "evaluation_metric": "rouge_9"},
     "grader.evaluation_metric", "must be one of"),
    ({"type": "string_check", "name": "x", "input": "{{ item }}", "reference": "b", "operation": "eq"},
     "grader.input", "needs a field"),
    ({"type": "string_check", "name": "x", "input": "{{ sample.text }}", "reference": "b", "operation": "eq"},
     "grader.input", "sample.output_text"),
    ({"type": "string_check", "name": "x", "input": "{{ row.a }}", "reference": "b", "operation": "eq"},
     "grader.input", "refers to 'row'"),
    ({"type": "label_model", "name": "x", "model": "m", "input": [{"role": "user", "content": "hi"}],
      "labels": ["good", "bad"], "passing_labels": ["great"]}, "grader.passing_labels", "not one of the labels"),
    ({"type": "score_model", "name": "x", "model": "m", "input": [{"role": "robot", "content": "hi"}]},
     "grader.input[0].role", "must be one of"),
    ({"type": "score_model", "name": "x", "model": "m", "input": [{"role": "user", "content": "hi"}],
      "range": [1, 0]}, "grader.range", "must be less than"),
    ({"type": "score_model", "name": "x", "model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "x"}]}]}, "grader.input[0].content[0].type", "judges read text"),
    ({"type": "score_model", "name": "x", "model": "m", "input": [{"role": "user", "content": "hi"}],
      "sampling_params": {"temp": 0}}, "grader.sampling_params", "unknown key"),
    ({"type": "python", "name": "x", "source": "def score(a, b): return 1"}, "grader.source", "grade(sample"),
    ({"type": "python", "name": "x", "source": "def grade(a, b) return 1"}, "grader.source", "not valid Python"),
    ({"type": "multi", "name": "x", "graders": {"a": {"type": "multi", "name": "y", "graders": {},
      "calculate_output": "1"}}, "calculate_output": "a"}, "grader.graders.a.type", "cannot contain"),
])
def test_loader_errors_name_the_field(obj, param, message):
    with pytest.raises(GraderError) as exc:
        parse_grader(obj)
    assert exc.value.param == param
    assert message in str(exc.value)


def test_loader_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("graders:\n  - type: string_check\n    name: [unclosed\n")
    with pytest.raises(UsageError, match=r"not valid YAML \(line"):
        load_graders(bad)
    with pytest.raises(LocalFileNotFound, match="does not exist"):
        load_graders(tmp_path / "missing.yaml")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([check("eq"), check("eq")]))
    with pytest.raises(GraderError, match="two graders are called 'check-eq'"):
        load_graders(dup)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"graders": [check("eq"), {**check("eq"), "name": "b", "operation": "x"}]}))
    with pytest.raises(GraderError, match=r"nested.json: graders\[1\].operation"):
        load_graders(nested)
    with pytest.raises(GraderError, match="there are no graders"):
        parse_graders([])


# ---------------------------------------------------------------- python graders

SOURCE = """
import json

def grade(sample: dict, item: dict) -> float:
    print("this goes to stderr, not into the score")
    return 1.0 if sample["output_json"]["total"] == item["total"] else 0.25
"""


def test_python_grader_runs_in_a_subprocess():
    grader = {"type": "python", "name": "total", "source": SOURCE, "image_tag": "2025-05-08"}
    result = grade(grader, '{"total": 12.5}', {"total": 12.5})
    assert result.reward == 1.0 and result.ok
    assert "goes to stderr" in result.details["stderr"]
    assert grade(grader, '{"total": 3}', {"total": 12.5}).reward == 0.25


@pytest.mark.parametrize("body, flag, text", [
    ("return 1 / 0", "python_grader_runtime_error_details", "ZeroDivisionError"),
    ("return 'high'", "python_grader_runtime_error_details", "not a number"),
    ("return float('nan')", "python_grader_runtime_error_details", "nan"),
    ("import os; os._exit(3)", "python_grader_server_error_type", "the grader process ended without a score"),
])
def test_python_grader_failures_are_flags(body, flag, text):
    result = grade({"type": "python", "name": "p", "source": f"def grade(sample, item):\n    {body}\n"}, "x")
    assert result.reward == 0.0 and not result.ok
    assert text in (result.errors[flag] or "")


def test_python_grader_time_limit():
    grader = {"type": "python", "name": "loop", "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    result = grade(grader, "x", {}, GradingContext(python_timeout_s=1.0))
    assert result.errors["python_grader_server_error"] and result.errors["unresponsive_reward_error"]
    assert result.errors["python_grader_server_error_type"] == "timeout"
    assert result.execution_time < 10


def test_python_graders_can_be_refused():
    grader = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}
    with pytest.raises(GraderError, match="not allowed here") as exc:
        grade(grader, "x", {}, GradingContext(allow_python=False))
    assert exc.value.code == "python_grader_disabled"
    assert grade(grader, "x", {}).reward == 1.0
    assert not math.isnan(grade(grader, "x", {}).execution_time)


# ---------------------------------------------------------------- the CLI

def _tunewise(*args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_check_and_run(tmp_path):
    path = tmp_path / "graders.yaml"
    path.write_text("""
graders:
  exact: {type: string_check, input: "{{ sample.output_text }}", reference: "{{ item.label }}", operation: ilike}
  close: {type: text_similarity, input: "{{ sample.output_text }}", reference: "{{ item.label }}",
          evaluation_metric: rouge_l, pass_threshold: 0.5}
""")
    done = _tunewise("graders", "check", str(path))
    assert done.returncode == 0, done.stderr
    assert "ok  exact: string_check" in done.stdout and "ok  close: text_similarity" in done.stdout
    done = _tunewise("graders", "run", str(path), "--sample", "the cat", "--item", '{"label": "The cat sat"}',
                     "--json")
    assert done.returncode == 0, done.stderr
    rewards = [r["reward"] for r in json.loads(done.stdout)]
    assert rewards == [0.0, pytest.approx(0.8)]


def test_cli_errors_are_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('type: string_check\nname: x\ninput: a\nreference: b\noperation: has\n')
    done = _tunewise("graders", "check", str(path))
    assert done.returncode == 2
    assert "grader.operation: must be one of eq, ne, like, ilike" in done.stderr
    assert "Traceback" not in done.stderr
    done = _tunewise("graders", "run", str(path), "--sample", "x", "--item", "[1")
    assert done.returncode == 2 and "--item is not JSON" in done.stderr
    done = _tunewise("graders", "check", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "missing.yaml does not exist" in done.stderr


# ---------------------------------------------------------------- judge vs deterministic agreement

def _results(name: str, rewards: list[float], passed: list[bool] | None = None):
    from tunewise.eval.graders import GraderResult

    return [GraderResult(name=name, type="score_model", reward=r, passed=None if passed is None else passed[i])
            for i, r in enumerate(rewards)]


def test_agreement_known_kappa():
    from tunewise.eval.graders import agreement

    # 2x2 table: both pass 15, both fail 20, reference-only 10, judge-only 5  -> p_o = 0.7, p_e = 0.5, kappa 0.4
    ref = [1.0] * 15 + [0.0] * 20 + [1.0] * 10 + [0.0] * 5
    judge = [0.9] * 15 + [0.1] * 20 + [0.2] * 10 + [0.8] * 5
    out = agreement(_results("judge", judge), _results("exact", ref))
    assert out["rows"] == 50 and out["agreement"] == pytest.approx(0.7)
    assert out["kappa"] == pytest.approx(0.4)
    assert out["kappa_ci"][0] < 0.4 < out["kappa_ci"][1]
    assert out["table"] == {"both_fail": 20, "judge_only_pass": 5, "reference_only_pass": 10, "both_pass": 15}
    from scipy.stats import pearsonr

    assert out["pearson"] == pytest.approx(pearsonr(judge, ref).statistic)


def test_agreement_leaves_out_failed_rows_and_degenerate_tables():
    from tunewise.eval.graders import agreement

    judge = _results("judge", [1.0, 1.0, 0.0])
    judge[2].errors["model_grader_parse_error"] = True
    out = agreement(judge, _results("exact", [1.0, 1.0, 1.0], [True, True, True]))
    assert out["rows"] == 2 and out["left_out"] == 1 and out["agreement"] == 1.0
    assert out["kappa"] is None  # every row passes for both: kappa is undefined, not a number made up
    with pytest.raises(ValueError):
        agreement(judge, judge[:1])


def test_python_grader_memory_limit():
    grader = {"type": "python", "name": "hog", "source": "def grade(sample, item):\n    x = bytearray(4 * 1024 ** 3)\n    return 1.0\n"}
    result = grade(grader, "x", {}, GradingContext(python_memory_mb=512))
    assert result.reward == 0.0
    assert "MemoryError" in (result.errors["python_grader_runtime_error_details"] or "")


def test_grade_all_and_the_row_summary():
    from tunewise.eval.graders import grade_all

    graders = parse_graders({"graders": {
        "exact": {**check("eq"), "name": "exact"},
        "combo": {"type": "multi", "graders": {"a": check("ilike")}, "calculate_output": "a"},
        "broken": {**check("eq", reference="{{ item.missing }}"), "name": "broken"}}})
    results = grade_all(graders, "PARIS", {"label": "paris"})
    assert list(results) == ["exact", "combo", "broken"]
    assert results["exact"].summary() == {"reward": 0.0, "passed": False, "errors": []}
    assert results["combo"].summary() == {"reward": 1.0, "passed": None, "errors": [], "sub_rewards": {"a": 1.0}}
    broken = results["broken"].summary()
    assert broken["errors"] == ["invalid_variable_error"] and "item.missing" in broken["error"]
    json.dumps({k: r.summary() for k, r in results.items()})  # a results row is plain JSON


def test_pairwise_templates_are_checked():
    from tunewise.eval.graders import parse_pairwise

    spec = {"type": "label_model", "name": "p", "model": "m", "labels": ["first", "second"],
            "passing_labels": ["first"], "input": [{"role": "user", "content": "{{ first.text }} {{ second.output_text }}"}]}
    with pytest.raises(GraderError, match="first has first.output_text"):
        parse_pairwise(spec)
    with pytest.raises(GraderError, match="labels are exactly first and second"):
        parse_pairwise({**spec, "labels": ["a", "b"]})


# ---------------------------------------------------------------- reading a judge's answer

@pytest.mark.parametrize("answer, expected", [
    ('{"result": 0.75}', (0.75, None)),
    ('{"result": 7}', (1.0, 7.0)),          # clipped to the range, as OpenAI's score_model does
    ('{"result": -2, "steps": []}', (0.0, -2.0)),
    ("0.4", (0.4, None)),
    ('Sure! {"result": 0.5}', (0.5, None)),
    ("very good", (None, None)),             # not a number: scores 0 (a parse error)
    ('{"result": "high"}', (None, None)),
    ('{"result": true}', (None, None)),
    (None, (None, None)),
])
def test_read_score(answer, expected):
    from tunewise.eval.graders.run import read_score

    assert read_score(answer, 0.0, 1.0) == expected


def test_read_label():
    from tunewise.eval.graders.run import read_label

    labels = ["positive", "neutral", "negative"]
    assert read_label('{"result": "neutral"}', labels) == "neutral"
    assert read_label("Positive", labels) == "positive"
    assert read_label('{"result": "great"}', labels) is None
    assert read_label("", labels) is None


def test_openai_guide_shapes_are_accepted():
    # label_model with sampling_params, sample.output_tools references, and a python grader of two arguments.
    parse_grader({"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "x"}],
                  "labels": ["a", "b"], "passing_labels": ["a"], "sampling_params": {"top_p": 1, "seed": 42}})
    tools = check("eq", input="get_weather", reference="{{sample.output_tools[0].function.name}}")
    sample = {"output_text": "", "output_tools": [{"function": {"name": "get_weather", "arguments": "{}"}}]}
    assert grade(tools, sample, {}).reward == 1.0
    assert grade(tools, "plain text", {}).errors["invalid_variable_error"]
    with pytest.raises(GraderError, match="exactly two arguments"):
        parse_grader({"type": "python", "name": "p", "source": "def grade(a, b, c): return 1"})
    with pytest.raises(GraderError, match="under 256 kB"):
        parse_grader({"type": "python", "name": "p", "source": "def grade(a, b): return 1\n" + "#" * 300_000})

"""OpenAI's grader endpoints through the official SDK (``client.fine_tuning.alpha.graders``) against a real
``tunewise serve`` on 127.0.0.1, and the library's model judges against the same server (the tiny model is
the judge): temperature 0, the cache, and pairwise judgements asked in both orders."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tunewise.eval.cache import CompletionCache
from tunewise.eval.graders import (
    GradingContext,
    ModelJudge,
    compare,
    grade,
    pairwise_grader,
    position_bias,
)
from tunewise.eval.graders.run import judge_params
from tunewise.eval.graders.spec import parse_grader
from tunewise.serve.testing import running_server, validate_schema

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"

STRING_CHECK = {"type": "string_check", "name": "Example string check grader",
                "input": "{{sample.output_text}}", "reference": "{{item.label}}", "operation": "eq"}
SCORE_MODEL = {"type": "score_model", "name": "Example score model grader", "model": "gpt-4o-mini",
               "input": [{"role": "user", "content": [{"type": "input_text", "text":
                          "Score how close the reference answer is to the model answer on a 0-1 scale. Return "
                          "only the score.\n\nReference answer: {{item.reference_answer}}\n\n"
                          "Model answer: {{sample.output_text}}"}]}]}
LABEL_MODEL = {"type": "label_model", "name": "sentiment", "model": "gpt-4o-mini",
               "input": [{"role": "system", "content": "Classify the sentiment of the statement."},
                         {"role": "user", "content": "Statement: {{sample.output_text}}"}],
               "labels": ["positive", "neutral", "negative"], "passing_labels": ["positive"]}
PYTHON = {"type": "python", "name": "Example python grader",
          "source": "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['label'] else 0.0\n"}


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


def test_validate_returns_the_grader(client):
    response = client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
    assert response.grader.type == "string_check"
    assert response.model_dump(exclude_none=True)["grader"] == STRING_CHECK
    multi = {"type": "multi", "name": "m", "graders": {"a": STRING_CHECK, "b": LABEL_MODEL},
             "calculate_output": "0.5 * a + 0.5 * b"}
    raw = client.fine_tuning.alpha.graders.with_raw_response.validate(grader=multi)
    assert raw.http_response.json() == {"grader": multi}


@pytest.mark.parametrize("grader, param, text", [
    ({**STRING_CHECK, "operation": "contains"}, "grader.operation", "must be one of eq, ne, like, ilike"),
    ({"type": "string_check", "name": "x"}, "grader.input", "is missing"),
    (LABEL_MODEL, "grader.type", "inside a multi"),
    ({"type": "multi", "name": "m", "graders": {"a": STRING_CHECK}, "calculate_output": "a + b"},
     "grader.calculate_output", "unknown name 'b'"),
])
def test_invalid_graders_answer_400_naming_the_field(client, grader, param, text):
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.alpha.graders.validate(grader=grader)
    error = exc.value.body
    assert error["param"] == param
    assert text in error["message"]
    assert error["type"] == "invalid_request_error"


def test_run_string_check(client):
    result = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="Paris",
                                                  item={"label": "Paris"})
    assert result.reward == 1.0
    assert result.metadata.name == STRING_CHECK["name"] and result.metadata.type == "string_check"
    raw = client.fine_tuning.alpha.graders.with_raw_response.run(grader=STRING_CHECK, model_sample="Lyon",
                                                                 item={"label": "Paris"})
    body = raw.http_response.json()
    validate_schema(SPEC, "RunGraderResponse", body)
    assert body["reward"] == 0.0


def test_run_reports_row_failures_as_flags(client):
    result = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="Paris", item={})
    assert result.reward == 0.0 and result.metadata.errors.invalid_variable_error
    json_grader = {**STRING_CHECK, "input": "{{ sample.output_json.city }}"}
    result = client.fine_tuning.alpha.graders.run(grader=json_grader, model_sample="not json",
                                                  item={"label": "Paris"})
    assert result.metadata.errors.sample_parse_error
    result = client.fine_tuning.alpha.graders.run(grader=json_grader, model_sample='{"city": "Paris"}',
                                                  item={"label": "Paris"})
    assert result.reward == 1.0


def test_run_multi_with_sub_rewards(client):
    grader = {"type": "multi", "name": "combo", "calculate_output": "0.25 * sim + 0.75 * exact",
              "graders": {"sim": {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
                                  "reference": "{{item.label}}", "evaluation_metric": "fuzzy_match"},
                          "exact": STRING_CHECK}}
    result = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Paris", item={"label": "Paris"})
    assert result.reward == pytest.approx(1.0)
    assert result.sub_rewards == {"sim": 1.0, "exact": 1.0}


def test_python_graders_are_refused_unless_enabled(client, tmp_path):
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="a", item={"label": "a"})
    assert exc.value.body["code"] == "python_grader_disabled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.alpha.graders.validate(
            grader={"type": "multi", "name": "m", "graders": {"p": PYTHON}, "calculate_output": "p"})
    with running_server(tmp_path / "py", env={"TUNEWISE_PYTHON_GRADERS": "1"}, worker=False) as srv:
        other = srv.client()
        assert other.fine_tuning.alpha.graders.validate(grader=PYTHON).grader.type == "python"
        result = other.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="a", item={"label": "a"})
        assert result.reward == 1.0 and not result.metadata.errors.python_grader_runtime_error
        broken = {**PYTHON, "source": "def grade(sample, item):\n    raise KeyError('label')\n"}
        result = other.fine_tuning.alpha.graders.run(grader=broken, model_sample="a", item={"label": "a"})
        assert result.reward == 0.0 and result.metadata.errors.python_grader_runtime_error
        assert "KeyError" in result.metadata.errors.python_grader_runtime_error_details


def test_run_score_model_with_the_server_as_judge(client):
    raw = client.fine_tuning.alpha.graders.with_raw_response.run(
        grader=SCORE_MODEL, model_sample="fuzzy wuzzy was a bear", item={"reference_answer": "fuzzy wuzzy was a bear"})
    body = raw.http_response.json()
    validate_schema(SPEC, "RunGraderResponse", body)
    meta = body["metadata"]
    # The tiny model is a poor judge, but under the json_schema rubric its answer is a score in [0, 1].
    assert not meta["errors"]["model_grader_server_error"], meta["errors"]
    assert not meta["errors"]["model_grader_parse_error"]
    assert 0.0 <= body["reward"] <= 1.0
    usage = body["model_grader_token_usage_per_model"]["gpt-4o-mini"]
    assert usage["prompt_tokens"] > 0 and meta["token_usage"] == usage["total_tokens"]
    # Asked again: the same answer, from the cache.
    again = client.fine_tuning.alpha.graders.run(
        grader=SCORE_MODEL, model_sample="fuzzy wuzzy was a bear", item={"reference_answer": "fuzzy wuzzy was a bear"})
    assert again.reward == body["reward"]


def test_run_label_model_inside_multi(client):
    grader = {"type": "multi", "name": "m", "graders": {"mood": LABEL_MODEL}, "calculate_output": "mood"}
    result = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="I love it", item={})
    assert not result.metadata.errors.model_grader_parse_error
    assert result.reward in (0.0, 1.0) and result.sub_rewards["mood"] == result.reward


# ---------------------------------------------------------------- the library's judges

def test_judge_is_deterministic_and_cached(server, tmp_path):
    grader = parse_grader(SCORE_MODEL)
    params = judge_params(grader, GradingContext())
    assert params["temperature"] == 0.0 and params["response_format"]["type"] == "json_schema"
    cache = tmp_path / "cache.sqlite"
    item = {"reference_answer": "a bear"}
    with ModelJudge(server.base_url, server.api_key, cache=cache) as judge:
        ctx = GradingContext(judge=judge)
        first = grade(grader, "a bear", item, ctx)
        assert first.ok, first.errors
        assert first.details["cached"] is False and judge.requests == 1
        second = grade(grader, "a bear", item, ctx)
        assert second.details["cached"] is True and judge.requests == 1
        assert second.reward == first.reward and second.details["answer"] == first.details["answer"]
        grade(grader, "a wolf", item, ctx)  # another sample is another request
        assert judge.requests == 2
    with CompletionCache(cache) as store:
        assert len(store) == 2
    # A fresh judge on the same cache file asks nothing.
    with ModelJudge(server.base_url, server.api_key, cache=cache) as judge:
        assert grade(grader, "a bear", item, GradingContext(judge=judge)).reward == first.reward
        assert judge.requests == 0


def test_judge_server_errors_are_flags(server, tmp_path):
    grader = parse_grader({**SCORE_MODEL, "model": "gpt-4o-mini"})
    with ModelJudge(server.base_url, "sk-wrong", cache=False, max_retries=0) as judge:
        result = grade(grader, "x", {"reference_answer": "x"}, GradingContext(judge=judge))
    assert result.errors["model_grader_server_error"] and result.reward == 0.0
    assert "AuthenticationError" in result.errors["model_grader_server_error_details"]


def test_pairwise_asks_both_orders_and_ties_on_disagreement(server, tmp_path):
    judge_grader = pairwise_grader("gpt-4o-mini", "Which answer states the receipt total correctly?")
    pairs = [("The total is 12.50", "The total is 99"), ("Total: 3.00", "I don't know"),
             ("12 apples", "twelve apples")]
    with ModelJudge(server.base_url, server.api_key, cache=tmp_path / "pairs.sqlite") as judge:
        ctx = GradingContext(judge=judge)
        results = [compare(judge_grader, a, b, context=ctx, request="What is the total?") for a, b in pairs]
        assert judge.requests == 2 * len(pairs)  # each pair in both orders
        forward, backward = results[0].results
        assert forward.details["answer"] is not None and backward.details["answer"] is not None
    for r in results:
        assert r.consistent is not None, r.errors
        assert set(r.labels) <= {"first", "second"}
        # Same answer both times (first then second, or second then first) wins; the same slot both times
        # means the judge followed the position: a tie.
        if r.labels == ("first", "second"):
            assert r.winner == "a"
        elif r.labels == ("second", "first"):
            assert r.winner == "b"
        else:
            assert r.winner == "tie" and not r.consistent
    bias = position_bias(results)
    assert bias["judged"] == len(pairs) and bias["ties"] == sum(r.winner == "tie" for r in results)
    assert bias["ties"] == bias["ties_favouring_first"] + bias["ties_favouring_second"]
    firsts = sum(label == "first" for r in results for label in r.labels)
    assert bias["first_slot_rate"] == pytest.approx(firsts / (2 * len(pairs)))
    assert bias["wins_a"] + bias["wins_b"] + bias["ties"] == len(pairs)
    from scipy.stats import binomtest

    assert bias["first_slot_p_value"] == pytest.approx(binomtest(firsts, 2 * len(pairs), 0.5).pvalue)

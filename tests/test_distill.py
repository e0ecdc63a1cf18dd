"""``tunewise distill`` against a real server (the tiny model as teacher): answers checked and counted, the file
validated and priced, the eval cache reused, and the same file built from stored completions."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli
from tunewise.errors import DataError
from tunewise.eval import candidate_from_dict
from tunewise.eval.distill import distill, distill_stored, load_inputs, regex_grader
from tunewise.eval.metrics import make_validator
from tunewise.serve.testing import ITEMS, SYSTEM, running_server, write_receipts

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["items"],
          "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
              "type": "object", "additionalProperties": False, "required": ["name", "price"],
              "properties": {"name": {"type": "string", "maxLength": 6}, "price": {"type": "integer",
                                                                                   "minimum": 0, "maximum": 99}}}}}}
STUDENT = "Items as JSON."


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


@pytest.fixture
def teacher(server):
    structured = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": SCHEMA, "strict": True}}
    return candidate_from_dict({"name": "teacher", "model": "gpt-4o-mini", "base_url": server.base_url,
                                "api_key": server.api_key, "system_prompt": SYSTEM + " " + "Be careful. " * 20,
                                "response_format": structured, "max_tokens": 48})


@pytest.fixture
def inputs(tmp_path):
    # Chat examples that already carry answers: distillation drops them and asks the teacher.
    return write_receipts(tmp_path / "inputs.jsonl")


def test_inputs_formats(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('"Coffee $4.50"\n{"role": "user", "content": "Tea $2"}\n\n'
                    '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Bagel"},'
                    ' {"role": "assistant", "content": "old"}]}\n')
    got = load_inputs(path)
    assert [i.line for i in got] == [1, 2, 4]
    assert got[0].messages == [{"role": "user", "content": "Coffee $4.50"}]
    assert got[2].messages == [{"role": "system", "content": "s"}, {"role": "user", "content": "Bagel"}]
    path.write_text('"ok"\n{"messages": [{"role": "assistant", "content": "no user"}]}\n')
    with pytest.raises(DataError, match="line 2"):
        load_inputs(path)


def test_distill_keeps_checked_teacher_answers_with_the_short_prompt(teacher, inputs, tmp_path):
    out = tmp_path / "train.jsonl"
    result = distill(inputs, teacher, out, student_prompt=STUDENT, schema=SCHEMA, cache=tmp_path / "cache.sqlite",
                     concurrency=2)
    assert result.n_inputs == len(ITEMS) and result.requests == len(ITEMS)
    assert result.n_kept + sum(result.left_out.values()) == len(ITEMS) and result.n_kept > 0
    validator = make_validator(SCHEMA)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == result.n_kept
    users = [f"{name} ${price:.2f}" for name, price in ITEMS]
    for example in lines:
        system, user, answer = example["messages"]
        assert system == {"role": "system", "content": STUDENT}
        assert user["role"] == "user" and user["content"] in users
        assert answer["role"] == "assistant" and not list(validator.iter_errors(json.loads(answer["content"])))
    assert result.report is not None and result.report.ok
    if result.n_kept >= 10:
        assert result.estimate.n_examples == result.n_kept and result.estimate.cost_usd > 0
    if result.left_out:
        rejected = [json.loads(line) for line in result.rejected_path.read_text().splitlines()]
        assert sorted(r["reason"] for r in rejected) == sorted(k for k, n in result.left_out.items()
                                                               for _ in range(n))
    # Rerun: every answer from the cache, the same file.
    again = distill(inputs, teacher, tmp_path / "again.jsonl", student_prompt=STUDENT, schema=SCHEMA,
                    cache=tmp_path / "cache.sqlite")
    assert again.requests == 0 and again.cache_hits == len(ITEMS)
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()


def test_failing_answers_are_left_out_and_counted(teacher, inputs, tmp_path):
    teacher.response_format, teacher.max_tokens = None, 2  # two tokens of free text: cut off, not JSON
    result = distill(inputs, teacher, tmp_path / "t.jsonl", schema=SCHEMA, cache=False)
    assert result.n_kept == 0 and sum(result.left_out.values()) == len(ITEMS)
    assert set(result.left_out) <= {"truncated", "empty"} and result.left_out.get("truncated", 0) > 0
    assert result.report is None and "No answer passed" in result.notes[0]
    assert (tmp_path / "t.jsonl").read_text() == ""
    # A grader refuses every answer that does not match it.
    teacher.max_tokens = 48
    teacher.response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
    graded = distill(inputs, teacher, tmp_path / "g.jsonl", graders=[regex_grader(r"^never$")], cache=False)
    assert graded.n_kept == 0 and graded.left_out.get("grader", 0) > 0
    detail = json.loads(graded.rejected_path.read_text().splitlines()[0])
    assert detail["reason"] in ("grader", "truncated", "empty")


def test_cli_distill(server, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    (tmp_path / "long.txt").write_text(SYSTEM + " Think about every item.")
    (tmp_path / "short.txt").write_text(STUDENT)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    out = tmp_path / "train.jsonl"
    code, stdout, err = run_cli(capsys, "distill", str(inputs), "--out", str(out), "--teacher", "gpt-4o-mini",
                                "--teacher-prompt", str(tmp_path / "long.txt"), "--student-prompt",
                                str(tmp_path / "short.txt"), "--schema", str(tmp_path / "schema.json"),
                                "--structured", "--max-tokens", "48", "--no-cache", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n_inputs"] == len(ITEMS) and summary["n_kept"] == len(out.read_text().splitlines())
    assert summary["requests"] == len(ITEMS) and summary["validation"]["errors"] == 0
    code, stdout, err = run_cli(capsys, "distill", str(inputs), "--out", str(out), "--teacher", "gpt-4o-mini",
                                "--max-tokens", "2", "--no-cache")
    assert code == 0, err
    assert f"of {len(ITEMS)} answers; left out" in stdout and "truncated" in stdout
    code, _, err = run_cli(capsys, "distill", str(inputs), "--out", str(out))
    assert code == 2 and "No teacher" in err
    code, _, err = run_cli(capsys, "distill", "--out", str(out), "--from-stored", "--metadata", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_distill_from_stored_completions(server, tmp_path, capsys, monkeypatch):
    client = server.client()
    structured = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}}
    for i, (name, price) in enumerate(ITEMS[:4]):
        client.chat.completions.create(
            model="gpt-4o-mini", store=True, metadata={"task": "receipts" if i < 3 else "other"}, max_tokens=48,
            response_format=structured, temperature=0,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{name} ${price:.2f}"}])
    result = distill_stored(client, tmp_path / "s.jsonl", metadata={"task": "receipts"}, student_prompt=STUDENT,
                            schema=SCHEMA)
    assert result.n_inputs == 3 and result.n_kept + sum(result.left_out.values()) == 3
    lines = [json.loads(line)["messages"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [m[1]["content"] for m in lines] == [f"{n} ${p:.2f}" for n, p in ITEMS[:3]][:len(lines)] or lines == []
    assert all(m[0] == {"role": "system", "content": STUDENT} and m[2]["role"] == "assistant" for m in lines)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    code, stdout, err = run_cli(capsys, "distill", "--from-stored", "--metadata", "task=other", "--out",
                                str(tmp_path / "o.jsonl"), "--json")
    assert code == 0, err
    assert json.loads(stdout)["n_inputs"] == 1
    code, _, err = run_cli(capsys, "distill", "--from-stored", "--metadata", "task=none", "--out",
                           str(tmp_path / "n.jsonl"))
    assert code == 1 and "No stored chat completions matching task=none" in err


def test_openai_shaped_graders_check_the_answers(server, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    keep = tmp_path / "keep.yaml"
    keep.write_text(json.dumps({"type": "string_check", "name": "has-items", "input": "{{ sample.output_text }}",
                                "reference": "items", "operation": "like"}))
    refuse = tmp_path / "refuse.json"
    refuse.write_text(json.dumps({"type": "string_check", "name": "echoes-input", "operation": "eq",
                                  "input": "{{ sample.output_text }}", "reference": "{{ item.input }}"}))
    args = ("distill", str(inputs), "--teacher", "gpt-4o-mini", "--schema", str(tmp_path / "schema.json"),
            "--structured", "--max-tokens", "48", "--json")
    code, stdout, err = run_cli(capsys, *args, "--out", str(tmp_path / "a.jsonl"), "--grader", str(keep))
    assert code == 0, err
    assert "grader" not in json.loads(stdout)["left_out"]
    code, stdout, err = run_cli(capsys, *args, "--out", str(tmp_path / "b.jsonl"), "--grader", str(keep),
                                "--grader", str(refuse))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n_kept"] == 0 and summary["left_out"].get("grader", 0) + summary["left_out"].get(
        "truncated", 0) == len(ITEMS) and summary["left_out"].get("grader", 0) > 0
    rejected = [json.loads(line) for line in (tmp_path / "b.rejected.jsonl").read_text().splitlines()]
    assert any(r["reason"] == "grader" and r["detail"].startswith("echoes-input: reward 0") for r in rejected)

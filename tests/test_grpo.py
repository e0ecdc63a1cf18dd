"""Reinforcement fine-tuning (GRPO): the advantages and loss against TRL's formulas on a fixed batch, the
reinforcement data format, the options, and training on the tiny model (the reward rises; resume equals an
uninterrupted run; sampling is the serving scheduler's)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli
from tunewise import cost
from tunewise.data import validate
from tunewise.errors import Cancelled, DataError, TunewiseError, Unsupported, UsageError
from tunewise.eval.graders.spec import item_fields
from tunewise.train import TrainConfig, train
from tunewise.train.methods.grpo import ADVANTAGE_EPS, advantages, group_size, grpo_token_loss

TINY = "tunewise-tiny"
SYSTEM = {"role": "system", "content": "Answer yes or no."}
EXACT = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}"}
# The reward is the exact match; "has_e" (a 'yes' or a 'no'... with an e) is reported beside it.
MULTI = {"type": "multi", "name": "yes", "calculate_output": "exact",
         "graders": {"exact": EXACT, "has_e": {"type": "string_check", "name": "has_e", "operation": "like",
                                                "input": "{{ sample.output_text }}", "reference": "e"}}}
JUDGE = {"type": "score_model", "name": "j", "model": "gpt-4o-mini", "input": [
    {"role": "user", "content": "Rate {{sample.output_text}}"}]}


def write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- the loss


def test_advantages_are_each_reward_against_its_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.9]], dtype=torch.float64)
    adv = advantages(rewards)
    std = math.sqrt(4 * 0.25 / 3)  # TRL: torch.std, with Bessel's correction
    assert adv[0].tolist() == pytest.approx([0.5 / (std + ADVANTAGE_EPS), -0.5 / (std + ADVANTAGE_EPS)] * 1
                                            + [-0.5 / (std + ADVANTAGE_EPS), 0.5 / (std + ADVANTAGE_EPS)])
    assert adv[1].tolist() == [0.0] * 4  # a group whose completions all scored the same teaches nothing
    mean, std3 = 0.225, math.sqrt((3 * 0.225**2 + 0.675**2) / 3)
    assert adv[2].tolist() == pytest.approx([(r - mean) / (std3 + ADVANTAGE_EPS) for r in (0, 0, 0, 0.9)])
    assert [group_size(m) for m in ("auto", 0.1, 0.5, 1, 2.4, 10)] == [4, 2, 2, 4, 10, 40]
    # Only graded rewards count: each against its group's graded ones; the others, and a lone graded one, get 0.
    graded = torch.tensor([[True, True, False, True], [True, True, True, True], [False, False, False, True]])
    masked = advantages(rewards, graded)
    want = advantages(rewards[0, [0, 1, 3]].unsqueeze(0))[0].tolist()
    assert masked[0].tolist() == pytest.approx([want[0], want[1], 0.0, want[2]])
    assert masked[1].tolist() == [0.0] * 4 and masked[2].tolist() == [0.0] * 4


def test_the_loss_is_trls_policy_gradient_plus_k3_kl():
    logps = torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.2, -2.0, -0.1, -2.5], dtype=torch.float64)
    adv = torch.tensor([1.5, 1.5, -0.5, -0.5], dtype=torch.float64)
    beta = 0.04
    per_token, kl = grpo_token_loss(logps, ref, adv, beta)
    # By hand: the ratio is exactly 1, so each token's loss is -A + beta * (e^(ref-logp) - (ref-logp) - 1).
    d = [r - p for r, p in zip(ref.tolist(), logps.tolist(), strict=True)]
    want_kl = [math.exp(x) - x - 1 for x in d]
    assert kl.tolist() == pytest.approx(want_kl)
    assert per_token.tolist() == pytest.approx([-a + beta * k for a, k in zip(adv.tolist(), want_kl, strict=True)])
    loss = per_token.sum() / 4  # the token-level mean over the batch's completion tokens
    loss.backward()
    # d/dlogp: -A (the policy gradient) + beta * (1 - e^(ref-logp)) (the KL's pull back to the reference).
    want_grad = [(-a + beta * (1 - math.exp(x))) / 4 for a, x in zip(adv.tolist(), d, strict=True)]
    assert logps.grad.tolist() == pytest.approx(want_grad)


def test_log_probabilities_are_those_of_the_sampling_temperature():
    """Completions sampled at temperature T are scored under softmax(logits / T), for policy and reference alike."""
    from tunewise import models
    from tunewise.train.batching import _collate
    from tunewise.train.methods.grpo import token_logps
    from tunewise.train.render import IGNORE, Rendered

    model = models.load_model(TINY, device="cpu")
    ids = [5, 9, 14, 3, 7, 11]
    mb = _collate([Rendered(line=1, input_ids=ids, labels=[IGNORE, IGNORE, IGNORE, 3, 7, 11])], 0)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, 2:5].float()
        for t in (1.0, 0.7):
            got, rows = token_logps(model, None, None, mb, "cpu", t)
            want = torch.log_softmax(logits / t, dim=-1)[torch.arange(3), torch.tensor([3, 7, 11])]
            assert got.tolist() == pytest.approx(want.tolist(), abs=1e-5) and rows.tolist() == [0, 0, 0]
    assert not torch.allclose(token_logps(model, None, None, mb, "cpu", 0.7)[0],
                              token_logps(model, None, None, mb, "cpu", 1.0)[0])


def test_a_shared_prompt_run_once_gives_the_rows_log_probabilities_and_gradients():
    """A group's prompt run once, its keys and values repeated for each completion, gives what whole padded rows
    give: the same log-probabilities (rounding aside) and the same LoRA gradients, for completions of unequal
    lengths; and the step's micro-batches put each prompt's completions together."""
    from peft import LoraConfig, get_peft_model

    from tunewise import models
    from tunewise.train.batching import _collate
    from tunewise.train.methods import StepContext
    from tunewise.train.methods.grpo import GRPO, Completion, Prompt, shared_prompt_logps, token_logps
    from tunewise.train.render import IGNORE, Rendered
    from tunewise.train.trainer import _core_and_head

    torch.manual_seed(0)
    model = get_peft_model(models.load_model(TINY, device="cpu"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    core, head = _core_and_head(model)
    assert core is not None  # the tiny model has a plain head: the path GRPO's steps take
    prompt, completions = [5, 9, 14, 3, 21, 8], [[7, 11, 2], [4, 6, 30, 12, 2], [9]]
    weights = torch.tensor([0.5, -1.0, 2.0])

    def grads(logps, rows):
        model.zero_grad()
        (logps * weights[rows]).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    rows = [Rendered(line=1, input_ids=prompt + c, labels=[IGNORE] * len(prompt) + c) for c in completions]
    want, want_rows = token_logps(model, core, head, _collate(rows, 0), "cpu", 0.7)
    want_grads = grads(want, want_rows)
    got, got_rows = shared_prompt_logps(model, core, head, prompt, completions, "cpu", 0.7)
    assert got_rows.tolist() == want_rows.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-5)
    got_grads = grads(got, got_rows)
    assert want_grads and all(torch.allclose(got_grads[n], g, atol=1e-6, rtol=1e-4) for n, g in want_grads.items())

    a, b = (Prompt(line=i, messages=[], tools=None, item={}, prompt_ids=[1, 2, 3 + i], index=i, param="training_file")
            for i in (0, 1))
    trained = [Completion(prompt=p, ids=[4] * n, text="", prompt_ids=p.prompt_ids)
               for p, n in ((a, 3), (b, 2), (a, 5), (b, 4))]
    method = GRPO.__new__(GRPO)
    shared = method._micro_batches(trained, StepContext(device="cpu", pad_id=0, max_tokens=10, core=core, head=head))
    assert [(mb.index, mb.prompt_ids) for mb in shared] == [([2, 0], [1, 2, 3]), ([3, 1], [1, 2, 4])]
    assert (shared[0].real_tokens, shared[0].padded_tokens) == (2 + 8, 2 + 10)
    plain = method._micro_batches(trained, StepContext(device="cpu", pad_id=0, max_tokens=10))
    assert [mb.index for mb in plain] == [[2], [3], [0], [1]] and all(mb.prompt_ids is None for mb in plain)


# ---------------------------------------------------------------------------------------------------- the data


def test_item_fields_are_what_the_templates_read():
    assert item_fields(EXACT) == ["answer"]
    assert item_fields(MULTI) == ["answer"]
    python = {"type": "python", "name": "p", "source": "def grade(s, item): return 1.0  # {{ item.ignored }}"}
    assert item_fields(python) == []
    sim = {"type": "text_similarity", "name": "s", "evaluation_metric": "bleu", "input": "{{sample.output_text}}",
           "reference": "{{ item.ref.text }} {{item['other']}}"}
    assert item_fields(sim) == ["ref", "other"]


def test_each_reinforcement_rule_names_its_line(tmp_path):
    good = [{"messages": [SYSTEM, {"role": "user", "content": f"Q{i}?"}], "answer": "yes", "id": i}
            for i in range(10)]
    bad = [
        {"messages": [SYSTEM, {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}],
         "answer": "yes"},
        {"messages": [SYSTEM, {"role": "user", "content": "No answer field?"}]},
        {"answer": "yes"},
        {"messages": [{"role": "human", "content": "x"}], "answer": "no"},
    ]
    path = write(tmp_path / "rft.jsonl", good + bad)
    found: dict[int | None, set[str]] = {}
    for f in validate(path, data_format="reinforcement", grader=EXACT).findings:
        found.setdefault(f.line, set()).add(f.code)
    assert not any(line is not None and line <= 10 for line in found)  # extra fields are the grader's item
    assert found[11] == {"rft_final_assistant_message"}
    assert found[12] == {"rft_missing_item_field"}
    assert "missing_messages" in found[13]
    assert "invalid_role" in found[14] or found[14]
    # Without the grader the missing field is not an error; the stats count the prompts' tokens.
    report = validate(path, data_format="reinforcement")
    assert "rft_missing_item_field" not in {f.code for f in report.findings}
    assert report.stats.n_examples == 14 and report.stats.billed_tokens_per_epoch > 0
    prefs = write(tmp_path / "prefs.jsonl", [{"input": {"messages": [SYSTEM]}, "preferred_output": [],
                                              "non_preferred_output": []}] * 10)
    assert {f.code for f in validate(prefs, data_format="reinforcement").errors} == {"format_for_reinforcement"}


def test_validate_and_estimate_cli_for_reinforcement(tmp_path, capsys):
    rows = [{"messages": [SYSTEM, {"role": "user", "content": f"Q{i}?"}]} for i in range(10)]
    data = write(tmp_path / "rft.jsonl", rows)
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps(EXACT))
    code, out, _ = run_cli(capsys, "validate", str(data), "--method", "reinforcement", "--grader", str(grader))
    assert code == 1 and "rft_missing_item_field" in out and "{{ item.answer }}" in out
    code, out, _ = run_cli(capsys, "validate", str(data), "--method", "reinforcement")
    assert code == 0
    code, _, err = run_cli(capsys, "validate", str(data), "--grader", str(grader))
    assert code == 2 and "--method reinforcement" in err
    code, out, _ = run_cli(capsys, "estimate", str(data), "--method", "reinforcement")
    assert code == 0 and "billed by training time" in out and "per hour" in out and "$" in out
    with pytest.raises(Unsupported, match="training time") as err:
        cost.estimate_training(data, "gpt-4o-mini", method="reinforcement")
    assert err.value.code == "billed_by_time"


def test_options_are_checked_before_anything_loads(tmp_path):
    data = write(tmp_path / "rft.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": "Q?"}],
                                           "answer": "yes"}] * 10)
    base = dict(training_file=data, model=TINY, output_dir=tmp_path / "o")
    with pytest.raises(UsageError, match="needs a grader"):
        train(TrainConfig(**base, objective="grpo"))
    with pytest.raises(UsageError, match="compute_multiplier"):
        train(TrainConfig(**base, objective="grpo", grader=EXACT, compute_multiplier=11))
    with pytest.raises(UsageError, match="eval_samples"):
        train(TrainConfig(**base, objective="grpo", grader=EXACT, eval_samples=0))
    with pytest.raises(UsageError, match="reasoning_effort"):
        train(TrainConfig(**base, objective="grpo", grader=EXACT, reasoning_effort="max"))
    with pytest.raises(UsageError, match="reinforcement fine-tuning option"):
        train(TrainConfig(**base, grader=EXACT))
    with pytest.raises(UsageError, match="no judge endpoint") as err:
        train(TrainConfig(**base, objective="grpo", grader=JUDGE))
    assert err.value.param == "grader_base_url" and "--grader-base-url" in err.value.hint
    inside = {"type": "multi", "name": "m", "calculate_output": "j", "graders": {"j": dict(JUDGE, type="label_model",
              labels=["good", "bad"], passing_labels=["good"])}}
    with pytest.raises(UsageError, match="no judge endpoint"):
        train(TrainConfig(**base, objective="grpo", grader=inside))
    with pytest.raises(UsageError, match="grader_concurrency"):
        train(TrainConfig(**base, objective="grpo", grader=JUDGE, grader_base_url="http://127.0.0.1:9/v1",
                          grader_concurrency=0))


def test_the_cli_refuses_a_model_grader_without_an_endpoint_before_training(tmp_path, capsys):
    data = write(tmp_path / "rft.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": "Q?"}]}] * 10)
    grader = tmp_path / "judge.json"
    grader.write_text(json.dumps(JUDGE))
    code, out, err = run_cli(capsys, "train", str(data), "--model", TINY, "--method", "reinforcement", "--grader",
                             str(grader), "--output", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1, err  # one line, no traceback
    assert "asks a judge model" in err and "--grader-base-url URL" in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written
    code, _, err = run_cli(capsys, "train", str(data), "--model", TINY, "--grader-base-url", "http://127.0.0.1:9/v1")
    assert code == 2 and "--grader-base-url is for --method reinforcement" in err


# A python grader whose process dies for the rows marked "fail": the grader gives no judgement of them
# (python_grader_server_error), which is no score of 0.
DIES = {"type": "python", "name": "dies", "source": (
    "import os\n\ndef grade(sample, item):\n    if item.get('fail'):\n        os._exit(3)\n"
    "    return 1.0 if 'e' in sample['output_text'] else 0.0\n")}


def _rft_rows(n: int, fail=()) -> list[dict]:
    return [{"messages": [SYSTEM, {"role": "user", "content": f"Question {i}?"}], "answer": "yes",
             **({"fail": True} if i in fail else {})} for i in range(n)]


def test_completions_the_grader_gave_no_judgement_of_are_left_out_and_counted(tmp_path):
    data = write(tmp_path / "rft.jsonl", _rft_rows(10, fail={1}))
    events = []
    result = train(TrainConfig(training_file=data, model=TINY, objective="grpo", grader=DIES, n_epochs=1,
                               batch_size=10, seed=2, compute_multiplier=0.5, max_completion_tokens=3,
                               output_dir=tmp_path / "out", num_threads=1), on_event=events.append)
    (row,) = table(result.metrics_csv)
    assert float(row["train_grader_errors"]) == 2  # the 2 completions of the marked prompt
    assert 0.0 <= float(row["train_reward_mean"]) <= 1.0
    (metrics,) = [e for e in events if e.type == "metrics"]
    assert metrics.data["train_grader_errors"] == 2
    warnings = [e for e in events if e.level == "warn" and "no judgement" in e.message]
    assert len(warnings) == 1 and "2 of 20 completions" in warnings[0].message
    assert "python_grader_server_error" in warnings[0].message and "exit status 3" in warnings[0].message
    # The reward is the mean over the 18 graded completions (each one's 0 or 1), the failures not among them.
    assert float(row["train_reward_mean"]) * 18 == pytest.approx(round(float(row["train_reward_mean"]) * 18))


def test_a_step_with_no_graded_completion_fails_saying_why(tmp_path):
    data = write(tmp_path / "rft.jsonl", _rft_rows(10, fail=set(range(10))))
    with pytest.raises(TunewiseError, match="Step 1: the grader gave no judgement of any of the 20") as err:
        train(TrainConfig(training_file=data, model=TINY, objective="grpo", grader=DIES, n_epochs=1, batch_size=10,
                          seed=2, compute_multiplier=0.5, max_completion_tokens=3, output_dir=tmp_path / "out",
                          num_threads=1))
    assert err.value.code == "grader_failed" and "python_grader_server_error" in err.value.message
    assert not (tmp_path / "out" / "result.json").exists()


def test_an_unreachable_judge_fails_the_run_saying_why(tmp_path):
    from tunewise.serve.testing import free_port

    data = write(tmp_path / "rft.jsonl", _rft_rows(10))
    with pytest.raises(TunewiseError, match="no judgement of any of the 20") as err:
        train(TrainConfig(training_file=data, model=TINY, objective="grpo", grader=JUDGE, n_epochs=1, batch_size=10,
                          seed=2, compute_multiplier=0.5, max_completion_tokens=3, output_dir=tmp_path / "out",
                          num_threads=1, grader_base_url=f"http://127.0.0.1:{free_port()}/v1", grader_api_key="k",
                          grader_concurrency=20))  # one wave of retried connections, not three
    assert err.value.code == "grader_failed"
    assert "model_grader_server_error" in err.value.message and "APIConnectionError" in err.value.message


# ---------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def yes_no(tmp_path_factory):
    """A weak supervised start: the tiny model taught to answer 'yes' or 'no' (half each), and prompts whose
    grader rewards 'yes' only. GRPO has something to choose between, and its reward can rise fast."""
    d = tmp_path_factory.mktemp("grpo")
    prompts = [[SYSTEM, {"role": "user", "content": f"Question {i}?"}] for i in range(12)]
    sft = write(d / "sft.jsonl", [{"messages": [*p, {"role": "assistant", "content": "yes" if i % 2 else "no"}]}
                                  for i, p in enumerate(prompts)])
    start = train(TrainConfig(training_file=sft, model=TINY, method="full", n_epochs=12, batch_size=4, seed=1,
                              learning_rate_multiplier=20, output_dir=d / "sft", num_threads=1))
    rft = write(d / "rft.jsonl", [{"messages": p, "answer": "yes"} for p in prompts])
    valid = write(d / "valid.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": f"Other {i}?"}],
                                       "answer": "yes"} for i in range(4)])
    return start.model_dir, rft, valid


def rft_config(data, out, **kw) -> TrainConfig:
    start, rft, valid = data
    base = dict(training_file=rft, validation_file=valid, model=str(start), method="full", objective="grpo",
                grader=MULTI, n_epochs=3, batch_size=4, seed=3, learning_rate_multiplier=10,
                max_completion_tokens=4, eval_samples=2, output_dir=out, save_state_every_steps=1, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def baseline(yes_no, tmp_path_factory):
    events = []
    result = train(rft_config(yes_no, tmp_path_factory.mktemp("rft") / "out"), on_event=events.append)
    return result, events


def test_the_reward_rises_and_every_metric_is_reported(baseline):
    result, events = baseline
    rows = table(result.metrics_csv)
    assert len(rows) == result.steps == 9
    assert list(rows[0])[5:] == ["train_reward_mean", "train_reward_std", "train_kl", "train_completion_length",
                                 "train_score_exact", "train_score_has_e", "valid_reward_mean", "valid_reward_std",
                                 "valid_score_exact", "valid_score_has_e"]
    reward = [float(r["train_reward_mean"]) for r in rows]
    # The last epoch's mean reward above the first's by more than 0.1: each is 48 graded completions, so a
    # standard error of about 0.07 apiece. The rise itself depends on the CPU's arithmetic (the samples follow
    # the weights' last bits): +0.19 on an AVX2 machine (0.54 -> 0.73), over 0.2 on an AVX-512 one.
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.1, reward
    assert reward == pytest.approx([float(r["train_score_exact"]) for r in rows])  # the formula is "exact"
    assert float(rows[0]["train_kl"]) == pytest.approx(0, abs=1e-6)  # step 1 samples the reference's weights
    assert float(rows[-1]["train_kl"]) > 0
    assert all(1 <= float(r["train_completion_length"]) <= 4 for r in rows)
    # Validation at each epoch end (eval_interval auto: the 3 steps of an epoch), 2 completions per prompt.
    assert [bool(r["valid_reward_mean"]) for r in rows] == [False, False, True] * 3
    # 8 validation completions (a resolution of 1/8) and 7 of 8 right after the first epoch on an AVX2 machine:
    # the validation reward must not fall (it rose on an AVX-512 one).
    assert float(rows[-1]["valid_reward_mean"]) >= float(rows[2]["valid_reward_mean"])
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics[-1].data["train_reward_mean"] == pytest.approx(reward[-1], abs=1e-6)
    assert metrics[-1].data["valid_score_exact"] is not None
    hyper = result.hyperparameters
    assert hyper["group_size"] == 4 and hyper["compute_multiplier"] == 1.0 and hyper["eval_interval"] == 3
    assert hyper["eval_samples"] == 2 and hyper["kl_beta"] == 0.04 and hyper["reasoning_effort"] == "default"
    assert any("frozen copy of the starting model" in e.message for e in events)
    meta = json.loads((result.model_dir / "tunewise_model.json").read_text())
    assert meta["objective"] == "grpo"


def test_stop_then_resume_equals_uninterrupted(baseline, yes_no, tmp_path):
    out = tmp_path / "resumed"
    seen = []
    with pytest.raises(Cancelled, match="step 4"):
        train(rft_config(yes_no, out), on_event=seen.append, stop=lambda: sum(e.type == "metrics" for e in seen) >= 4)
    events = []
    result = train(rft_config(yes_no, out), on_event=events.append)
    assert any(e.message == "Training resumed from step 4/9" for e in events)
    assert table(result.metrics_csv) == table(baseline[0].metrics_csv)
    ours, theirs = load_file(result.model_dir / "model.safetensors"), load_file(baseline[0].model_dir /
                                                                                "model.safetensors")
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor)


def test_a_new_lora_adapter_is_held_to_its_base_and_the_cli_trains(yes_no, tmp_path, capsys):
    start, rft, _ = yes_no
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps(EXACT))
    code, out, err = run_cli(capsys, "train", str(rft), "--model", str(start), "--method", "reinforcement",
                             "--grader", str(grader), "--epochs", "1", "--batch-size", "6", "--seed", "1",
                             "--max-completion-tokens", "3", "--compute-multiplier", "0.5", "--output",
                             str(tmp_path / "cli"), "--num-threads", "1")
    assert code == 0, err
    assert "final train_reward_mean" in out
    assert "KL reference is the base model (adapter disabled)" in err and "2 completions per prompt" in err
    rows = table(tmp_path / "cli" / "metrics.csv")
    assert len(rows) == 2 and float(rows[0]["train_kl"]) == pytest.approx(0, abs=1e-6)
    code, _, err = run_cli(capsys, "train", str(rft), "--model", str(start), "--method", "reinforcement")
    assert code == 2 and "--grader" in err
    bad = write(tmp_path / "bad.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": "Q?"}]}] * 10)
    with pytest.raises(DataError, match="item.answer") as exc:
        train(rft_config(yes_no, tmp_path / "bad", training_file=bad))
    assert exc.value.code == "rft_missing_item_field" and exc.value.param == "training_file"

"""Training cost, the auto-epochs rule, break-even, and the estimate/breakeven/models commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli as run
from tunewise import cost
from tunewise.errors import DataError, UsageError
from tunewise.tokens import reference_encoding

REPO = Path(__file__).resolve().parents[1]
RECEIPTS = REPO / "examples" / "receipts"
TRAIN = RECEIPTS / "train.jsonl"
MINI = "gpt-4o-mini-2024-07-18"


@pytest.fixture(autouse=True)
def _no_env_prices(monkeypatch):
    monkeypatch.delenv("TUNEWISE_PRICES", raising=False)




def reference_chat_tokens(messages: list[dict]) -> int:
    """OpenAI's chat count, written out with tiktoken itself: 3 per message, its strings, 3 for the reply."""
    enc = reference_encoding("o200k_base")
    return 3 + sum(3 + sum(len(enc.encode_ordinary(v)) for v in m.values() if isinstance(v, str))
                   for m in messages)


def write_examples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def receipts(n: int) -> list[dict]:
    return [json.loads(line) for line in TRAIN.read_text(encoding="utf-8").splitlines()[:n]]


# --- auto epochs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, epochs", [
    (1, 25), (3, 25), (4, 25), (5, 20), (8, 12), (10, 10), (30, 3), (33, 3), (34, 3), (50, 3), (200, 3),
    (8_333, 3), (8_334, 2), (12_500, 2), (12_501, 1), (25_000, 1), (100_000, 1),
])
def test_auto_epochs(n, epochs):
    assert cost.auto_epochs(n) == epochs


def test_auto_epochs_is_openais_rule_exactly():
    # The cookbook's code, rounding down on both sides: 30 examples get 3 epochs (90 seen), not 4.
    for n in range(1, 30_000, 7):
        expected = 3
        if n * 3 < 100:
            expected = min(25, 100 // n)
        elif n * 3 > 25_000:
            expected = max(1, 25_000 // n)
        e = cost.auto_epochs(n)
        assert e == expected, n
        if 4 <= n <= 25_000:
            assert 100 - n < n * e <= 25_000, n


def test_auto_epochs_refuses_an_empty_set():
    with pytest.raises(UsageError):
        cost.auto_epochs(0)


# --- estimate_training -------------------------------------------------------------------------------------

def test_estimate_on_the_receipts_matches_tiktoken_and_the_price():
    rows = [json.loads(line) for line in TRAIN.read_text(encoding="utf-8").splitlines()]
    per_epoch = sum(reference_chat_tokens(r["messages"]) for r in rows)
    e = cost.estimate_training(TRAIN, "gpt-4o-mini")
    assert (e.model, e.n_examples, e.n_epochs, e.epochs_auto) == (MINI, 200, 3, True)
    assert e.billed_tokens_per_epoch == per_epoch
    assert e.billed_tokens == per_epoch * 3
    assert e.cost_usd == pytest.approx(per_epoch * 3 * 3.00 / 1e6)
    assert e.price_per_1m == 3.0 and e.warnings == []
    d = e.to_dict()
    assert d["billed_tokens"] == e.billed_tokens and d["warnings"] == []


def test_estimate_accepts_a_report_and_explicit_epochs():
    from tunewise.data import validate

    report = validate(TRAIN, model="gpt-4.1-nano")
    e = cost.estimate_training(report, "gpt-4.1-nano", epochs=5)
    assert (e.model, e.n_epochs, e.epochs_auto) == ("gpt-4.1-nano-2025-04-14", 5, False)
    assert e.cost_usd == pytest.approx(report.stats.billed_tokens_per_epoch * 5 * 1.50 / 1e6)


def test_local_models_cost_nothing():
    e = cost.estimate_training(TRAIN, "tunewise-tiny")
    assert e.cost_usd == 0 and e.billed_tokens > 0 and e.provider == "local"


def test_risky_epoch_choices_are_warned(tmp_path):
    few = write_examples(tmp_path / "few.jsonl", receipts(12))
    low = cost.estimate_training(few, MINI, epochs=2)
    assert any("24 examples seen" in w and "auto would pick 8" in w for w in low.warnings)
    assert any("under 50" in w for w in low.warnings)
    many = cost.estimate_training(TRAIN, MINI, epochs=25)
    assert not any("examples seen" in w for w in many.warnings)  # 5,000 seen is within bounds
    assert any("memorise" in w for w in many.warnings)
    auto = cost.estimate_training(few, MINI)
    assert auto.n_epochs == 8 and not any("memorise" in w or "examples seen" in w for w in auto.warnings)


def test_examples_over_the_context_limit_are_billed_up_to_it(tmp_path):
    prices = tmp_path / "p.toml"
    prices.write_text('[models."short-model"]\nprovider = "openai"\nencoding = "o200k_base"\n'
                      'context_limit = 100\ntraining = 10\ninput = 1\noutput = 2\nft_input = 2\nft_output = 4\n')
    rows = receipts(20)
    data = write_examples(tmp_path / "d.jsonl", rows)
    counts = [reference_chat_tokens(r["messages"]) for r in rows]
    e = cost.estimate_training(data, "short-model", epochs=1, prices=prices)
    assert e.billed_tokens_per_epoch == sum(min(c, 100) for c in counts)
    assert e.n_truncated == sum(c > 100 for c in counts) > 0
    assert any("context limit" in w for w in e.warnings)
    assert e.cost_usd == pytest.approx(e.billed_tokens * 10 / 1e6)


def test_a_broken_file_points_at_validate(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [}\n' * 12)
    with pytest.raises(DataError) as exc:
        cost.estimate_training(bad, MINI)
    assert "tunewise validate" in exc.value.hint


@pytest.mark.parametrize("epochs", [0, 26, "many"])
def test_bad_epochs(epochs):
    with pytest.raises(UsageError):
        cost.estimate_training(TRAIN, MINI, epochs=epochs)


# --- breakeven ---------------------------------------------------------------------------------------------

def test_breakeven_arithmetic_with_catalog_prices():
    # gpt-4o-mini: base 0.15/0.60, fine-tuned 0.30/1.20 per 1M.
    b = cost.breakeven(MINI, prompt_tokens=1000, ft_prompt_tokens=100, output_tokens=50,
                       calls_per_month=100_000, training_cost=6.0)
    base = (1000 * 0.15 + 50 * 0.60) / 1e6
    ft = (100 * 0.30 + 50 * 1.20) / 1e6
    assert b.base_per_call == pytest.approx(base) and b.ft_per_call == pytest.approx(ft)
    assert b.base_per_1k == pytest.approx(base * 1000) and b.ft_per_1k == pytest.approx(ft * 1000)
    assert b.base_monthly == pytest.approx(base * 1e5) and b.ft_monthly == pytest.approx(ft * 1e5)
    assert b.monthly_saving == pytest.approx((base - ft) * 1e5)
    assert b.months_to_recover == pytest.approx(6.0 / ((base - ft) * 1e5))
    assert b.breakeven_calls == 66_667  # ceil(6 / 0.00009)
    assert b.breakeven_calls_per_month == 5_556  # pays back within 12 months
    assert not b.never_pays
    assert any("2x the base input price" in n and "~6x" in n for n in b.notes)
    assert json.loads(json.dumps(b.to_dict()))["monthly_saving"] == pytest.approx(b.monthly_saving)


def test_breakeven_never_pays_when_the_prompt_saving_is_too_small():
    b = cost.breakeven(MINI, prompt_tokens=100, ft_prompt_tokens=90, output_tokens=100, calls_per_month=1e6,
                       training_cost=1.0)
    assert b.never_pays and b.monthly_saving < 0
    assert b.months_to_recover is None and b.breakeven_calls_per_month is None and b.breakeven_calls is None
    assert any("never pays" in n for n in b.notes)


def test_breakeven_prices_training_tokens_and_flags_a_missing_training_cost():
    b = cost.breakeven("gpt-4o", 2000, 200, 100, 10_000, training_tokens=1_000_000)
    assert b.training_cost == pytest.approx(25.0)
    free = cost.breakeven("gpt-4o", 2000, 200, 100, 10_000)
    assert free.training_cost == 0 and free.months_to_recover == 0
    assert any("No training cost given" in n for n in free.notes)


def test_breakeven_with_no_calls_never_recovers_training():
    b = cost.breakeven(MINI, 1000, 100, 50, calls_per_month=0, training_cost=1.0)
    assert b.months_to_recover is None and not b.never_pays and b.breakeven_calls_per_month == 926


def test_breakeven_for_a_local_model():
    b = cost.breakeven("tunewise-tiny", 1000, 100, 50, 1000)
    assert b.base_per_call == b.ft_per_call == 0 and not b.never_pays
    assert any("local model" in n for n in b.notes)


@pytest.mark.parametrize("kwargs", [dict(prompt_tokens=-1), dict(calls_per_month=-5), dict(training_cost=-1),
                                    dict(horizon_months=0)])
def test_breakeven_refuses_negative_inputs(kwargs):
    args = dict(model=MINI, prompt_tokens=10, ft_prompt_tokens=5, output_tokens=5, calls_per_month=10)
    args.update(kwargs)
    with pytest.raises(UsageError):
        cost.breakeven(**args)


# --- counts from files -------------------------------------------------------------------------------------

def test_usage_and_prompt_tokens_from_files_match_tiktoken():
    rows = [json.loads(line) for line in TRAIN.read_text(encoding="utf-8").splitlines()]
    usage = cost.usage_from_data(TRAIN, MINI)
    enc = reference_encoding("o200k_base")
    short = (RECEIPTS / "system_prompt_short.txt").read_text(encoding="utf-8").strip()
    assert usage.n_examples == 200 and usage.system_prompt == short
    assert usage.system_tokens == 3 + 1 + len(enc.encode_ordinary(short))  # role "system" is one token
    users = [3 + 1 + len(enc.encode_ordinary(r["messages"][1]["content"])) for r in rows]
    answers = [len(enc.encode_ordinary(r["messages"][2]["content"])) for r in rows]
    assert usage.input_tokens == pytest.approx(sum(users) / 200)
    assert usage.output_tokens == pytest.approx(sum(answers) / 200)

    long_text = (RECEIPTS / "system_prompt_long.txt").read_text(encoding="utf-8")
    shots = [m for line in (RECEIPTS / "few_shot.jsonl").read_text(encoding="utf-8").splitlines()
             for m in json.loads(line)["messages"]]
    expected = reference_chat_tokens([{"role": "system", "content": long_text}, *shots]) + 40
    assert cost.prompt_tokens_from_files(MINI, RECEIPTS / "system_prompt_long.txt",
                                         RECEIPTS / "few_shot.jsonl", input_tokens=40) == expected


def test_prompt_file_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        cost.read_text(tmp_path / "missing.txt")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        cost.read_text(latin)
    only_system = write_examples(tmp_path / "sys.jsonl", [{"messages": [{"role": "system", "content": "x"}]}])
    with pytest.raises(DataError, match="no user or assistant"):
        cost.read_few_shot(only_system)


# --- the commands ------------------------------------------------------------------------------------------

def test_estimate_command(capsys):
    code, out, err = run(capsys, "estimate", str(TRAIN), "--model", "gpt-4o-mini")
    assert code == 0, err
    e = cost.estimate_training(TRAIN, MINI)
    assert f"{e.billed_tokens:,}" in out and "200" in out and "auto" in out
    assert f"${e.cost_usd:.4f}".rstrip("0") in out
    code, out, _ = run(capsys, "estimate", str(TRAIN), "--epochs", "2", "--json")
    data = json.loads(out)
    assert code == 0 and data["n_epochs"] == 2 and data["billed_tokens"] == e.billed_tokens_per_epoch * 2


def test_estimate_command_errors_are_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    code, out, err = run(capsys, "estimate", str(bad))
    assert code == 1 and "tunewise validate" in err and "Traceback" not in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "estimate", str(TRAIN), "--epochs", "lots")
    assert code == 2 and "--epochs" in err
    code, _, err = run(capsys, "estimate", str(TRAIN), "--model", "gpt-9")
    assert code == 2 and "not in the catalog" in err  # an unknown model is a usage error


def test_breakeven_command_from_numbers(capsys):
    code, out, err = run(capsys, "breakeven", "--prompt-tokens", "1000", "--ft-prompt-tokens", "100",
                         "--output-tokens", "50", "--calls-per-month", "100000", "--training-cost", "6")
    assert code == 0, err
    assert "base, long prompt" in out and "fine-tuned, short prompt" in out
    # Per call: base (1000 x 0.15 + 50 x 0.60)/1M = $0.00018, fine-tuned (100 x 0.30 + 50 x 1.20)/1M = $0.00009.
    assert "$0.000180" in out and "$0.0000900" in out and "$18.00" in out and "$9.00" in out
    assert "monthly saving     $9.00" in out
    assert "months to recover  0.67 (about 20 days)" in out
    assert "5,556 calls/month" in out and "2x the base input price" in out


def test_breakeven_command_says_never(capsys):
    code, out, _ = run(capsys, "breakeven", "--prompt-tokens", "100", "--ft-prompt-tokens", "90",
                       "--output-tokens", "100", "--calls-per-month", "1000")
    assert code == 0 and "never pays" in out


def test_breakeven_command_from_files(capsys):
    code, out, err = run(capsys, "breakeven", "--system-prompt", str(RECEIPTS / "system_prompt_long.txt"),
                         "--few-shot", str(RECEIPTS / "few_shot.jsonl"), "--data", str(TRAIN),
                         "--calls-per-month", "50000", "--json")
    assert code == 0, err
    data = json.loads(out)
    usage = cost.usage_from_data(TRAIN, MINI)
    training = cost.estimate_training(TRAIN, MINI)
    assert data["prompt_tokens"] == round(cost.prompt_tokens_from_files(
        MINI, RECEIPTS / "system_prompt_long.txt", RECEIPTS / "few_shot.jsonl", usage.input_tokens))
    assert data["ft_prompt_tokens"] == round(usage.system_tokens + usage.input_tokens + 3)
    assert data["output_tokens"] == pytest.approx(usage.output_tokens)
    assert data["training_cost"] == pytest.approx(training.cost_usd)
    assert data["training"]["n_epochs"] == 3
    assert data["monthly_saving"] > 0 and not data["never_pays"]


@pytest.mark.parametrize("args, fragment", [
    (["--calls-per-month", "10"], "prompt size is missing"),
    (["--calls-per-month", "10", "--prompt-tokens", "100"], "fine-tuned model's prompt size"),
    (["--calls-per-month", "10", "--prompt-tokens", "100", "--ft-prompt-tokens", "10"], "output size"),
])
def test_breakeven_command_names_what_is_missing(capsys, args, fragment):
    code, _, err = run(capsys, "breakeven", *args)
    assert code == 2 and fragment in err and "Traceback" not in err


def test_models_command(capsys, tmp_path):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "gpt-4o-mini-2024-07-18" in out and "o200k_base" in out and "65,536" in out and "tunewise-tiny" in out
    prices = tmp_path / "p.toml"
    prices.write_text('[models."babbage-002"]\ntraining = 0.55\n')
    code, out, _ = run(capsys, "models", "--prices", str(prices), "--json")
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert code == 0 and models["babbage-002"]["training"] == 0.55
    assert models["gpt-4o-mini-2024-07-18"]["aliases"] == ["gpt-4o-mini"]


def test_usd_formatting():
    from tunewise.cli.cost import usd

    assert usd(1234.5) == "$1,234.50"
    assert usd(0.42) == "$0.42"
    assert usd(0.0000974) == "$0.0000974"
    assert usd(-0.072) == "-$0.072"
    assert usd(0) == "$0"


def test_breakeven_prices_each_side_with_its_own_output_and_cached_tokens():
    # Prompting answers in 200 tokens, the fine-tuned model in 20; 1,000 of prompting's 1,500 input tokens cached.
    b = cost.breakeven(MINI, 1500, 300, 200, 100_000, training_cost=1.0, ft_output_tokens=20, cached_tokens=1000)
    assert b.base_per_call == pytest.approx((500 * 0.15 + 1000 * 0.075 + 200 * 0.60) / 1e6)
    assert b.ft_per_call == pytest.approx((300 * 0.30 + 20 * 1.20) / 1e6)
    assert b.ft_output_tokens == 20
    # A model without a cached-input price bills cached tokens at the full price.
    plain = cost.breakeven("gpt-3.5-turbo", 1500, 300, 200, 100_000, cached_tokens=1000)
    assert plain.base_per_call == pytest.approx((1500 * 0.50 + 200 * 1.50) / 1e6)
    with pytest.raises(UsageError, match="cached tokens at most the prompt"):
        cost.breakeven(MINI, 100, 50, 20, 1000, cached_tokens=200)


def test_price_ratio_note_does_not_contradict_itself():
    # gpt-3.5-turbo's fine-tuned prices are 6x its base prices: the note must not say they are not.
    note = next(n for n in cost.breakeven("gpt-3.5-turbo", 900, 60, 20, 1000).notes if "x the base" in n)
    assert "6x the base input price" in note and "not the guide" not in note and "holds for input only" in note
    note = next(n for n in cost.breakeven(MINI, 900, 60, 20, 1000).notes if "x the base" in n)
    assert "2x the base input price" in note and "not the guide's '~6x'" in note


def test_catalog_has_cached_input_prices_where_openai_has_them():
    from tunewise.catalog import get_model

    assert get_model("gpt-4o-mini").cached_input == 0.075 and get_model("gpt-4.1").cached_input == 0.50
    assert get_model("gpt-3.5-turbo").cached_input is None  # no cache discount there

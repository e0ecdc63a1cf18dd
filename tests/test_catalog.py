"""The model catalog: the shipped figures, name resolution, and user price files."""

from __future__ import annotations

import pytest

from tunewise.catalog import PRICE_FIELDS, base_model_name, get_model, load_catalog
from tunewise.errors import NotFound, UsageError

# The table: training / fine-tuned in / fine-tuned out / base in / base out, USD per 1M tokens.
EXPECTED = {
    "gpt-4o-mini-2024-07-18": (3.00, 0.30, 1.20, 0.15, 0.60),
    "gpt-4o-2024-08-06": (25.00, 3.75, 15.00, 2.50, 10.00),
    "gpt-4.1-2025-04-14": (25.00, 3.00, 12.00, 2.00, 8.00),
    "gpt-4.1-mini-2025-04-14": (5.00, 0.80, 3.20, 0.40, 1.60),
    "gpt-4.1-nano-2025-04-14": (1.50, 0.20, 0.80, 0.10, 0.40),
    "gpt-3.5-turbo-0125": (8.00, 3.00, 6.00, 0.50, 1.50),
    "davinci-002": (6.00, 12.00, 12.00, 2.00, 2.00),
    "babbage-002": (0.40, 1.60, 1.60, 0.40, 0.40),
}


@pytest.fixture(autouse=True)
def _no_env_prices(monkeypatch):
    monkeypatch.delenv("TUNEWISE_PRICES", raising=False)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_prices_match_the_published_table(name):
    m = get_model(name)
    assert (m.training, m.ft_input, m.ft_output, m.input, m.output) == EXPECTED[name]
    assert m.provider == "openai"
    assert m.checked  # every entry says when its prices were checked


def test_encodings_and_context_limits():
    cat = load_catalog()
    for name in ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14",
                 "gpt-4.1-nano-2025-04-14"):
        assert cat.get(name).encoding == "o200k_base"
    for name in ("gpt-3.5-turbo-0125", "davinci-002", "babbage-002"):
        assert cat.get(name).encoding == "cl100k_base"
    assert cat.get("gpt-4o-mini").context_limit == 65_536
    assert cat.get("gpt-4o").context_limit == 65_536
    assert cat.get("gpt-3.5-turbo").context_limit == 16_385


def test_local_models_are_free_and_use_their_own_tokenizer():
    cat = load_catalog()
    for name in ("smollm2-135m-instruct", "tunewise-tiny"):
        m = cat.get(name)
        assert m.is_local and m.encoding == f"hf:{name}"
        assert all(getattr(m, f) in (0.0, None) for f in PRICE_FIELDS)


@pytest.mark.parametrize("name, canonical", [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    ("ft:gpt-4o-mini-2024-07-18:acme:receipts:abc123", "gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4.1-mini-2025-04-14:org::xyz:ckpt-step-30", "gpt-4.1-mini-2025-04-14"),
    ("ft:gpt-3.5-turbo:org:s:id", "gpt-3.5-turbo-0125"),  # an alias inside an ft: name
    ("  gpt-4o  ", "gpt-4o-2024-08-06"),
])
def test_names_resolve_through_aliases_and_fine_tuned_ids(name, canonical):
    assert load_catalog().get(name).name == canonical


def test_base_model_name():
    assert base_model_name("ft:gpt-4o-mini-2024-07-18:o:s:id:ckpt-step-5") == "gpt-4o-mini-2024-07-18"
    assert base_model_name("gpt-4o") == "gpt-4o"


def test_unknown_model_names_the_known_ones_and_the_fix():
    with pytest.raises(NotFound) as exc:
        get_model("gpt-5-ultra")
    assert "gpt-5-ultra" in exc.value.message
    assert "gpt-4o-mini-2024-07-18" in exc.value.hint and "--prices" in exc.value.hint
    assert load_catalog().find("gpt-5-ultra") is None


def test_prices_file_overrides_fields_and_adds_models(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('checked = "2030-01-01"\n'
                      '[models."gpt-4o-mini-2024-07-18"]\ntraining = 1.5\n'
                      '[models."my-model"]\nprovider = "openai"\nencoding = "o200k_base"\ncontext_limit = 1000\n'
                      'training = 1\ninput = 2\noutput = 3\nft_input = 4\nft_output = 5\naliases = ["mine"]\n')
    cat = load_catalog(prices)
    mini = cat.get("gpt-4o-mini")
    assert mini.training == 1.5 and mini.ft_input == 0.30  # only the given field changed
    assert cat.get("mine").name == "my-model" and cat.get("my-model").ft_output == 5.0
    assert cat.get("my-model").checked == "2030-01-01"
    assert str(prices) in cat.sources[-1]
    assert load_catalog().get("gpt-4o-mini").training == 3.0  # the package file is untouched


def test_environment_variable_points_at_a_prices_file(tmp_path, monkeypatch):
    prices = tmp_path / "env.toml"
    prices.write_text('[models."babbage-002"]\ninput = 0.5\n')
    monkeypatch.setenv("TUNEWISE_PRICES", str(prices))
    assert get_model("babbage-002").input == 0.5


@pytest.mark.parametrize("text, fragment", [
    ('[models."gpt-4o"]\ntraning = 1\n', "unknown field"),
    ('[models."new-model"]\nprovider = "openai"\n', "lacks"),
    ('[models."babbage-002"]\ninput = -1\n', "non-negative"),
    ('[models."babbage-002"]\ninput = "cheap"\n', "non-negative"),
    ("this is [ not toml", "not valid TOML"),
])
def test_bad_prices_files_are_usage_errors_that_say_why(tmp_path, text, fragment):
    prices = tmp_path / "bad.toml"
    prices.write_text(text)
    with pytest.raises(UsageError) as exc:
        load_catalog(prices)
    assert fragment in str(exc.value)


def test_missing_prices_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_catalog(tmp_path / "nope.toml")

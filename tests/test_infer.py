"""The batched inference engine on the tiny random model: decoding options, batching, streaming, constrained
JSON, adapters and errors. (Random weights make the texts nonsense, but deterministic, which is what is tested.)"""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest
import torch

from tunewise import models
from tunewise.errors import DataError, ModelNotFound, UsageError
from tunewise.infer import Engine, GenerationRequest

TINY = models.TINY_MODEL

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "member", "color"],
}


def ask(text: str = "Tell me a story.", **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 16)
    return GenerationRequest(model=kw.pop("model", TINY), messages=[{"role": "user", "content": text}], **kw)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The tiny model's matrices are too small for a thread pool to pay: on a busy CPU, synchronising intra-op
    # threads costs more than the work (10x slower steps were seen). Restored for the tests that follow.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine():
    with Engine(max_batch_size=8) as e:
        yield e


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(TINY)


def _perturbed_lora(base_dir, out_dir, seed: int):
    """A real PEFT LoRA adapter for the tiny model with random (non-zero) weights, saved as the trainer saves it."""
    from peft import LoraConfig, get_peft_model

    base = models.load_model(TINY)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (the adapter is a no-op until trained)
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    model.save_pretrained(out_dir)
    (out_dir / "tunewise_model.json").write_text(json.dumps({"base_model": TINY, "method": "lora"}))
    return out_dir


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base_dir = models.local_dir(TINY)
    return [_perturbed_lora(base_dir, root / f"lora{i}", seed=i) for i in range(2)]


def test_greedy_is_deterministic_and_counts_tokens(engine, tokenizer):
    a = engine.generate(ask(temperature=0, max_tokens=12))
    b = engine.generate(ask(temperature=0, max_tokens=12))
    assert a.choices[0].text == b.choices[0].text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me a story."}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
    assert a.prompt_tokens == len(prompt)
    assert a.choices[0].finish_reason == "length" and a.completion_tokens == 12
    assert a.total_tokens == a.prompt_tokens + 12


def test_seeded_sampling_is_reproducible(engine):
    first = engine.generate(ask(temperature=1.0, seed=7, max_tokens=12)).choices[0].text
    again = engine.generate(ask(temperature=1.0, seed=7, max_tokens=12)).choices[0].text
    other = engine.generate(ask(temperature=1.0, seed=8, max_tokens=12)).choices[0].text
    assert first == again
    assert first != other
    nucleus = [engine.generate(ask(temperature=0.9, top_p=0.5, seed=3, max_tokens=12)).choices[0].text
               for _ in range(2)]
    assert nucleus[0] == nucleus[1]


def test_stop_string_ends_the_text_before_it(engine):
    full = engine.generate(ask(temperature=1.0, seed=11, max_tokens=30)).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop and len(full) > 6
    res = engine.generate(ask(temperature=1.0, seed=11, max_tokens=30, stop=[stop, "never appears 123"]))
    assert res.choices[0].finish_reason == "stop"
    assert res.choices[0].text == full[: full.find(stop)]
    assert stop not in res.choices[0].text


def test_max_tokens_ends_with_length(engine):
    res = engine.generate(ask(temperature=0, max_tokens=5))
    assert res.choices[0].finish_reason == "length"
    assert res.completion_tokens == 5


def test_n_choices_share_the_prompt(engine):
    res = engine.generate(ask(temperature=1.0, seed=5, n=3, max_tokens=10))
    assert [c.index for c in res.choices] == [0, 1, 2]
    assert len({c.text for c in res.choices}) > 1
    single = engine.generate(ask(temperature=1.0, seed=5, n=1, max_tokens=10))
    assert res.prompt_tokens == single.prompt_tokens
    assert res.completion_tokens == 30
    assert res.choices[0].text == single.choices[0].text  # choice 0 draws the same stream whatever n


def test_concurrent_callers_are_batched_and_get_the_same_answers(engine):
    prompts = [f"Question number {i}: {'why ' * i}is the sky blue?" for i in range(8)]
    solo = [engine.generate(ask(p, temperature=0, max_tokens=6 + i)).choices[0].text
            for i, p in enumerate(prompts)]
    before = engine.stats()
    together: list[str | None] = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def call(i: int) -> None:
        barrier.wait()
        together[i] = engine.generate(ask(prompts[i], temperature=0, max_tokens=6 + i)).choices[0].text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = engine.stats()
    assert together == solo
    decode_steps = after.decode_steps - before.decode_steps
    # One at a time, these requests need sum(6 + i) - 8 = 68 decode steps; batched, far fewer.
    assert decode_steps < 34, after
    assert after.max_batch_size_seen >= 4
    assert sum(n for size, n in after.batch_sizes.items() if size >= 4) > 0


def test_stream_concatenates_to_the_generated_text(engine):
    req = dict(temperature=1.0, seed=21, max_tokens=25, n=2, stop="ing")
    whole = engine.generate(ask(**req))
    stream = engine.stream(ask(**req))
    parts: dict[int, list[str]] = {0: [], 1: []}
    reasons = {}
    for delta in stream:
        assert reasons.get(delta.index) is None  # nothing after a choice's final delta
        parts[delta.index].append(delta.text)
        reasons[delta.index] = delta.finish_reason
    assert ["".join(parts[i]) for i in (0, 1)] == [c.text for c in whole.choices]
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert stream.usage == {"prompt_tokens": whole.prompt_tokens, "completion_tokens": whole.completion_tokens,
                            "total_tokens": whole.total_tokens}


@pytest.mark.parametrize("stop", [None, "ing"])
def test_a_coalesced_stream_sends_each_choice_once_with_the_streamed_text(engine, stop):
    """What ``generate`` (and a non-streamed chat completion) asks for: one delta per choice, when it ends."""
    req = dict(temperature=1.0, seed=22, max_tokens=30, n=3, stop=stop)
    streamed: dict[int, list[str]] = {i: [] for i in range(3)}
    reasons = {}
    for delta in engine.stream(ask(**req)):
        streamed[delta.index].append(delta.text)
        reasons[delta.index] = delta.finish_reason
    deltas = list(engine.stream(ask(**req), coalesce=True))
    assert sorted(d.index for d in deltas) == [0, 1, 2]  # exactly one each
    assert {d.index: d.text for d in deltas} == {i: "".join(streamed[i]) for i in range(3)}
    assert {d.index: d.finish_reason for d in deltas} == reasons
    assert max(len(p) for p in streamed.values()) > 1  # the plain stream did send token by token


def test_closing_a_stream_stops_its_generation(engine):
    stream = engine.stream(ask(temperature=0, max_tokens=1500))
    next(stream)
    stream.close()
    assert list(stream) == []
    # The engine goes on serving (the cancelled rows left the batch).
    assert engine.generate(ask(temperature=0, max_tokens=3)).completion_tokens == 3
    assert stream.completion_tokens < 1500


def test_json_schema_output_validates(engine):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for temperature, n in ((0, 1), (1.0, 4)):
        res = engine.generate(ask("Describe a person as JSON.", temperature=temperature, seed=2, n=n,
                                  max_tokens=80, response_format=fmt))
        for choice in res.choices:
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.text), PERSON)


def test_json_object_output_parses(engine):
    choices = []
    for seed in (1, 2, 3):
        res = engine.generate(ask("Reply in JSON.", temperature=1.0, seed=seed, n=8, max_tokens=16,
                                  response_format={"type": "json_object"}))
        choices += res.choices
    finished = [c for c in choices if c.finish_reason == "stop"]
    # Random weights wander off into long keys, but some of 24 choices close their object within 16 tokens.
    assert finished
    for choice in finished:
        assert isinstance(json.loads(choice.text), dict)
    for choice in choices:
        assert choice.text.startswith("{")


def test_constrained_and_free_requests_share_a_batch(engine):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    reqs = [ask("JSON please", temperature=0, max_tokens=60, response_format=fmt),
            ask("free text", temperature=0, max_tokens=20)]
    solo = [engine.generate(r).choices[0].text for r in reqs]
    streams = [engine.stream(r) for r in reqs]
    texts = ["".join(d.text for d in s) for s in streams]
    assert texts == solo
    jsonschema.validate(json.loads(texts[0]), PERSON)


def test_lora_adapter_changes_the_output_and_batches_with_the_base(engine, adapters):
    base = engine.generate(ask(temperature=0, max_tokens=12)).choices[0].text
    tuned = [engine.generate(ask(temperature=0, max_tokens=12, model=str(a))).choices[0].text for a in adapters]
    assert tuned[0] != base and tuned[1] != base and tuned[0] != tuned[1]
    # Base and both adapters in flight together: same answers as alone.
    streams = [engine.stream(ask(temperature=0, max_tokens=12, model=m)) for m in [TINY, *map(str, adapters)]]
    assert ["".join(d.text for d in s) for s in streams] == [base, *tuned]


def test_full_fine_tune_directory(engine, tmp_path):
    model = models.load_model(TINY)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # "fine-tuned": every weight moved
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    model.save_pretrained(tmp_path / "full")
    (tmp_path / "full" / "tunewise_model.json").write_text(json.dumps({"base_model": TINY, "method": "full"}))
    base = engine.generate(ask(temperature=0, max_tokens=12))
    tuned = engine.generate(ask(temperature=0, max_tokens=12, model=str(tmp_path / "full")))
    assert tuned.prompt_tokens == base.prompt_tokens  # the base's tokenizer, borrowed
    assert tuned.choices[0].text != base.choices[0].text


def test_lru_unloads_idle_models_and_reloads_them(adapters):
    with Engine(max_batch_size=4, max_loaded_models=2) as engine:
        first = engine.generate(ask(temperature=0, max_tokens=8, model=str(adapters[0]))).choices[0].text
        engine.generate(ask(temperature=0, max_tokens=8, model=str(adapters[1])))
        loaded = engine.loaded_models()
        assert len(loaded) == 2 and not any(str(adapters[0]) in m for m in loaded)
        again = engine.generate(ask(temperature=0, max_tokens=8, model=str(adapters[0]))).choices[0].text
        assert again == first


def test_adapter_on_a_one_model_budget_keeps_its_base(adapters):
    with Engine(max_batch_size=2, max_loaded_models=1) as engine:
        base = engine.generate(ask(temperature=0, max_tokens=6)).choices[0].text
        tuned = engine.generate(ask(temperature=0, max_tokens=6, model=str(adapters[0]))).choices[0].text
        assert tuned != base
        assert engine.generate(ask(temperature=0, max_tokens=6)).choices[0].text == base


def test_adapter_without_a_base_model_is_a_clear_error(engine, adapters, tmp_path):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    config = json.loads((adapters[0] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (lonely / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFound, match="base model"):
        engine.generate(ask(model=str(lonely)))


@pytest.mark.parametrize(
    ("request_kw", "error", "param"),
    [
        ({"messages": []}, UsageError, "messages"),
        ({"max_tokens": 0}, UsageError, "max_tokens"),
        ({"temperature": 3}, UsageError, "temperature"),
        ({"top_p": 1.5}, UsageError, "top_p"),
        ({"n": 9}, UsageError, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, UsageError, "stop"),
        ({"response_format": {"type": "xml"}}, UsageError, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
         UsageError, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, UsageError,
         "response_format"),
        ({"model": "no-such-model"}, ModelNotFound, "model"),
        ({"max_tokens": 5000}, DataError, "messages"),
    ],
)
def test_bad_requests_raise_clear_errors(engine, request_kw, error, param):
    kw = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **request_kw}
    with pytest.raises(error) as info:
        engine.stream(GenerationRequest(**kw))
    assert info.value.param == param
    assert info.value.message


def test_prompt_longer_than_the_context(engine):
    with pytest.raises(DataError) as info:
        engine.generate(ask("word " * 3000, max_tokens=None))
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.message


@pytest.mark.slow
def test_default_model_answers_and_batches_exactly():
    prompts = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?"]
    with Engine(max_batch_size=8) as engine:
        solo = [engine.generate(ask(p, model=models.DEFAULT_MODEL, temperature=0, max_tokens=24)) for p in prompts]
        assert "Paris" in solo[0].choices[0].text
        assert solo[0].choices[0].finish_reason == "stop"
        streams = [engine.stream(ask(p, model=models.DEFAULT_MODEL, temperature=0, max_tokens=24)) for p in prompts]
        assert ["".join(d.text for d in s) for s in streams] == [r.choices[0].text for r in solo]


@pytest.mark.parametrize("kw", [{"max_batch_size": 0}, {"max_loaded_models": 0}, {"num_threads": 0}])
def test_engine_settings_are_checked(kw):
    with pytest.raises(UsageError) as info:
        Engine(**kw)
    assert info.value.param == next(iter(kw))


def test_top_p_zero_samples_only_the_most_likely_token(engine):
    greedy = engine.generate(ask(temperature=0, max_tokens=10)).choices[0].text
    for seed in (1, 2):
        assert engine.generate(ask(temperature=1.5, top_p=0, seed=seed, max_tokens=10)).choices[0].text == greedy


def test_default_max_tokens_stops_at_the_context_end_instead_of_refusing(engine, tokenizer):
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": "word "}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)) - 1
    text = "word " * (2048 - 5 - overhead)
    res = engine.generate(ask(text, max_tokens=None, default_max_tokens=4096, temperature=0))
    assert res.prompt_tokens == 2043
    assert res.total_tokens == 2048 if res.choices[0].finish_reason == "length" else res.total_tokens < 2048
    short = engine.generate(ask(max_tokens=None, default_max_tokens=3, temperature=0))
    assert short.completion_tokens <= 3

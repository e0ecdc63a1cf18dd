"""The llama.cpp backend against the torch one, and GGUF export: same greedy answers on held-out receipts.

The tiny model's random weights make the texts nonsense, but deterministic: two backends that compute the same
function give the same tokens. Skipped where llama-cpp-python is not installed (it is the ``llamacpp`` extra).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python (the 'llamacpp' extra) is not installed")

from helpers import run_cli  # noqa: E402
from tunewise import models  # noqa: E402
from tunewise.errors import UsageError  # noqa: E402
from tunewise.infer import Engine, GenerationRequest  # noqa: E402

TINY = models.TINY_MODEL
RECEIPTS = Path(__file__).resolve().parent.parent / "examples" / "receipts"

SCHEMA = json.loads((RECEIPTS / "schema.json").read_text())


def held_out(k: int) -> list[list[dict]]:
    """The first ``k`` held-out receipts' prompts (system + user), without the reference answer."""
    rows = [json.loads(line) for line in (RECEIPTS / "test.jsonl").read_text().splitlines() if line.strip()]
    return [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows[:k]]


def ask(messages, model=TINY, **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return GenerationRequest(model=model, messages=messages, **kw)


def all_at_once(engine: Engine, requests: list[GenerationRequest]) -> list:
    """``engine.generate`` of every request, sent together from a thread each; the results in order."""
    got: list = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def call(i: int) -> None:
        barrier.wait()
        got[i] = engine.generate(requests[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engines():
    with Engine(max_batch_size=8, backend="torch", num_threads=1) as t, \
            Engine(max_batch_size=8, backend="llamacpp", num_threads=1) as ll:
        yield t, ll


def test_auto_picks_llamacpp_on_the_cpu(engines):
    assert Engine(backend="auto").backend_for(TINY) == "llamacpp"
    assert engines[0].backend_for(TINY) == "torch"
    with pytest.raises(UsageError, match="backend must be one of"):
        Engine(backend="vllm")


def test_greedy_answers_match_torch_on_held_out_receipts_batched(engines):
    torch_engine, ll = engines
    prompts = held_out(6)
    expected = [torch_engine.generate(ask(p, max_tokens=20)) for p in prompts]
    got = all_at_once(ll, [ask(p, max_tokens=20) for p in prompts])
    assert [r.choices[0].text for r in got] == [r.choices[0].text for r in expected]
    assert [(r.prompt_tokens, r.completion_tokens) for r in got] == \
        [(r.prompt_tokens, r.completion_tokens) for r in expected]
    stats = ll.stats()
    assert stats.max_batch_size_seen >= 2  # the concurrent requests shared decode steps
    # Every receipt prompt starts with the same system prompt: later ones reuse its cached KV.
    assert stats.cached_prompt_tokens > 0


def test_sampling_n_stop_and_stream(engines):
    torch_engine, ll = engines
    msgs = held_out(1)[0]
    # Sampling: seeded choices are reproducible, differ from each other, and choice 0 is the same whatever n.
    # (Not compared with torch: f16 and float32 logits differ in the last bits, enough to move a draw over a
    # near-uniform random-weight distribution.)
    three = ll.generate(ask(msgs, temperature=1.0, seed=11, n=3, max_tokens=12))
    assert [c.text for c in ll.generate(ask(msgs, temperature=1.0, seed=11, n=3, max_tokens=12)).choices] == \
        [c.text for c in three.choices]
    assert len({c.text for c in three.choices}) == 3 and three.completion_tokens == 36
    one = ll.generate(ask(msgs, temperature=1.0, seed=11, n=1, max_tokens=12))
    assert one.choices[0].text == three.choices[0].text
    top = ll.generate(ask(msgs, temperature=1.0, top_p=0, seed=1, max_tokens=8))
    assert top.choices[0].text == ll.generate(ask(msgs, max_tokens=8)).choices[0].text  # top_p=0 is greedy
    # Stop strings and finish reasons: greedy, so exactly torch's.
    for kw in (dict(max_tokens=25, stop=["e", "a"]), dict(max_tokens=5), dict(max_tokens=40, stop="ing")):
        a, b = torch_engine.generate(ask(msgs, **kw)), ll.generate(ask(msgs, **kw))
        assert [(c.text, c.finish_reason) for c in b.choices] == [(c.text, c.finish_reason) for c in a.choices]
        assert b.completion_tokens == a.completion_tokens
    # A stream concatenates to the same request's generate.
    req = dict(temperature=1.0, seed=21, n=2, max_tokens=25, stop="ing")
    stream = ll.stream(ask(msgs, **req))
    parts: dict[int, list[str]] = {}
    reasons = {}
    for delta in stream:
        parts.setdefault(delta.index, []).append(delta.text)
        reasons[delta.index] = delta.finish_reason
    whole = ll.generate(ask(msgs, **req))
    assert ["".join(parts[i]) for i in range(2)] == [c.text for c in whole.choices]
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert stream.usage["completion_tokens"] == whole.completion_tokens


def test_response_format_is_the_same_constrained_decoding(engines):
    import jsonschema

    torch_engine, ll = engines
    fmt = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": SCHEMA, "strict": True}}
    msgs = held_out(2)
    for m in msgs:
        a = torch_engine.generate(ask(m, max_tokens=60, response_format=fmt))
        b = ll.generate(ask(m, max_tokens=60, response_format=fmt))
        assert b.choices[0].text == a.choices[0].text
        if b.choices[0].finish_reason == "stop":
            jsonschema.validate(json.loads(b.choices[0].text), SCHEMA)
        assert b.choices[0].text.startswith("{")


def test_prompt_lookup_drafts_lookup_tokens_and_keeps_the_answers():
    from tunewise.infer.llamacpp import _Answers, _Lookup

    look = _Lookup([5, 6, 7, 8, 5, 6])  # the last two tokens (5, 6) came before, followed by 7, 8
    assert look.draft(3) == [7, 8, 5]
    look.push(9)  # now ... 5, 6, 9: the bigram (6, 9) is new
    assert look.draft(3) == []
    look.push(5)
    look.push(6)  # (5, 6) again: its most recent continuation is now 9
    assert look.draft(2) == [9, 5]
    assert look.draft(0) == []
    # A bigram the row's own context lacks is looked up in the model's recent answers (each kept with the last
    # two tokens of its prompt, so a new answer's start finds the start of earlier ones).
    answers = _Answers()
    first = _Lookup([1, 2, 3, 4], answers)
    for token in (40, 41, 42):
        first.push(token)
    answers.add(first.answer())
    assert first.answer() == [3, 4, 40, 41, 42]
    second = _Lookup([7, 3, 4], answers)  # another prompt ending the same way
    assert second.draft(2) == [40, 41]
    second.push(40)
    assert second.draft(5) == [41, 42]


def test_prompt_lookup_gives_the_answers_of_decoding_token_by_token(engines):
    """Drafts change how many tokens a step makes, never which: greedy answers, finish reasons, usage and streams
    are those of the engine without prompt lookup, one request at a time and several at once."""
    _, ll = engines
    prompts = held_out(6)
    with Engine(max_batch_size=8, backend="llamacpp", num_threads=1, prompt_lookup=0) as plain, \
            Engine(max_batch_size=8, backend="llamacpp", num_threads=1, prompt_lookup=6) as looked:
        for kw in (dict(max_tokens=40), dict(max_tokens=7), dict(max_tokens=40, stop=["e", "in"])):
            a = [plain.generate(ask(p, **kw)) for p in prompts]
            b = [looked.generate(ask(p, **kw)) for p in prompts]
            assert [[(c.text, c.finish_reason) for c in r.choices] for r in b] == \
                [[(c.text, c.finish_reason) for c in r.choices] for r in a]
            assert [r.completion_tokens for r in b] == [r.completion_tokens for r in a]
        stats = looked.stats()
        assert stats.draft_tokens > 0 and 0 < stats.accepted_draft_tokens <= stats.draft_tokens
        assert stats.decode_steps < plain.stats().decode_steps  # kept drafts saved steps
        # Several at once (drafts shrink as rows join), and a stream of the same request.
        got = all_at_once(looked, [ask(p, max_tokens=40) for p in prompts])
        assert [r.choices[0].text for r in got] == \
            [plain.generate(ask(p, max_tokens=40)).choices[0].text for p in prompts]
        stream = looked.stream(ask(prompts[0], max_tokens=40))
        assert "".join(d.text for d in stream) == got[0].choices[0].text
    with pytest.raises(UsageError, match="prompt_lookup"):
        Engine(prompt_lookup=-1)


def _tiny_lora(out_dir: Path, seed: int, **lora) -> Path:
    """A LoRA adapter for the tiny model with random non-zero weights, saved as the trainer saves one."""
    from peft import LoraConfig, get_peft_model

    lora.setdefault("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    torch.manual_seed(seed)  # PEFT draws lora_A from the global generator: the same adapter whatever ran before
    model = get_peft_model(models.load_model(TINY), LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    model.save_pretrained(out_dir)
    models.load_tokenizer(TINY).save_pretrained(out_dir)
    (out_dir / "tunewise_model.json").write_text(json.dumps({"base_model": TINY, "method": "lora"}))
    return out_dir


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return _tiny_lora(tmp_path_factory.mktemp("lora") / "final", seed=4)


def test_lora_adapter_served_by_llamacpp_matches_torch(engines, adapter):
    torch_engine, ll = engines
    msgs = held_out(3)
    base = [ll.generate(ask(m)).choices[0].text for m in msgs]
    want = [torch_engine.generate(ask(m, model=str(adapter))).choices[0].text for m in msgs]
    got = [ll.generate(ask(m, model=str(adapter))).choices[0].text for m in msgs]
    assert got == want
    assert got != base
    # Served as a LoRA adapter GGUF over the loaded base (no second copy of the weights), on a context of its own.
    runner = next(r for r in ll._runners.values() if r.adapters)
    served = [m for k, m in runner._models.items() if k is not None]
    assert served and all(m.lora and m.base is runner._models[None] and m.model == m.base.model for m in served)


def test_an_adapter_llamacpp_cannot_apply_is_served_merged(engines, tmp_path):
    """DoRA (which the torch backend's mixed batches cannot serve either): merged, the merged model's answers."""
    from tunewise.train import export_merged

    _, ll = engines
    dora = _tiny_lora(tmp_path / "dora" / "final", seed=6, target_modules=["q_proj", "v_proj"], use_dora=True)
    merged = export_merged(dora, tmp_path / "merged")
    msgs = held_out(2)
    want = [ll.generate(ask(m, model=str(merged))).choices[0].text for m in msgs]
    assert [ll.generate(ask(m, model=str(dora))).choices[0].text for m in msgs] == want
    runner = next(r for r in ll._runners.values() if r.adapters)
    assert any(k is not None and m.base is None for k, m in runner._models.items())  # a merged model of its own


def _greedy_llama(gguf: Path, prompts: list[list[dict]], tokenizer, max_tokens: int,
                  lora: Path | None = None) -> list[list[int]]:
    """Greedy token ids from llama-cpp-python's own ``Llama`` on the GGUF file (with a LoRA adapter GGUF over it)."""
    from tunewise.infer.llamacpp import open_llama

    llm = open_llama(gguf, n_ctx=2048, n_threads=1, **({"lora_path": str(lora)} if lora else {}))
    out = []
    for p in prompts:
        ids = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
        got = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token == tokenizer.eos_token_id or len(got) >= max_tokens:
                break
            got.append(int(token))
        out.append(got)
    llm.close()
    return out


def _greedy_hf(model_dir: Path, prompts, tokenizer, max_tokens: int) -> list[list[int]]:
    model = models.load_model(str(model_dir)).eval()
    out = []
    for p in prompts:
        ids = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        seq = gen[0, len(ids):].tolist()
        out.append([t for t in seq if t != tokenizer.eos_token_id][:max_tokens])
    return out


def _same(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_export_gguf_loads_in_llamacpp_with_the_merged_models_answers(capsys, adapter, tmp_path):
    """f32 is exactly the merged weights: identical greedy answers. f16 and q8_0 round them; on the tiny model's
    random weights the top two logits are often nearly tied, so a rounding flips an answer now and then (the
    default model's figures are in the slow test below and in docs/export.md)."""
    from tunewise.train import export_merged

    tokenizer = models.load_tokenizer(TINY)
    prompts = held_out(10)
    merged = export_merged(adapter, tmp_path / "merged")
    reference = _greedy_hf(merged, prompts, tokenizer, 24)

    code, out, err = run_cli(capsys, "export", str(adapter.parent), str(tmp_path / "f16"), "--format", "gguf")
    assert code == 0, err
    gguf = tmp_path / "f16" / "model-f16.gguf"
    assert out.split() == [str(gguf), str(tmp_path / "f16" / "Modelfile")]
    assert _same(_greedy_llama(gguf, prompts, tokenizer, 24), reference) >= 0.9

    sizes = {}
    for quant, at_least in (("f32", 1.0), ("q8_0", 0.9)):
        code, out, err = run_cli(capsys, "export", str(adapter), str(tmp_path / quant), "--format", "gguf",
                                 "--quant", quant)
        assert code == 0, err
        path = tmp_path / quant / f"model-{quant}.gguf"
        sizes[quant] = path.stat().st_size
        assert _same(_greedy_llama(path, prompts, tokenizer, 24), reference) >= at_least, quant
    assert sizes["q8_0"] < gguf.stat().st_size < sizes["f32"]

    import gguf as gguf_lib

    fields = gguf_lib.GGUFReader(gguf).fields
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id

    modelfile = (tmp_path / "f16" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile and "<|im_start|>assistant" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile  # the template's default


def test_export_errors_are_clear(capsys, adapter, tmp_path):
    code, _, err = run_cli(capsys, "export", str(adapter), str(tmp_path / "x"), "--quant", "q8_0")
    assert code == 2 and "--quant applies to --format gguf and gguf-lora only" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "export", str(tmp_path / "empty"), str(tmp_path / "y"), "--format", "gguf")
    assert code != 0 and "neither a LoRA adapter nor a model directory" in err and "Traceback" not in err


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_export_gguf_lora_over_the_base_gives_the_merged_models_answers(capsys, tmp_path):
    """The adapter alone, in llama.cpp's LoRA format, applied by llama.cpp over the base model's GGUF: in f32 it
    gives exactly the merged GGUF's greedy answers (the q/k permutation of lora_b and the alpha / r scaling are
    right, or they would not); f16 rounds base and adapter apart, so a near-tie of the tiny model's random weights
    may flip. rsLoRA's scaling is carried by the alpha it writes."""
    import gguf as gguf_lib

    from tunewise.train import export_merged
    from tunewise.train.gguf import convert_to_gguf

    tokenizer = models.load_tokenizer(TINY)
    prompts = held_out(10)
    run = _tiny_lora(tmp_path / "run" / "final", seed=4, target_modules=ALL_LINEAR)
    reference = _greedy_hf(export_merged(run, tmp_path / "merged"), prompts, tokenizer, 20)

    code, out, err = run_cli(capsys, "export", str(run.parent), str(tmp_path / "f32"), "--format", "gguf-lora",
                             "--quant", "f32")
    assert code == 0, err
    adapter, base, modelfile = (tmp_path / "f32" / n for n in ("adapter-f32.gguf", "base-f32.gguf", "Modelfile"))
    assert out.split() == [str(adapter), str(base), str(modelfile)]
    merged_gguf = convert_to_gguf(tmp_path / "merged", tmp_path / "merged-f32.gguf", "f32")
    answers = _greedy_llama(base, prompts, tokenizer, 20, lora=adapter)
    assert answers == _greedy_llama(merged_gguf, prompts, tokenizer, 20)  # the same function, to the last token
    assert _same(answers, reference) >= 0.9  # llama.cpp's float32 against torch's: a near-tie may flip
    assert _same(_greedy_llama(base, prompts[:3], tokenizer, 20), answers[:3]) == 0  # the adapter changes them

    reader = gguf_lib.GGUFReader(adapter)
    fields = reader.fields
    assert fields["general.type"].contents() == "adapter" and fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == 8.0
    shapes = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}
    assert len(shapes) == 2 * 7 * 2  # lora_a and lora_b of seven projections in two layers
    assert shapes["blk.0.attn_q.weight.lora_a"] == ((64, 4), "F32")  # ggml order: (in, r), PEFT's A is r x in
    assert shapes["blk.0.attn_k.weight.lora_b"] == ((4, 32), "F32")  # (r, out): two kv heads of 16
    assert shapes["blk.1.ffn_down.weight.lora_a"] == ((128, 4), "F32")
    text = modelfile.read_text()
    assert text.startswith("FROM ./base-f32.gguf\nADAPTER ./adapter-f32.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text

    code, out, err = run_cli(capsys, "export", str(run), str(tmp_path / "f16"), "--format", "gguf-lora")
    assert code == 0, err
    f16 = tmp_path / "f16"
    assert (f16 / "adapter-f16.gguf").stat().st_size < 0.6 * adapter.stat().st_size
    f16_answers = _greedy_llama(f16 / "base-f16.gguf", prompts, tokenizer, 20, lora=f16 / "adapter-f16.gguf")
    # f16 rounds the base and the adapter apart (a merged f16 GGUF, their sum): a near-tie of random weights may flip.
    assert _same(f16_answers, reference) >= 0.9

    rs = _tiny_lora(tmp_path / "rs" / "final", seed=5, target_modules=["q_proj", "v_proj"], use_rslora=True)
    code, _, err = run_cli(capsys, "export", str(rs), str(tmp_path / "rs-out"), "--format", "gguf-lora",
                           "--quant", "f32")
    assert code == 0, err
    assert gguf_lib.GGUFReader(tmp_path / "rs-out" / "adapter-f32.gguf").fields["adapter.lora.alpha"].contents() \
        == pytest.approx(16.0)  # alpha * sqrt(r): llama.cpp's alpha / r is then rsLoRA's alpha / sqrt(r)
    rs_merged = convert_to_gguf(export_merged(rs, tmp_path / "rs-merged"), tmp_path / "rs-merged.gguf", "f32")
    assert _greedy_llama(base, prompts[:4], tokenizer, 20, lora=tmp_path / "rs-out" / "adapter-f32.gguf") == \
        _greedy_llama(rs_merged, prompts[:4], tokenizer, 20)


def test_export_gguf_lora_refuses_what_llamacpp_cannot_apply(capsys, tmp_path):
    from tunewise.train import export_merged

    def export(run: Path, *extra: str) -> str:
        code, _, err = run_cli(capsys, "export", str(run), str(tmp_path / "out"), "--format", "gguf-lora", *extra)
        assert code != 0 and "Traceback" not in err
        return err

    plain = _tiny_lora(tmp_path / "plain" / "final", seed=1, target_modules=["q_proj"])
    assert "f32 or f16, not 'q8_0'" in export(plain, "--quant", "q8_0")
    full = export_merged(plain, tmp_path / "full")
    assert "is a full fine-tune" in export(full) and "--format gguf" in export(full)
    dora = _tiny_lora(tmp_path / "dora" / "final", seed=1, target_modules=["q_proj"], use_dora=True)
    assert "DoRA" in export(dora)
    embed = _tiny_lora(tmp_path / "embed" / "final", seed=1, target_modules=["q_proj", "embed_tokens"])
    err = export(embed)
    assert "embed_tokens" in err and "embedding adapters" in err
    head = _tiny_lora(tmp_path / "head" / "final", seed=1, target_modules=["q_proj", "lm_head"])
    assert "adapts lm_head" in export(head) and "tied" in export(head)
    saved = _tiny_lora(tmp_path / "saved" / "final", seed=1, target_modules=["q_proj"], modules_to_save=["lm_head"])
    assert "trains whole modules" in export(saved)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.gguf"))


@pytest.mark.slow
def test_default_model_llamacpp_matches_torch_and_quantized_exports(tmp_path):
    """The default model: the llama.cpp backend on the f32 GGUF (the exact float path) gives torch's float32
    answers on held-out receipts, and its q8_0 / q4_k_m GGUF exports are at least 95% identical."""
    from tunewise.train.gguf import convert_to_gguf

    name = models.DEFAULT_MODEL
    prompts = held_out(20)
    with Engine(backend="torch", num_threads=1) as t, Engine(backend="llamacpp", gguf_quant="f32", num_threads=1) as ll:
        want = [t.generate(ask(p, model=name, max_tokens=48)).choices[0].text for p in prompts]
        got = [ll.generate(ask(p, model=name, max_tokens=48)).choices[0].text for p in prompts]
    assert got == want
    tokenizer = models.load_tokenizer(name)
    reference = _greedy_hf(models.local_dir(name), prompts, tokenizer, 48)
    for quant in ("q8_0", "q4_k_m"):
        path = convert_to_gguf(models.local_dir(name), tmp_path / f"{quant}.gguf", quant)
        assert _same(_greedy_llama(path, prompts, tokenizer, 48), reference) >= 0.95, quant


@pytest.mark.slow
def test_default_model_lora_adapter_gguf_gives_the_merged_models_answers(capsys, tmp_path):
    """The default model: its Modelfile's FROM is the GGUF the model came from (no base copy is written), and the
    f32 adapter over the f32 base gives the merged f32 GGUF's greedy answers on held-out receipts."""
    import gguf as gguf_lib
    from peft import LoraConfig, get_peft_model

    from tunewise.infer.llamacpp import gguf_for
    from tunewise.train import export_merged
    from tunewise.train.gguf import base_gguf, convert_to_gguf

    name = models.DEFAULT_MODEL
    torch.manual_seed(0)
    model = get_peft_model(models.load_model(name), LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR,
                                                               task_type="CAUSAL_LM"))
    with torch.no_grad():
        for key, param in model.named_parameters():
            if "lora_B" in key:
                param.copy_(torch.randn(param.shape) * 0.02)
    run = tmp_path / "run" / "final"
    model.save_pretrained(run)
    models.load_tokenizer(name).save_pretrained(run)
    (run / "tunewise_model.json").write_text(json.dumps({"base_model": name, "method": "lora"}))

    code, out, err = run_cli(capsys, "export", str(run), str(tmp_path / "out"), "--format", "gguf-lora", "--quant",
                             "f32")
    assert code == 0, err
    source = base_gguf(models.local_dir(name))
    adapter = tmp_path / "out" / "adapter-f32.gguf"
    assert out.split() == [str(adapter), str(source), str(tmp_path / "out" / "Modelfile")]
    assert (tmp_path / "out" / "Modelfile").read_text().startswith(f"FROM {source}\nADAPTER ./adapter-f32.gguf\n")
    assert not list((tmp_path / "out").glob("base-*.gguf"))
    assert len(gguf_lib.GGUFReader(adapter).tensors) == 30 * 7 * 2

    tokenizer = models.load_tokenizer(name)
    prompts = held_out(20)
    merged = convert_to_gguf(export_merged(run, tmp_path / "merged"), tmp_path / "merged-f32.gguf", "f32")
    base = gguf_for(models.local_dir(name), "f32")
    assert _greedy_llama(base, prompts, tokenizer, 48, lora=adapter) == _greedy_llama(merged, prompts, tokenizer, 48)

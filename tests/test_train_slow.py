"""The real default model learns the receipts task: held-out answers become valid JSON (slow: minutes on CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from test_train import write_jsonl
from tunewise import models
from tunewise.train import Renderer, TrainConfig, train


def answers(model, tokenizer, examples) -> list[str]:
    """Greedy answers, prompted exactly as the server prompts: the template with the generation prompt."""
    renderer = Renderer(tokenizer)
    out = []
    model.eval()
    for ex in examples:
        ids = torch.tensor([renderer.prompt_ids(ex["messages"][:-1])])
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=120, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def valid(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("items"), list)


@pytest.mark.slow
def test_default_model_learns_json_answers(tmp_path):
    from peft import PeftModel

    train_file = write_jsonl(tmp_path / "train.jsonl", 60, seed=11)
    held_out = [json.loads(x) for x in write_jsonl(tmp_path / "test.jsonl", 8, seed=12).read_text().splitlines()]
    tokenizer = models.load_tokenizer(models.DEFAULT_MODEL)
    base = models.load_model(models.DEFAULT_MODEL)
    before = sum(valid(a) for a in answers(base, tokenizer, held_out))

    result = train(TrainConfig(training_file=train_file, model=models.DEFAULT_MODEL, n_epochs=2, batch_size=4,
                               seed=0, output_dir=tmp_path / "run", num_threads=1))
    losses = [float(r.split(",")[1]) for r in result.metrics_csv.read_text().splitlines()[1:]]
    assert sum(losses[-5:]) < sum(losses[:5])
    tuned = PeftModel.from_pretrained(models.load_model(models.DEFAULT_MODEL), result.model_dir)
    after = answers(tuned, tokenizer, held_out)
    n_valid = sum(valid(a) for a in after)
    print(f"held-out valid JSON: before {before}/8, after {n_valid}/8")
    assert n_valid >= 7 and n_valid >= before, after

"""The model registry: names, local directories, clear errors, and the GGUF conversion cache."""

from __future__ import annotations

import json

import pytest

from tunewise import models
from tunewise.errors import ModelNotFound


def test_registry_names_resolve():
    spec = models.resolve(models.DEFAULT_MODEL)
    assert spec.source.startswith("gguf:")
    assert spec.context_length == 8192


def test_unknown_model_says_what_is_known():
    with pytest.raises(ModelNotFound) as err:
        models.resolve("no-such-model")
    assert models.DEFAULT_MODEL in str(err.value)


def test_path_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFound, match="config.json"):
        models.resolve(tmp_path)


def test_default_model_converts_once_without_quantization_config():
    path = models.local_dir(models.DEFAULT_MODEL)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert (path / "model.safetensors").is_file()
    assert models.local_dir(models.DEFAULT_MODEL) == path  # cached, not converted again


def test_tiny_model_has_real_tokenizer_and_template():
    tokenizer = models.load_tokenizer(models.TINY_MODEL)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    model = models.load_model(models.TINY_MODEL)
    assert model.config.num_hidden_layers == 2
    # A local directory loads as any HF model does.
    spec = models.resolve(models.local_dir(models.TINY_MODEL))
    assert spec.source.startswith("dir:")

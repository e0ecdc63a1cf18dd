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


@pytest.mark.slow  # about 33 s: several processes racing to build the tiny model in a fresh cache
def test_a_fresh_cache_builds_the_tiny_model_once_across_processes(tmp_path):
    # On a new machine the tiny model (which needs the default model's tokenizer, so converts it first) may be
    # asked for by several processes at once: a server, its worker, a test. Each must get the same complete
    # directory, none may deadlock or see a half-written one.
    import os
    import subprocess
    import sys

    # tqdm imported first, as in any program that already drew a bar: building must still print nothing.
    code = ("import tqdm.auto, transformers.modeling_gguf_pytorch_utils\n"
            "from tunewise import models; print(models.local_dir(models.TINY_MODEL))")
    env = {**os.environ, "TUNEWISE_MODEL_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [err for _, err in outs] == ["", ""]  # the library never prints: no progress bars either
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert paths == {str(tmp_path / models.TINY_MODEL)}
    assert (tmp_path / models.DEFAULT_MODEL / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temp dirs left

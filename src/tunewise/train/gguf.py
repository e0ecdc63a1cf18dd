"""Hugging Face model directory -> GGUF (llama.cpp's format), and the Ollama ``Modelfile`` that goes with it.

```python
from tunewise.train.gguf import convert_to_gguf, write_modelfile
convert_to_gguf("runs/x/merged", "model.gguf", quant="q8_0")    # f32 | f16 | q8_0 | q4_k_m
write_modelfile("model.gguf", "Modelfile", tokenizer)
```

The tensors are written with ``gguf``'s own tensor-name map for the architecture; Llama's query and key projections
are permuted back to the interleaved rotary layout that llama.cpp expects (the same permutation as llama.cpp's
``convert_hf_to_gguf.py``). The tokenizer is not rebuilt: where the model (or the base model it was fine-tuned
from) came from a GGUF file, that file's ``tokenizer.*`` metadata is copied, so llama.cpp tokenizes exactly as
before; the chat template and special token ids are the HF tokenizer's. ``q8_0`` and ``q4_k_m`` are made by
llama.cpp's own quantizer (``llama_model_quantize``) from a float32 GGUF.

A LoRA adapter can also be written on its own, in llama.cpp's adapter format (what its ``convert_lora_to_gguf.py``
writes, and what ``llama-cli --lora``, ``Llama(lora_path=...)`` and Ollama's ``ADAPTER`` load over the base GGUF):

```python
convert_lora_to_gguf("runs/x/final", "adapter-f16.gguf", quant="f16")   # f32 | f16
```

``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha``, and per adapted weight the tensors
``<base tensor name>.lora_a`` (PEFT's ``lora_A``, ``r x in``) and ``.lora_b`` (``lora_B``, ``out x r``). llama.cpp
scales the update by ``alpha / r`` with ``r`` read from each ``lora_b``, which is PEFT's scaling; rsLoRA's
``alpha / sqrt(r)`` is written as ``alpha * sqrt(r)``. The rotary permutation of the query and key projections acts
on their output rows, so it is applied to ``lora_b`` alone, as to the base weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tunewise.errors import ModelNotFound, UsageError

QUANTS = ("f32", "f16", "q8_0", "q4_k_m")
"""Quantization levels ``convert_to_gguf`` writes."""

LORA_QUANTS = ("f32", "f16")
"""Levels ``convert_lora_to_gguf`` writes (an adapter is small; the base model's GGUF carries the quantization)."""

# llama.cpp's ftype numbers (enum llama_ftype in llama.h) for the levels its quantizer makes.
_LLAMA_FTYPE = {"q8_0": 7, "q4_k_m": 15}

_ARCHS = {"LlamaForCausalLM": "LLAMA"}
"""HF architectures the converter knows, with their gguf ``MODEL_ARCH``."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def source_gguf(model_dir: str | os.PathLike) -> Path | None:
    """The GGUF file a model directory (or the base model it was fine-tuned or built from) was converted from."""
    from tunewise import models

    seen: set[str] = set()
    path = Path(model_dir)
    for _ in range(8):
        meta = _read_json(path / "tunewise_model.json")
        if meta.get("gguf") and Path(meta["gguf"]).is_file():
            return Path(meta["gguf"])
        nxt = meta.get("base_model")
        if not nxt and str(meta.get("source", "")).startswith("tiny:"):
            nxt = meta["source"].split(":", 1)[1]
        if not nxt or nxt in seen:
            return None
        seen.add(nxt)
        try:
            path = models.local_dir(nxt)
        except ModelNotFound:
            return None
    return None


def can_convert(model_dir: str | os.PathLike) -> str | None:
    """None when ``convert_to_gguf`` can convert this directory, else the reason it cannot."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    archs = config.get("architectures") or []
    if not archs or archs[0] not in _ARCHS:
        return (f"its architecture {archs[0] if archs else '(none)'} is not one the GGUF converter knows "
                f"({', '.join(_ARCHS)})")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        return f"its rope scaling ({rope.get('rope_type') or rope.get('type')}) is not supported by the converter"
    if source_gguf(model_dir) is None:
        return "neither it nor its base model came from a GGUF file whose tokenizer could be copied"
    return None


def _permute(weights, n_head: int, n_head_kv: int | None):
    """HF's rotary layout (halves) -> llama.cpp's (interleaved pairs): ``convert_hf_to_gguf``'s permutation."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tokenizer_fields(source: Path) -> list[tuple[str, Any, int, int | None]]:
    """The ``tokenizer.*`` metadata of a GGUF file as (key, value, type, array item type), cached as JSON next to
    the converted models (parsing 100k token strings with ``GGUFReader`` takes seconds; the JSON, milliseconds)."""
    import gguf

    from tunewise import models

    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    if key in _TOKENIZER_CACHE:
        return _TOKENIZER_CACHE[key]
    cached = models.cache_dir() / "gguf" / f"tokenizer-{key}.json"
    try:
        fields = [tuple(f) for f in json.loads(cached.read_text())]
    except (OSError, ValueError):
        reader = gguf.GGUFReader(source)
        fields = []
        for field in reader.fields.values():
            if field.name.startswith("tokenizer."):
                types = field.types
                sub = int(types[-1]) if types[0] == gguf.GGUFValueType.ARRAY else None
                value = field.contents()
                if hasattr(value, "item"):
                    value = value.item()
                fields.append((field.name, value, int(types[0]), sub))
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(fields))
        tmp.replace(cached)
    _TOKENIZER_CACHE[key] = fields
    return fields


_TOKENIZER_CACHE: dict[str, list] = {}


def _write_float_gguf(model_dir: Path, out: Path, quant: str, name: str | None) -> None:
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    config = _read_json(model_dir / "config.json")
    arch = getattr(gguf.MODEL_ARCH, _ARCHS[config["architectures"][0]])
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    rope = config.get("rope_parameters") or {}
    rope_theta = float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    tied = bool(config.get("tie_word_embeddings", False))

    tokenizer_src = source_gguf(model_dir)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    writer = gguf.GGUFWriter(out, arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or model_dir.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    # The HF directory's own chat template and special ids win over the source's (a fine-tune may change them).
    own: dict[str, tuple[Any, Any]] = {}
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    template = tok_config.get("chat_template")
    if not template and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text()
    if isinstance(template, str) and template:
        own["tokenizer.chat_template"] = (template, gguf.GGUFValueType.STRING)
    for key, hf_key in (("tokenizer.ggml.bos_token_id", "bos_token_id"),
                        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
                        ("tokenizer.ggml.padding_token_id", "pad_token_id")):
        value = config.get(hf_key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            own[key] = (value, gguf.GGUFValueType.UINT32)
    for key, value, vtype, sub in _tokenizer_fields(tokenizer_src):
        if key not in own:
            writer.add_key_value(key, value, gguf.GGUFValueType(vtype),
                                 sub_type=gguf.GGUFValueType(sub) if sub is not None else None)
    for key, (value, vtype) in own.items():
        writer.add_key_value(key, value, vtype)

    names = gguf.get_tensor_name_map(arch, n_layers)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelNotFound(f"{model_dir} has no .safetensors weights to convert.",
                            hint="Save the model with save_pretrained(safe_serialization=True).")
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                if tied and key == "lm_head.weight":
                    continue  # llama.cpp reuses token_embd for a tied output
                tensor = f.get_tensor(key).to(torch.float32)
                if key.endswith("q_proj.weight"):
                    tensor = _permute(tensor, n_head, n_head)
                elif key.endswith("k_proj.weight"):
                    tensor = _permute(tensor, n_head, n_head_kv)
                new_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise UsageError(f"{file}: the tensor {key} has no GGUF name for {arch_name}.",
                                     hint="Only plain causal language models convert to GGUF.")
                data = tensor.numpy()
                if quant == "f16" and data.ndim >= 2:
                    data = data.astype(np.float16)
                writer.add_tensor(new_name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_quantize(src: str | os.PathLike, out: str | os.PathLike, quant: str, threads: int = 1) -> None:
    """Quantize a float GGUF with llama.cpp's own quantizer (``llama_model_quantize``)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise UsageError(f"Quantizing to {quant} needs llama.cpp's quantizer, and llama-cpp-python is not "
                         "installed.", hint="pip install 'tunewise[llamacpp]' (or use --quant f16 / f32).",
                         param="quant") from exc
    _quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _LLAMA_FTYPE[quant]
    params.nthread = max(1, int(threads))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0:
        raise UsageError(f"llama.cpp could not quantize {src} to {quant} (error {rc}).", param="quant")


_quiet = False


def _quiet_llama_cpp() -> None:
    """The library never prints: llama.cpp logs to stderr unless a log callback takes its messages."""
    global _quiet
    if _quiet:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _drop(level, text, user_data):  # pragma: no cover - called from C
        return None

    globals()["_log_callback"] = _drop  # kept alive: llama.cpp holds the pointer
    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))
    _quiet = True


def convert_to_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, quant: str = "f16", *,
                    name: str | None = None, threads: int = 1) -> Path:
    """Write ``model_dir`` (a plain HF causal LM directory) as one GGUF file at ``out``; returns ``out``."""
    model_dir, out = Path(model_dir), Path(out)
    if quant not in QUANTS:
        raise UsageError(f"Unknown GGUF quantization {quant!r}.", hint=f"Use one of: {', '.join(QUANTS)}.",
                         param="quant")
    reason = can_convert(model_dir)
    if reason:
        raise UsageError(f"{model_dir} cannot be converted to GGUF: {reason}.",
                         hint="Llama-architecture models from the tunewise registry (and their fine-tunes) "
                         "convert; export others with --format hf.", param="model")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if quant in ("f32", "f16"):
            _write_float_gguf(model_dir, tmp, quant, name)
        else:
            fd2, float_name = tempfile.mkstemp(prefix=f".{out.name}-f32-", suffix=".gguf", dir=out.parent)
            os.close(fd2)
            try:
                _write_float_gguf(model_dir, Path(float_name), "f32", name)
                llama_quantize(float_name, tmp, quant, threads)
            finally:
                Path(float_name).unlink(missing_ok=True)
        tmp.chmod(0o644)  # mkstemp's 0600 is not what an exported file should have
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ---- LoRA adapters (llama.cpp's adapter GGUF) -----------------------------------------------------------------

_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def _lora_refusal(config: dict[str, Any]) -> str | None:
    """Why a PEFT adapter config cannot be written as a llama.cpp LoRA adapter (None when it can)."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        return f"it is a {config.get('peft_type')} adapter, not LoRA"
    if config.get("use_dora"):
        return "it is a DoRA adapter (llama.cpp's adapters have no magnitude vector)"
    if config.get("modules_to_save"):
        return (f"it trains whole modules besides the LoRA matrices ({', '.join(config['modules_to_save'])}), "
                "which an adapter GGUF cannot carry")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        return "it trains biases, which an adapter GGUF cannot carry"
    if config.get("alpha_pattern"):
        return "it has per-module alphas (alpha_pattern), and an adapter GGUF has one alpha"
    if config.get("use_rslora") and config.get("rank_pattern"):
        return "it is rsLoRA with per-module ranks (rank_pattern), which one alpha cannot scale"
    if config.get("fan_in_fan_out"):
        return "its weights are stored transposed (fan_in_fan_out), for models llama.cpp's Llama is not"
    if config.get("alora_invocation_tokens") or config.get("trainable_token_indices") or \
            config.get("target_parameters"):
        return "it uses PEFT features (aLoRA, trainable tokens or target_parameters) the converter does not write"
    return None


def _lora_alpha(config: dict[str, Any]) -> float:
    """The ``adapter.lora.alpha`` that makes llama.cpp's ``alpha / r`` equal PEFT's scaling."""
    alpha, r = float(config.get("lora_alpha", 8)), int(config.get("r", 8))
    return alpha * r ** 0.5 if config.get("use_rslora") else alpha


def adapter_base_dir(adapter_dir: str | os.PathLike) -> Path:
    """The base model directory of a LoRA adapter written by tunewise (``base_model`` in its metadata)."""
    from tunewise import models

    adapter_dir = Path(adapter_dir)
    meta = _read_json(adapter_dir / "tunewise_model.json")
    base = meta.get("base_model") or _read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{adapter_dir} does not say which base model it adapts (base_model in "
                         "tunewise_model.json).", hint="Pass OUTPUT/final of a LoRA run.", param="run")
    return models.local_dir(base)


def convert_lora_to_gguf(adapter_dir: str | os.PathLike, out: str | os.PathLike, quant: str = "f16", *,
                         base_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Write a PEFT LoRA adapter as llama.cpp's LoRA adapter GGUF at ``out`` (for the GGUF of ``base_dir``, by
    default the adapter's own base model); returns ``out``."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    adapter_dir, out = Path(adapter_dir), Path(out)
    if quant not in LORA_QUANTS:
        raise UsageError(f"A LoRA adapter GGUF is written as {' or '.join(LORA_QUANTS)}, not {quant!r}.",
                         hint="Quantize the base model instead (tunewise export BASE OUT --format gguf --quant "
                         "q8_0) and use the f16 adapter over it.", param="quant")
    config = _read_json(adapter_dir / "adapter_config.json")
    if not config:
        raise UsageError(f"{adapter_dir} is not a LoRA adapter (no adapter_config.json).",
                         hint="A full fine-tune has no adapter: use --format gguf.", param="run")
    reason = _lora_refusal(config)
    if reason:
        raise UsageError(f"{adapter_dir} cannot be written as a llama.cpp LoRA adapter: {reason}.",
                         hint="Use --format gguf, which merges the adapter into its base model first.", param="run")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise UsageError(f"{adapter_dir} has no adapter_model.safetensors.",
                         hint="Save the adapter with save_pretrained(safe_serialization=True).", param="run")
    base_dir = Path(base_dir) if base_dir is not None else adapter_base_dir(adapter_dir)
    base = _read_json(base_dir / "config.json")
    archs = base.get("architectures") or []
    if not archs or archs[0] not in _ARCHS:
        raise UsageError(f"{adapter_dir} adapts a {archs[0] if archs else 'model of no known architecture'}, "
                         f"which the GGUF converter does not know ({', '.join(_ARCHS)}).",
                         hint="Export it with --format hf.", param="run")
    arch = getattr(gguf.MODEL_ARCH, _ARCHS[archs[0]])
    n_head = int(base["num_attention_heads"])
    n_head_kv = int(base.get("num_key_value_heads") or n_head)
    tied = bool(base.get("tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(arch, int(base["num_hidden_layers"]))

    pairs: dict[str, dict[str, Any]] = {}
    with safe_open(weights, framework="pt") as f:
        for key in f.keys():
            suffix = next((x for x in _LORA_SUFFIXES if key.endswith(x)), None)
            if suffix is None and key.endswith(".base_layer.weight"):
                continue  # PEFT's copy of an adapted embedding's frozen weight (the base GGUF has it); as llama.cpp
            if suffix is None:
                raise UsageError(f"{weights}: the tensor {key} is not a LoRA matrix of a linear layer "
                                 "(embedding adapters and extra trained tensors have no llama.cpp adapter form).",
                                 hint="Use --format gguf, which merges the adapter into its base model first.",
                                 param="run")
            module = key[:-len(suffix)].removeprefix("base_model.model.")
            pairs.setdefault(module, {})["a" if suffix == ".lora_A.weight" else "b"] = f.get_tensor(key)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".gguf", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, _lora_alpha(config))
        writer.add_name(name or adapter_dir.name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if quant == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        for module in sorted(pairs):
            ab = pairs[module]
            if set(ab) != {"a", "b"}:
                raise UsageError(f"{weights}: {module} has only one of its two LoRA matrices.", param="run")
            target = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None or (tied and module == "lm_head"):
                why = "the output projection is the token embedding (tied), which llama.cpp adapts as one" \
                    if target else f"it has no GGUF tensor name for {gguf.MODEL_ARCH_NAMES[arch]}"
                raise UsageError(f"{adapter_dir} adapts {module}, and {why}.",
                                 hint="Train without it in lora_target_modules, or use --format gguf (merged).",
                                 param="run")
            a, b = ab["a"].to(torch.float32), ab["b"].to(torch.float32)
            if module.endswith("q_proj"):
                b = _permute(b, n_head, n_head)
            elif module.endswith("k_proj"):
                b = _permute(b, n_head, n_head_kv)
            for suffix, tensor in ((".lora_a", a), (".lora_b", b)):
                data = tensor.numpy()
                if quant == "f16":
                    data = data.astype(np.float16)
                writer.add_tensor(target + suffix, np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def base_gguf(base_dir: str | os.PathLike) -> Path | None:
    """The GGUF file a base model directory was converted from (its exact weights), if it came from one."""
    meta = _read_json(Path(base_dir) / "tunewise_model.json")
    path = meta.get("gguf")
    return Path(path) if path and Path(path).is_file() else None


# ---- Ollama ---------------------------------------------------------------------------------------------------

_CHATML = (
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n'
    '{{ .Content }}<|im_end|>\n'
    '{{ end }}<|im_start|>assistant\n'
)


def _default_system(tokenizer) -> str | None:
    """The system message the chat template adds when a conversation has none (SmolLM2 has one), found by
    rendering a conversation without one."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                             add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that refuses this probe has no default to find
        return None
    start = "<|im_start|>system\n"
    if text.startswith(start):
        return text[len(start):text.index("<|im_end|>")]
    return None


def modelfile_text(gguf_name: str, tokenizer, *, adapter: str | None = None) -> str:
    """An Ollama ``Modelfile`` for a GGUF whose chat template is ChatML (``<|im_start|>`` / ``<|im_end|>``).

    ``gguf_name`` is a file beside the Modelfile (``FROM ./NAME``) or an absolute path (``FROM PATH``);
    ``adapter``, a LoRA adapter GGUF beside the Modelfile that Ollama applies over it (``ADAPTER ./NAME``)."""
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template or "<|im_end|>" not in template:
        raise UsageError("The model's chat template is not ChatML (<|im_start|> ... <|im_end|>), the one "
                         "template the Modelfile writer knows.", hint="Write the Modelfile's TEMPLATE by hand "
                         "(https://github.com/ollama/ollama/blob/main/docs/modelfile.md).")
    lines = [f"FROM {gguf_name if Path(gguf_name).is_absolute() else './' + gguf_name}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    lines += ["", f'TEMPLATE """{_CHATML}"""', ""]
    system = _default_system(tokenizer)
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    stops = ["<|im_end|>"]
    eos = tokenizer.eos_token
    if isinstance(eos, str) and eos not in stops:
        stops.append(eos)
    if "<|im_start|>" not in stops:
        stops.append("<|im_start|>")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: str | os.PathLike, out: str | os.PathLike, tokenizer, *,
                    adapter: str | os.PathLike | None = None) -> Path:
    """``FROM`` names ``gguf_path`` by its file name when it lies beside ``out``, else by its absolute path."""
    out, gguf_path = Path(out), Path(gguf_path)
    beside = gguf_path.resolve().parent == out.resolve().parent
    out.write_text(modelfile_text(gguf_path.name if beside else str(gguf_path.resolve()), tokenizer,
                                  adapter=Path(adapter).name if adapter else None))
    return out


# ---- tunewise export --format gguf ----------------------------------------------------------------------------

def _resolve_run(run: Path) -> Path:
    """A run's model directory: the directory itself, or its ``final`` (a run's OUTPUT directory)."""
    if not (run / "tunewise_model.json").is_file() and (run / "final" / "tunewise_model.json").is_file():
        return run / "final"
    return run


def export_gguf(run: str | os.PathLike, out_dir: str | os.PathLike, quant: str = "f16", *,
                threads: int = 1) -> dict[str, Path]:
    """Write a fine-tuned model (a LoRA adapter, merged first, or a full model directory) as ``OUT/model-QUANT.gguf``
    plus an Ollama ``OUT/Modelfile``; returns their paths (``gguf``, ``modelfile``)."""
    from tunewise import models

    if quant not in QUANTS:
        raise UsageError(f"Unknown GGUF quantization {quant!r}.", hint=f"Use one of: {', '.join(QUANTS)}.",
                         param="quant")
    run = _resolve_run(Path(run))
    out_dir = Path(out_dir).expanduser().resolve()
    is_adapter = (run / "adapter_config.json").is_file()
    if not is_adapter and not (run / "config.json").is_file():
        raise UsageError(f"{run} is neither a LoRA adapter nor a model directory written by tunewise.",
                         hint="Pass OUTPUT/final of a run (or the run's OUTPUT directory).", param="run")
    out_dir.mkdir(parents=True, exist_ok=True)
    gguf_path = out_dir / f"model-{quant}.gguf"
    if is_adapter:
        from tunewise.train.trainer import export_merged

        with tempfile.TemporaryDirectory(prefix=".merged-", dir=out_dir) as tmp:
            merged = export_merged(run, Path(tmp) / "merged")
            convert_to_gguf(merged, gguf_path, quant, name=run.parent.name or run.name, threads=threads)
            tokenizer = models.load_tokenizer(merged)
    else:
        convert_to_gguf(run, gguf_path, quant, name=run.parent.name or run.name, threads=threads)
        tokenizer = models.load_run_tokenizer(run)
    modelfile = write_modelfile(gguf_path, out_dir / "Modelfile", tokenizer)
    return {"gguf": gguf_path, "modelfile": modelfile}


def export_gguf_lora(run: str | os.PathLike, out_dir: str | os.PathLike, quant: str = "f16", *,
                     threads: int = 1) -> dict[str, Path]:
    """Write a LoRA run's adapter as ``OUT/adapter-QUANT.gguf`` (llama.cpp's adapter format) plus an Ollama
    ``OUT/Modelfile`` whose ``FROM`` is the base model's GGUF; returns their paths (``adapter``, ``base``,
    ``modelfile``).

    The base is the GGUF file the base model came from where it came from one (the default model: the exact
    weights the adapter was trained over); otherwise it is converted and written beside the adapter as
    ``OUT/base-QUANT.gguf``."""
    from tunewise import models

    if quant not in LORA_QUANTS:
        raise UsageError(f"A LoRA adapter GGUF is written as {' or '.join(LORA_QUANTS)}, not {quant!r}.",
                         hint="Use --quant f16 (or f32); for a quantized model use --format gguf --quant "
                         f"{quant} (merged).", param="quant")
    run = _resolve_run(Path(run))
    if not (run / "adapter_config.json").is_file():
        if (run / "config.json").is_file():
            raise UsageError(f"{run} is a full fine-tune, not a LoRA adapter: there is no adapter to export.",
                             hint="Use --format gguf to write the whole model as one GGUF.", param="run")
        raise UsageError(f"{run} is neither a LoRA adapter nor a model directory written by tunewise.",
                         hint="Pass OUTPUT/final of a run (or the run's OUTPUT directory).", param="run")
    out_dir = Path(out_dir).expanduser().resolve()
    base_dir = adapter_base_dir(run)
    if (run / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run)  # the run's own chat template, as the merged export's
    else:
        tokenizer = models.load_tokenizer(base_dir)
    modelfile_text("base.gguf", tokenizer)  # refuses a non-ChatML template before any file is written
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run.parent.name or run.name
    adapter = convert_lora_to_gguf(run, out_dir / f"adapter-{quant}.gguf", quant, base_dir=base_dir, name=name)
    base = base_gguf(base_dir)
    if base is None:
        base = convert_to_gguf(base_dir, out_dir / f"base-{quant}.gguf", quant, name=base_dir.name, threads=threads)
    modelfile = write_modelfile(base, out_dir / "Modelfile", tokenizer, adapter=adapter)
    return {"adapter": adapter, "base": base, "modelfile": modelfile}

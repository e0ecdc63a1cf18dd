"""The engine: finds and loads models on demand (LRU), and hands each request to its model's scheduler.

``Engine.generate`` and ``Engine.stream`` may be called from many threads at once. Every request for a base model
(and for any LoRA adapter trained on it) goes to that base model's runner, whose single scheduler thread batches
them (``scheduler.py``). Two backends run the steps: llama.cpp (``llamacpp.py``) and torch (``runner.py``);
``backend="auto"`` picks llama.cpp for a model it can run on the CPU when ``llama_cpp`` imports, torch otherwise.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tunewise import models
from tunewise.errors import ModelNotFound, UsageError
from tunewise.infer.runner import _DONE, Job, ModelRunner
from tunewise.infer.scheduler import Runner
from tunewise.infer.types import Choice, EngineStats, GenerationRequest, GenerationResult, StreamDelta

BACKENDS = ("auto", "torch", "llamacpp")
"""``Engine(backend=...)`` and ``TUNEWISE_ENGINE_BACKEND``."""


class Stream:
    """The deltas of one request as they are decoded; iterate it, or ``close()`` it to stop generating.

    ``prompt_tokens``, ``completion_tokens`` and ``usage`` are final once iteration ends.
    """

    def __init__(self, job: Job, model: str) -> None:
        self._job = job
        self.model = model
        self._done = False

    @property
    def prompt_tokens(self) -> int:
        return self._job.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._job.completion_tokens

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    @property
    def finish_reasons(self) -> dict[int, str]:
        return dict(self._job.finish_reasons)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamDelta:
        if self._done:
            raise StopIteration
        event = self._job.events.get()
        if event is _DONE:
            self._done = True
            raise StopIteration
        if isinstance(event, BaseException):
            self._done = True
            raise event
        return event

    def close(self) -> None:
        """Stop generating (a client that went away): the rows leave the batch at the next step."""
        if not self._done:
            self._job.cancelled = True
            self._done = True

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class Engine:
    """Batched chat generation over any number of models, loaded on first use and kept in an LRU."""

    def __init__(self, max_batch_size: int = 8, device: str | None = None, dtype=None,
                 max_loaded_models: int = 4, num_threads: int | None = None, backend: str | None = None,
                 gguf_quant: str | None = None, prompt_lookup: int | None = None) -> None:
        """
        max_batch_size: most sequences (choices) one forward pass serves; more requests wait for a free row.
        device: torch device for the models (default: CUDA when available, else CPU).
        dtype: torch dtype for the models (default: float32 on CPU, bfloat16 on CUDA).
        max_loaded_models: base models and LoRA adapters kept loaded at once; the least recently used idle one
            is unloaded to make room (one in use is never unloaded, so the limit can be passed while all are busy).
        num_threads: torch intra-op threads, set process-wide (``torch.set_num_threads``); None leaves torch's
            choice. On a small CPU shared with other busy processes, 1 can be several times faster than more:
            threads that wait on each other at every small matrix product lose their turn to other processes.
            The llama.cpp backend uses the same number of threads (torch's count when None).
        backend: ``auto`` (llama.cpp for the models it can run on the CPU when llama-cpp-python is installed,
            else torch), ``torch`` or ``llamacpp``; None reads ``TUNEWISE_ENGINE_BACKEND`` (default ``auto``).
        gguf_quant: the GGUF the llama.cpp backend serves (``f16``, ``f32``, ``q8_0``, ``q4_k_m``); None reads
            ``TUNEWISE_ENGINE_GGUF_QUANT`` (default ``f16``).
        prompt_lookup: the most draft tokens a greedy request proposes per decode step by prompt lookup (n-gram
            speculation, llama.cpp backend; the answer is unchanged); 0 turns it off; None reads
            ``TUNEWISE_ENGINE_PROMPT_LOOKUP`` (default 3).
        """
        import os

        from tunewise.infer import llamacpp

        backend = backend or os.environ.get("TUNEWISE_ENGINE_BACKEND") or "auto"
        if backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}.", param="backend",
                             hint="Set TUNEWISE_ENGINE_BACKEND to auto, torch or llamacpp.")
        if backend == "llamacpp" and not llamacpp.available():
            raise UsageError("backend 'llamacpp' needs llama-cpp-python, which is not installed.",
                             hint="pip install 'tunewise[llamacpp]', or use backend auto or torch.",
                             param="backend")
        gguf_quant = gguf_quant or os.environ.get("TUNEWISE_ENGINE_GGUF_QUANT") or llamacpp.DEFAULT_GGUF_QUANT
        if gguf_quant not in llamacpp.GGUF_QUANTS:
            raise UsageError(f"gguf_quant must be one of {', '.join(llamacpp.GGUF_QUANTS)}, not {gguf_quant!r}.",
                             param="gguf_quant")
        if prompt_lookup is None:
            prompt_lookup = llamacpp.lookup_tokens()
        elif not isinstance(prompt_lookup, int) or isinstance(prompt_lookup, bool) or prompt_lookup < 0:
            raise UsageError(f"prompt_lookup must be a whole number of tokens (0: off), not {prompt_lookup!r}.",
                             param="prompt_lookup")
        self.backend = backend
        self.gguf_quant = gguf_quant
        self.prompt_lookup = prompt_lookup
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise UsageError(f"max_batch_size must be a positive integer, not {max_batch_size!r}.",
                             param="max_batch_size")
        if not isinstance(max_loaded_models, int) or max_loaded_models < 1:
            raise UsageError(f"max_loaded_models must be a positive integer, not {max_loaded_models!r}.",
                             param="max_loaded_models")
        if num_threads is not None:
            if not isinstance(num_threads, int) or num_threads < 1:
                raise UsageError(f"num_threads must be a positive integer, not {num_threads!r}.",
                                 param="num_threads")
            import torch

            torch.set_num_threads(num_threads)
        self.max_batch_size = max_batch_size
        self.device = device
        self.dtype = dtype
        self.max_loaded_models = max_loaded_models
        self.num_threads = num_threads
        self._runners: dict[str, Runner] = {}
        # LRU of what is loaded: ("base", runner key) or ("adapter", runner key, adapter name).
        self._lru: OrderedDict[tuple, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = EngineStats()
        self._stats_lock = threading.Lock()
        self._closed = False
        _open_engines.add(self)

    # ---- public API --------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run a request to completion (blocking); concurrent calls share forward passes."""
        stream = self.stream(request, coalesce=True)
        texts: dict[int, list[str]] = {i: [] for i in range(request.n)}
        reasons: dict[int, str] = {}
        with stream:
            for delta in stream:
                texts[delta.index].append(delta.text)
                if delta.finish_reason is not None:
                    reasons[delta.index] = delta.finish_reason
        choices = [Choice(i, "".join(texts[i]), reasons.get(i, "stop")) for i in range(request.n)]
        return GenerationResult(choices, stream.prompt_tokens, stream.completion_tokens, model=request.model)

    def stream(self, request: GenerationRequest, *, coalesce: bool = False) -> Stream:
        """Queue a request and return its ``Stream``. Bad requests raise here, before anything is generated.
        ``coalesce``: each choice's text comes as one delta when it finishes, not token by token (for a caller
        that waits for the whole answer: its thread is then not woken at every decode step)."""
        if self._closed:
            raise UsageError("This engine is closed.", hint="Create a new Engine.")
        request.check(self.max_batch_size)
        runner, adapter = self._runner_for(request.model)
        return Stream(runner.submit(request, adapter, coalesce=coalesce), request.model)

    def stats(self) -> EngineStats:
        """A snapshot of the batching counters."""
        with self._stats_lock:
            return copy.deepcopy(self._stats)

    def backend_for(self, model: str) -> str:
        """Which backend serves ``model`` (``torch`` or ``llamacpp``), without loading it."""
        base, _ = _locate(model)
        return self._pick(base, models.local_dir(base))[0]

    def loaded_models(self) -> list[str]:
        """What is loaded, least recently used first: runner keys, and ``KEY+ADAPTER_DIR`` for adapters."""
        with self._lock:
            out = []
            for entry in self._lru:
                runner = self._runners[entry[1]]
                out.append(entry[1] if entry[0] == "base" else f"{entry[1]}+{runner.adapters[entry[2]]}")
            return out

    def close(self) -> None:
        """Stop every scheduler and free the models; requests still running end with ``Cancelled``."""
        with self._lock:
            self._closed = True
            runners = list(self._runners.values())
            self._runners.clear()
            self._lru.clear()
        for runner in runners:
            runner.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- loading -----------------------------------------------------------------------------------------

    def _runner_for(self, model: str) -> tuple[Runner, str | None]:
        base, adapter_dir = _locate(model)
        key = str(models.local_dir(base).resolve())
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                self._make_room(1)
                runner = self._load(base, key)
                self._runners[key] = runner
            self._lru[("base", key)] = None
            self._lru.move_to_end(("base", key))
            adapter = None
            if adapter_dir is not None:
                adapter = "adapter_" + hashlib.sha1(str(adapter_dir).encode()).hexdigest()[:16]
                if adapter not in runner.adapters:
                    self._make_room(1, keep=key)
                    try:
                        runner.add_adapter(adapter, str(adapter_dir))
                    except (OSError, ValueError, KeyError, RuntimeError) as exc:
                        raise ModelNotFound(f"Could not load the LoRA adapter in {adapter_dir}: {exc}",
                                            hint="The directory must hold adapter_config.json and "
                                            "adapter_model.safetensors written by PEFT for its base model.",
                                            param="model") from exc
                self._lru[("adapter", key, adapter)] = None
                self._lru.move_to_end(("adapter", key, adapter))
            runner.reserve(adapter)  # in flight from now on: _make_room will not unload it
        return runner, adapter

    def _pick(self, base: str, model_dir: Path) -> tuple[str, str]:
        """(backend, why) for a base model."""
        from tunewise.infer import llamacpp
        from tunewise.train.gguf import can_convert

        if self.backend == "torch":
            return "torch", "asked for"
        why = None
        if not llamacpp.available():
            why = "llama-cpp-python is not installed"
        elif self.device not in (None, "cpu") or (self.device is None and _cuda()):
            why = "the models run on CUDA"
        elif self.dtype is not None and str(self.dtype) not in ("torch.float32", "float32"):
            why = f"dtype {self.dtype} was asked for"
        else:
            why = can_convert(model_dir)
        if why is None:
            return "llamacpp", "auto" if self.backend == "auto" else "asked for"
        if self.backend == "llamacpp":
            raise ModelNotFound(f"The llama.cpp backend cannot serve {base}: {why}.",
                                hint="Use backend auto or torch (TUNEWISE_ENGINE_BACKEND).", param="model")
        return "torch", why

    def _load(self, base: str, key: str) -> Runner:
        spec = models.resolve(base)
        tokenizer = models.load_run_tokenizer(base)
        name = Path(key).name if spec.source.startswith("dir:") else spec.name
        backend, _ = self._pick(base, Path(key))
        if backend == "llamacpp":
            import torch

            from tunewise.infer.llamacpp import LlamaCppRunner

            config = _read_json(Path(key) / "config.json")
            context = min(spec.context_length, int(config.get("max_position_embeddings") or spec.context_length))
            return LlamaCppRunner(name, Path(key), tokenizer, context_length=context,
                                  max_batch_size=self.max_batch_size, stats=self._stats,
                                  stats_lock=self._stats_lock, num_threads=self.num_threads or
                                  torch.get_num_threads(), quant=self.gguf_quant,
                                  prompt_lookup=self.prompt_lookup)
        model = models.load_model(base, dtype=self.dtype, device=self.device)
        context = min(spec.context_length, int(getattr(model.config, "max_position_embeddings", None)
                                                or spec.context_length))
        return ModelRunner(name, model, tokenizer, context_length=context, max_batch_size=self.max_batch_size,
                           stats=self._stats, stats_lock=self._stats_lock)

    def _make_room(self, needed: int, keep: str | None = None) -> None:
        """Unload least recently used idle entries until ``needed`` more fit (call with ``_lock`` held); the base
        model ``keep`` stays (an adapter is being added to it)."""
        while len(self._lru) + needed > self.max_loaded_models:
            victim = None
            for entry in self._lru:
                runner = self._runners[entry[1]]
                if entry == ("base", keep):
                    continue
                if entry[0] == "adapter" and not runner.busy(entry[2]):
                    victim = entry
                    break
                if entry[0] == "base" and not runner.adapters and not runner.busy(any_adapter=True):
                    victim = entry
                    break
            if victim is None:
                return  # everything loaded is in use: go over the limit rather than fail a request
            del self._lru[victim]
            runner = self._runners[victim[1]]
            if victim[0] == "adapter":
                runner.remove_adapter(victim[2])
            else:
                del self._runners[victim[1]]
                runner.close()


_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@atexit.register
def _close_open_engines() -> None:
    # Scheduler threads must be stopped before the interpreter tears down torch, or the process aborts on exit.
    for engine in list(_open_engines):
        engine.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _locate(model: str) -> tuple[str, Path | None]:
    """(base model, LoRA adapter directory or None) for a model name or directory."""
    if not isinstance(model, str) or not model:
        raise UsageError("'model' must be a model name or directory.", param="model")
    path = Path(model).expanduser()
    if not path.is_dir():
        return model, None
    meta = _read_json(path / "tunewise_model.json")
    if (path / "adapter_config.json").is_file():
        base = meta.get("base_model") or _read_json(path / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise ModelNotFound(f"{path} holds a LoRA adapter but does not say which base model it was trained on.",
                                hint="Add tunewise_model.json with {\"base_model\": NAME} (or set "
                                "base_model_name_or_path in adapter_config.json).", param="model")
        base = str(base)
        if not Path(base).is_absolute() and (path / base).is_dir():
            base = str((path / base).resolve())  # a base given relative to the adapter directory
        return base, path.resolve()
    return model, None

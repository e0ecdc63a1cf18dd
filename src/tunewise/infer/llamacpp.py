"""The llama.cpp backend: continuous batching over llama.cpp's low-level API, with prefix caching.

The model runs as a GGUF file (``gguf_for``: the HF directory converted once, cached by content under the model
cache). One llama.cpp context holds a unified KV cache shared by every sequence; each running choice is one
sequence id. A step is one ``llama_decode`` over a ``llama_batch`` that carries the new prompt tokens of the
admitted jobs (each under its own sequence id), and one over the last token of every running row; a finished
row's cells are freed with ``llama_memory_seq_rm``.

Prefix caching: the KV of recent prompts stays in the cache under spare sequence ids. A new prompt that starts
with the same tokens (every eval candidate sends the same system prompt and few-shot turns) copies that prefix's
cells with ``llama_memory_seq_cp`` (in a unified cache the cells are shared, not copied) and prefills only the
rest. Prompts admitted in the same step that start alike (an eval's concurrent calls, sent at once) have their
common start computed once into a prefix slot first. ``n`` choices of one request share their prompt's cells the
same way.

Tokens come from the model's own HF tokenizer and chat template, and sampling (grammar bitmask, greedy,
temperature, top-p, seeded generators), stop strings and streaming are ``scheduler.Runner``'s: the logits llama.cpp
computes go through the same code as the torch backend's, so ``response_format`` is the same xgrammar machinery.

LoRA adapters: llama.cpp applies adapters per context, not per sequence. Each adapter is written once in
llama.cpp's LoRA adapter format (``lora_gguf``: ``tunewise.train.gguf.convert_lora_to_gguf``, milliseconds, cached
by content), loaded over the base model already in memory (``llama_adapter_lora_init``) and set on a context of
its own (``llama_set_adapters_lora``): the base weights are not copied, each adapter costs its LoRA matrices and
its KV cache, and each context decodes its own rows in the same step. An adapter llama.cpp cannot apply (DoRA,
trained embeddings, ...) is merged into its base instead (PEFT's ``merge_and_unload``), converted to a whole GGUF
(``adapter_gguf``) and runs as a second model. The adapter path is the default because it loads faster and holds
no second copy of the weights (bench figures in docs/engine.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tunewise import models
from tunewise.errors import DataError
from tunewise.infer.scheduler import Job, Runner, Seq, stop_ids_for
from tunewise.infer.threads import ThreadGovernor
from tunewise.infer.types import EngineStats

GGUF_QUANTS = ("f32", "f16", "q8_0", "q4_k_m")
DEFAULT_GGUF_QUANT = "f16"
"""The GGUF the backend serves by default: f16 weights (a float path; see docs/engine.md for its greedy identity
with the float32 torch reference)."""
MAX_KV_CELLS = 16384
"""Upper bound on the KV cache cells of one model's context (shared by all its sequences and cached prefixes)."""
PREFIX_SLOTS = 4
"""Recent prompts whose KV stays cached for prefix reuse."""
MIN_PREFIX = 16
"""Shortest shared prefix worth copying instead of recomputing."""
N_BATCH = 2048
"""Most tokens one ``llama_decode`` call takes; longer prefills are split."""
PROMPT_LOOKUP = 3
"""Most draft tokens a greedy row proposes in one step by prompt lookup (``TUNEWISE_ENGINE_PROMPT_LOOKUP``; 0: off).
Measured on 2 cores, 8 held-out receipts one at a time, 64 tokens, wall time (medians of 2) against no drafts: 3
tokens 0.70x (long prompt) and 0.93x (short), 5 tokens 0.85x and 1.02x, 8 tokens 0.91x and 0.93x: the longer a
draft, the more of its step is spent on tokens the model rejects."""
STEP_TOKENS = 12
"""Most tokens (rows and their drafts) one decode step feeds: each row's draft is at most ``STEP_TOKENS // rows - 1``
tokens. On 2 cores one row's step took 9.7 ms and 4 tokens of one row 17.6 ms, but 8 rows 42.6 ms and 8 rows of 2
tokens 60.9 ms (8 receipts at once: drafts no faster), so drafts are nearly free beside a few rows and not beside
eight (none from 7 rows on)."""


def lookup_tokens() -> int:
    """The prompt-lookup draft length from ``TUNEWISE_ENGINE_PROMPT_LOOKUP`` (default ``PROMPT_LOOKUP``)."""
    from tunewise.errors import UsageError

    raw = os.environ.get("TUNEWISE_ENGINE_PROMPT_LOOKUP", "").strip()
    if not raw:
        return PROMPT_LOOKUP
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"TUNEWISE_ENGINE_PROMPT_LOOKUP must be a whole number of tokens (0: off), not {raw!r}.",
                         param="TUNEWISE_ENGINE_PROMPT_LOOKUP")
    return value


class _Lookup:
    """Prompt lookup (n-gram speculation, as llama.cpp's ``lookup`` and HF's ``prompt_lookup_num_tokens``) for one
    greedy row: the draft is what followed the most recent earlier occurrence of the row's last two tokens, in the
    prompt or in the answer so far, else in a recent answer of the same model (``_Answers``: the answers to one
    kind of prompt start alike). An extraction answer copies names and prices from its prompt and repeats its own
    JSON keys, so most drafts hold. The model checks every draft token in the same step (greedy: a draft token is
    kept only where it is the argmax), so the answer is the one decoding token by token gives."""

    __slots__ = ("answers", "index", "start", "tokens")

    def __init__(self, prompt: list[int], answers: _Answers | None = None) -> None:
        self.tokens = list(prompt)
        self.start = len(prompt)
        self.answers = answers
        t = self.tokens
        # bigram -> where its most recent continuation starts (the final bigram has none yet)
        self.index = {(t[i], t[i + 1]): i + 2 for i in range(len(t) - 2)}

    def push(self, token: int) -> None:
        t = self.tokens
        if len(t) >= 2:
            self.index[(t[-2], t[-1])] = len(t)
        t.append(token)

    def draft(self, k: int) -> list[int]:
        t = self.tokens
        if k <= 0 or len(t) < 2:
            return []
        key = (t[-2], t[-1])
        start = self.index.get(key)
        if start is not None:
            return t[start:start + k]
        return self.answers.draft(key, k) if self.answers is not None else []

    def answer(self) -> list[int]:
        """The tokens from the end of the prompt's last two: what ``_Answers`` keeps."""
        return self.tokens[max(0, self.start - 2):]


class _Answers:
    """The bigram index of a model's recent greedy answers (each with the last two tokens of its prompt before
    it), for drafts a row's own context has none for: the start of an answer, most often."""

    LIMIT = 65536
    """Bigrams kept before the index starts again."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int], tuple[list[int], int]] = {}

    def add(self, tokens: list[int]) -> None:
        if len(self.index) > self.LIMIT:
            self.index.clear()
        for i in range(len(tokens) - 2):
            self.index[(tokens[i], tokens[i + 1])] = (tokens, i + 2)

    def draft(self, key: tuple[int, int], k: int) -> list[int]:
        hit = self.index.get(key)
        return [] if hit is None else hit[0][hit[1]:hit[1] + k]


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def model_params():
    """llama.cpp's default model parameters, without the extra weight buffers (AMX/repacked layouts): with them,
    llama-cpp-python 0.3.36 built from source crashes (segmentation fault in ``llama_decode``) on quantized weights
    on CPUs with AMX, as here (the default model's own Q4_1 GGUF too)."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False
    return params


def open_llama(path: str | os.PathLike, **kwargs):
    """llama-cpp-python's own ``Llama`` on a GGUF file, with ``model_params()`` (for baselines and checks)."""
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    with _llama_patch_lock:
        lib.llama_model_default_params = model_params
        try:
            return llama_cpp.Llama(str(path), **{"verbose": False, **kwargs})
        finally:
            lib.llama_model_default_params = original


_llama_patch_lock = threading.Lock()


def _digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()[:16]


def _weights(model_dir: Path) -> list[Path]:
    return [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors"))]


def gguf_for(model_dir: str | os.PathLike, quant: str = DEFAULT_GGUF_QUANT, *, threads: int = 1) -> Path:
    """The GGUF file of an HF model directory at ``quant``, converted once and cached by content."""
    from tunewise.train.gguf import convert_to_gguf

    model_dir = Path(model_dir)
    key = _digest(_weights(model_dir), quant)
    target = models.cache_dir() / "gguf" / f"{model_dir.name}-{key}-{quant}.gguf"
    if target.is_file():
        return target
    with models._cache_lock(f"gguf-{key}"):
        if not target.is_file():
            convert_to_gguf(model_dir, target, quant, threads=threads)
    return target


def adapter_gguf(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, quant: str = DEFAULT_GGUF_QUANT, *,
                 threads: int = 1) -> Path:
    """A LoRA adapter merged into its base and converted to GGUF, cached by the content of both."""
    import torch
    from peft import PeftModel

    from tunewise.train.gguf import convert_to_gguf

    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    files = [adapter_dir / "adapter_config.json", *sorted(adapter_dir.glob("adapter_model.*"))]
    key = _digest(files, quant + _digest(_weights(base_dir)))
    target = models.cache_dir() / "gguf" / f"adapter-{key}-{quant}.gguf"
    if target.is_file():
        return target
    with models._cache_lock(f"gguf-{key}"):
        if target.is_file():
            return target
        base = models.load_model(str(base_dir), dtype=torch.float32, device="cpu")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=models.cache_dir()))
        try:
            merged.save_pretrained(tmp, safe_serialization=True)
            for name in ("tokenizer_config.json", "chat_template.jinja"):
                if (adapter_dir / name).is_file():
                    shutil.copy(adapter_dir / name, tmp / name)
            (tmp / "tunewise_model.json").write_text(json.dumps({"base_model": str(base_dir)}))
            convert_to_gguf(tmp, target, quant, threads=threads)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def lora_gguf(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, quant: str = DEFAULT_GGUF_QUANT) -> Path:
    """A LoRA adapter in llama.cpp's adapter GGUF format (f32 over an f32 base, else f16), cached by content; raises
    ``UsageError`` for an adapter llama.cpp cannot apply."""
    from tunewise.train.gguf import convert_lora_to_gguf

    adapter_dir = Path(adapter_dir)
    level = "f32" if quant == "f32" else "f16"
    files = [adapter_dir / "adapter_config.json", *sorted(adapter_dir.glob("adapter_model.*"))]
    key = _digest(files, level + _digest(_weights(Path(base_dir))))
    target = models.cache_dir() / "gguf" / f"lora-{key}-{level}.gguf"
    if not target.is_file():
        with models._cache_lock(f"gguf-{key}"):
            if not target.is_file():
                convert_lora_to_gguf(adapter_dir, target, level, base_dir=base_dir)
    return target


@dataclass
class _Prefix:
    tokens: tuple[int, ...]
    seq_id: int
    used: int = 0


@dataclass
class _Model:
    """One GGUF loaded in llama.cpp: its context, batch, sequence ids and cached prefixes."""

    path: Path
    n_threads: int
    n_rows: int
    n_ctx: int
    model: object = None
    ctx: object = None
    mem: object = None
    batch: object = None
    n_vocab: int = 0
    free_seqs: list[int] = field(default_factory=list)
    prefixes: list[_Prefix] = field(default_factory=list)
    free_prefix_seqs: list[int] = field(default_factory=list)
    clock: int = 0
    governor: ThreadGovernor | None = None
    """Asked before each decode how many threads to use (``infer/threads.py``); None: always ``n_threads``."""
    threads_now: int = 0
    base: _Model | None = None
    """Set for a LoRA adapter (``path``, an adapter GGUF) applied over this loaded model, whose weights it shares."""
    lora: object = None

    def load(self) -> None:
        import ctypes

        import llama_cpp

        from tunewise.train.gguf import _quiet_llama_cpp

        _quiet_llama_cpp()
        llama_cpp.llama_backend_init()
        if self.base is not None:
            self.model = self.base.model
            self.lora = llama_cpp.llama_adapter_lora_init(self.model, str(self.path).encode())
            if not self.lora:
                raise DataError(f"llama.cpp could not load the LoRA adapter {self.path} over {self.base.path}.",
                                hint="Delete the file to have it converted again.")
        else:
            self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params())
        if not self.model:
            raise DataError(f"llama.cpp could not load {self.path}.", hint="Delete the file to have it converted "
                            "again, or use TUNEWISE_ENGINE_BACKEND=torch.")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = 512
        cparams.n_seq_max = self.n_rows + PREFIX_SLOTS
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True  # one cache for all sequences: shared prefixes share their cells
        # llama.cpp's default (auto) turns flash attention on; on this CPU it made each decode step over a long
        # cached prompt (~1,400 tokens) half again as slow (bench/serve.py: 2.9 s against 2.0 s a call).
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            self.free()
            raise DataError(f"llama.cpp could not create a context for {self.path} ({self.n_ctx} KV cells).")
        if self.lora:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.lora)
            if llama_cpp.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) != 0:
                self.free()
                raise DataError(f"llama.cpp could not set the LoRA adapter {self.path} on its context.")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.free_seqs = list(range(self.n_rows - 1, -1, -1))
        self.free_prefix_seqs = list(range(self.n_rows + PREFIX_SLOTS - 1, self.n_rows - 1, -1))
        self._seq_ptrs = [self.batch.seq_id[i] for i in range(N_BATCH)]
        self.threads_now = self.n_threads

    def free(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.lora:
            llama_cpp.llama_adapter_lora_free(self.lora)
            self.lora = None
        if self.model and self.base is None:
            llama_cpp.llama_model_free(self.model)
        self.model = None

    def decode(self, tokens: list[tuple[int, int, int, bool]]):
        """Run ``(token, position, seq_id, wants_logits)`` entries through the model (split into calls of at most
        ``N_BATCH``); the logits of the entries that want them, in order, as a float32 array."""
        import llama_cpp
        import numpy as np

        if self.governor is not None:
            n = self.governor.threads()
            if n != self.threads_now:
                llama_cpp.llama_set_n_threads(self.ctx, n, n)
                self.threads_now = n
        out = []
        batch = self.batch
        for start in range(0, len(tokens), N_BATCH):
            chunk = tokens[start:start + N_BATCH]
            want = []
            for i, (tok, pos, seq, logits) in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                self._seq_ptrs[i][0] = seq
                batch.logits[i] = 1 if logits else 0
                if logits:
                    want.append(i)
            batch.n_tokens = len(chunk)
            rc = llama_cpp.llama_decode(self.ctx, batch)
            if rc == 1:
                raise DataError(f"The engine's KV cache ({self.n_ctx} tokens for all running requests) is full.",
                                hint="Send fewer concurrent requests or a smaller max_tokens.",
                                code="context_length_exceeded")
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc})")
            for i in want:
                ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
                out.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return np.stack(out) if out else np.zeros((0, self.n_vocab), dtype=np.float32)

    def drop(self, seq_id: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.mem, seq_id, -1, -1)
        self.free_seqs.append(seq_id)

    # ---- prefix cache ----

    def longest_prefix(self, prompt: list[int]) -> tuple[_Prefix | None, int]:
        best, best_len = None, 0
        for p in self.prefixes:
            n = 0
            limit = min(len(p.tokens), len(prompt) - 1)  # one token is always computed, for its logits
            while n < limit and p.tokens[n] == prompt[n]:
                n += 1
            if n > best_len:
                best, best_len = p, n
        return (best, best_len) if best_len >= MIN_PREFIX else (None, 0)

    def remember(self, prompt: list[int], seq_id: int) -> None:
        """Keep ``prompt``'s cells (held by ``seq_id``) under a prefix slot."""
        import llama_cpp

        tokens = tuple(prompt)
        self.clock += 1
        for p in self.prefixes:
            if p.tokens == tokens:
                p.used = self.clock
                return
        if self.free_prefix_seqs:
            slot = _Prefix(tokens, self.free_prefix_seqs.pop(), self.clock)
            self.prefixes.append(slot)
        else:
            slot = min(self.prefixes, key=lambda p: p.used)
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq_id, -1, -1)
            slot.tokens, slot.used = tokens, self.clock
        llama_cpp.llama_memory_seq_cp(self.mem, seq_id, slot.seq_id, 0, len(tokens))

    def forget_oldest_prefix(self) -> bool:
        import llama_cpp

        if not self.prefixes:
            return False
        slot = min(self.prefixes, key=lambda p: p.used)
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq_id, -1, -1)
        self.prefixes.remove(slot)
        self.free_prefix_seqs.append(slot.seq_id)
        return True

    def prefix_cells(self) -> int:
        return sum(len(p.tokens) for p in self.prefixes)


class LlamaCppRunner(Runner):
    """A GGUF model (and merged adapters) in llama.cpp, served by the shared scheduler."""

    backend = "llamacpp"

    def __init__(self, name: str, model_dir: Path, tokenizer, *, context_length: int, max_batch_size: int,
                 stats: EngineStats, stats_lock: threading.Lock, num_threads: int,
                 quant: str = DEFAULT_GGUF_QUANT, gguf_path: Path | None = None,
                 prompt_lookup: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.prompt_lookup = lookup_tokens() if prompt_lookup is None else max(0, int(prompt_lookup))
        self._answers: dict[str | None, _Answers] = {}  # per adapter: a fine-tune answers unlike its base
        self.quant = quant
        self.num_threads = max(1, int(num_threads))
        config = json.loads((self.model_dir / "config.json").read_text())
        generation = {}
        if (self.model_dir / "generation_config.json").is_file():
            generation = json.loads((self.model_dir / "generation_config.json").read_text())
        vocab_size = int(config["vocab_size"])
        stop_ids = stop_ids_for((generation, config), tokenizer, vocab_size)
        super().__init__(name, tokenizer, vocab_size=vocab_size, stop_ids=stop_ids, context_length=context_length,
                         max_batch_size=max_batch_size, stats=stats, stats_lock=stats_lock)
        self.n_ctx = min(context_length * max_batch_size, max(context_length, MAX_KV_CELLS))
        self.governor = ThreadGovernor(self.num_threads)
        self.gguf_path = gguf_path or gguf_for(self.model_dir, quant, threads=self.num_threads)
        self._models: dict[str | None, _Model] = {None: self._open(self.gguf_path)}
        self._reserved: dict[int, int] = {}  # id(job) -> KV cells reserved for it while it runs
        self._start()

    def _open(self, path: Path, base: _Model | None = None) -> _Model:
        m = _Model(path, self.num_threads, self.max_batch_size, self.n_ctx, governor=self.governor, base=base)
        m.load()
        if m.n_vocab != self.vocab_size:
            m.free()
            raise DataError(f"{path} has {m.n_vocab} tokens but the model's config says {self.vocab_size}.",
                            hint="Delete the cached GGUF to have it converted again.")
        return m

    # ---- adapters (LoRA GGUFs over the base; merged GGUF models where llama.cpp cannot apply one) ----------

    def add_adapter(self, name: str, path: str) -> None:
        from tunewise.errors import UsageError

        try:
            lora = lora_gguf(self.model_dir, path, self.quant)
            # llama.cpp registers the adapter in the base model's own state: not while a step decodes on it.
            with self._model_lock:
                m = self._open(lora, base=self._models[None])
        except UsageError:
            m = self._open(adapter_gguf(self.model_dir, path, self.quant, threads=self.num_threads))
        with self._model_lock:
            self._models[name] = m
            self.adapters[name] = path

    def remove_adapter(self, name: str) -> None:
        with self._model_lock:
            if name not in self.adapters:
                return
            del self.adapters[name]
            self._answers.pop(name, None)
            m = self._models.pop(name, None)
            if m is not None and m.base is not None:
                m.free()  # unregisters the adapter from the base model: under the lock, as its loading
        if m is not None and m.base is None:
            m.free()

    def _unload(self) -> None:
        with self._model_lock:
            # Adapters over the base first: llama.cpp frees a model's adapters with it.
            for m in sorted(self._models.values(), key=lambda m: m.base is None):
                m.free()
            self._models.clear()

    # ---- steps -------------------------------------------------------------------------------------------

    @staticmethod
    def _cost(job: Job) -> int:
        return len(job.prompt_ids) + job.n * job.seqs[0].max_tokens

    def _fits(self, job: Job, admitted: list[Job]) -> bool:
        m = self._models.get(job.adapter)
        if m is None:
            return True  # the step fails it with a clear error
        same = [j for j in admitted if j.adapter == job.adapter]
        running = sum(c for j, c in self._reserved_items() if j.adapter == job.adapter)
        need = running + sum(self._cost(j) for j in same) + self._cost(job)
        while need + m.prefix_cells() > m.n_ctx and m.forget_oldest_prefix():
            pass
        if need + m.prefix_cells() <= m.n_ctx:
            return True
        # Too big to fit beside what runs: wait for it to finish; alone, it runs (and fails if the cache fills).
        return not running and not same

    def _reserved_items(self):
        jobs = {id(s.job): s.job for s in self._rows}
        return [(jobs[k], c) for k, c in self._reserved.items() if k in jobs]

    def _step(self, admitted: list[Job]) -> None:
        if admitted:
            self._prefill(admitted)
        if self._rows:
            self._decode()

    def _clear_batch(self) -> None:
        for s in self._rows:
            m = self._models.get(s.job.adapter)
            if m is not None and getattr(s, "seq_id", None) is not None:
                m.drop(s.seq_id)
                s.seq_id = None
        self._rows = []
        self._reserved.clear()

    def _prefill(self, jobs: list[Job]) -> None:
        import llama_cpp

        by_model: dict[str | None, list[Job]] = {}
        for job in jobs:
            by_model.setdefault(job.adapter, []).append(job)
        seqs: list[Seq] = []
        logits_rows = []
        for adapter, group in by_model.items():
            m = self._models[adapter]
            if len(group) > 1:
                self._share_prefix(m, [job.prompt_ids for job in group])
            entries = []
            firsts = []
            for job in group:
                first = m.free_seqs.pop()
                job.seqs[0].seq_id = first
                prompt = job.prompt_ids
                prefix, shared = m.longest_prefix(prompt)
                if prefix is not None:
                    llama_cpp.llama_memory_seq_cp(m.mem, prefix.seq_id, first, 0, shared)
                    m.clock += 1
                    prefix.used = m.clock
                    with self._stats_lock:
                        self._stats.cached_prompt_tokens += shared
                for pos in range(shared, len(prompt)):
                    entries.append((prompt[pos], pos, first, pos == len(prompt) - 1))
                firsts.append(first)
                self._reserved[id(job)] = self._cost(job)
            logits = m.decode(entries)
            with self._stats_lock:
                self._stats.forward_passes += 1
                self._stats.prefill_passes += 1
                self._stats.max_batch_size_seen = max(self._stats.max_batch_size_seen, len(group))
            for job, first, row in zip(group, firsts, logits, strict=True):
                m.remember(job.prompt_ids, first)
                for s in job.seqs[1:]:  # n > 1: the other choices share the prompt's cells
                    s.seq_id = m.free_seqs.pop()
                    llama_cpp.llama_memory_seq_cp(m.mem, first, s.seq_id, 0, len(job.prompt_ids))
                for s in job.seqs:
                    s.pos = len(job.prompt_ids)
                    seqs.append(s)
                    logits_rows.append(row)
        import numpy as np

        tokens = self._sample(seqs, np.stack(logits_rows))
        alive = self._advance(seqs, tokens)
        for s, token, a in zip(seqs, tokens, alive, strict=True):
            s.lookup = None
            if a:
                if self.prompt_lookup and s.temperature == 0 and s.matcher is None:
                    s.lookup = _Lookup(s.job.prompt_ids, self._answers.setdefault(s.job.adapter, _Answers()))
                    s.lookup.push(token)
                self._rows.append(s)
            else:
                self._finish(s)

    def _share_prefix(self, m: _Model, prompts: list[list[int]]) -> None:
        """Prompts admitted together that start alike (the same system prompt and few-shot turns, sent at once
        by an eval's concurrent calls) share that start: it is computed once, into a prefix slot, before their
        prefill, which then copies it like any cached prefix, instead of computing it once per prompt."""
        import llama_cpp

        common = min(len(p) for p in prompts) - 1  # one token of each is always computed, for its logits
        first = prompts[0]
        for p in prompts[1:]:
            n = 0
            while n < common and p[n] == first[n]:
                n += 1
            common = n
        if common < MIN_PREFIX:
            return
        prefix = first[:common]
        cached, shared = m.longest_prefix(prefix + [-1])  # the sentinel lets the whole of ``prefix`` match
        if shared >= common:
            return
        seq = m.free_seqs.pop()
        try:
            if cached is not None:
                llama_cpp.llama_memory_seq_cp(m.mem, cached.seq_id, seq, 0, shared)
            m.decode([(prefix[pos], pos, seq, pos == common - 1) for pos in range(shared, common)])
            with self._stats_lock:
                self._stats.forward_passes += 1
                self._stats.prefill_passes += 1
            m.remember(prefix, seq)
        finally:
            m.drop(seq)

    def _finish(self, s: Seq) -> None:
        lookup = getattr(s, "lookup", None)
        if lookup is not None and lookup.answers is not None and not s.job.cancelled:
            lookup.answers.add(lookup.answer())
        m = self._models.get(s.job.adapter)
        if m is not None and s.seq_id is not None:
            m.drop(s.seq_id)
        s.seq_id = None
        if s.job.remaining == 0:
            self._reserved.pop(id(s.job), None)

    def _decode(self) -> None:
        """One step: every running row's last token, and for greedy rows a prompt-lookup draft after it; each row
        keeps the draft tokens the model agrees with, plus the model's own next token (1 or more a step)."""
        import llama_cpp
        import numpy as np

        rows = self._rows
        k = min(self.prompt_lookup, STEP_TOKENS // len(rows) - 1)
        drafts = [s.lookup.draft(min(k, s.max_tokens - s.generated - 1)) if k > 0 and s.lookup is not None
                  else [] for s in rows]
        by_model: dict[str | None, list[int]] = {}
        for i, s in enumerate(rows):
            by_model.setdefault(s.job.adapter, []).append(i)
        logits = [None] * len(rows)
        for adapter, idx in by_model.items():
            m = self._models[adapter]
            entries = []
            for i in idx:
                s = rows[i]
                entries.append((s.last, s.pos, s.seq_id, True))
                entries.extend((d, s.pos + 1 + j, s.seq_id, True) for j, d in enumerate(drafts[i]))
            out = m.decode(entries)
            at = 0
            for i in idx:
                n = 1 + len(drafts[i])
                logits[i] = out[at:at + n]
                at += n
            with self._stats_lock:
                self._stats.forward_passes += 1
                self._stats.decode_steps += 1
                self._stats.batch_sizes[len(idx)] = self._stats.batch_sizes.get(len(idx), 0) + 1
                self._stats.max_batch_size_seen = max(self._stats.max_batch_size_seen, len(idx))
        # Each row's tokens for this step: the sampled one, or (greedy with a draft) the argmax after each fed
        # token for as long as the draft agreed with it.
        plain = [i for i, s in enumerate(rows) if s.lookup is None]
        accepted: list[list[int]] = [[] for _ in rows]
        if plain:
            for i, token in zip(plain, self._sample([rows[i] for i in plain],
                                                    np.stack([logits[i][0] for i in plain])), strict=True):
                accepted[i] = [token]
        proposed = kept = 0
        for i, s in enumerate(rows):
            if s.lookup is None:
                continue
            preds = logits[i].argmax(axis=-1)
            got = [int(preds[0])]
            for j, d in enumerate(drafts[i]):
                if got[-1] != d:
                    break
                got.append(int(preds[j + 1]))
            accepted[i] = got
            proposed += len(drafts[i])
            kept += len(got) - 1
            if len(got) - 1 < len(drafts[i]):  # the cells of the draft tokens the model did not agree with
                llama_cpp.llama_memory_seq_rm(self._models[s.job.adapter].mem, s.seq_id, s.pos + len(got), -1)
        if proposed:
            with self._stats_lock:
                self._stats.draft_tokens += proposed
                self._stats.accepted_draft_tokens += kept
        alive = [True] * len(rows)
        for r in range(max(len(a) for a in accepted)):
            idx = [i for i in range(len(rows)) if alive[i] and len(accepted[i]) > r]
            for i in idx:
                rows[i].pos += 1
            flags = self._advance([rows[i] for i in idx], [accepted[i][r] for i in idx])
            for i, ok in zip(idx, flags, strict=True):
                if not ok:
                    alive[i] = False
                elif rows[i].lookup is not None:
                    rows[i].lookup.push(accepted[i][r])
        if all(alive):
            return
        self._rows = [s for s, a in zip(rows, alive, strict=True) if a]
        for s, a in zip(rows, alive, strict=True):
            if not a:
                self._finish(s)

"""What every generation backend shares: requests as jobs, one scheduler thread per loaded model, sampling.

Callers (many threads) render and tokenize their prompt, then queue a job. The scheduler thread owns the model and
loops: admit waiting jobs while the batch has room, run their prompts (the prefill), then one decode step that
produces the next token of every running sequence at once. A request that arrives mid-way joins at the next step
instead of waiting for the batch to drain. How a step runs is the backend's (``runner.ModelRunner``: torch;
``llamacpp.LlamaCppRunner``: llama.cpp); sampling (grammar mask, greedy, temperature, top-p, each choice's own
seeded generator), stop strings, finish reasons, usage counts and streaming are this module's, so every backend
answers the same way given the same logits.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections import Counter, deque
from typing import Any

from tunewise.errors import Cancelled, DataError, UsageError
from tunewise.infer.grammar import Grammars, new_matcher
from tunewise.infer.tools import apply_template
from tunewise.infer.types import EngineStats, GenerationRequest, StreamDelta

# The trainer's own normalisation: a fine-tuned model must see at inference the prompt it was trained on.
from tunewise.train.render import normalize_messages

# Tokens that end an assistant turn in common chat templates; whichever the vocabulary has are stop tokens,
# besides the model's own eos ids.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

_DONE = object()  # sentinel on a job's event queue: every choice has finished


def stop_ids_for(sources, tokenizer, vocab_size: int) -> list[int]:
    """The eos ids of ``sources`` (configs: objects or dicts with ``eos_token_id``) and of the tokenizer, and the
    end-of-turn tokens the vocabulary has."""
    ids: set[int] = set()
    for source in (*sources, tokenizer):
        eos = source.get("eos_token_id") if isinstance(source, dict) else getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(x) for x in eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(i for i in ids if 0 <= i < vocab_size)


def _draw(probs, generator) -> int:
    """One index drawn with probability ``probs`` (unnormalised is fine), by inverting the CDF at one uniform draw:
    as exact as ``torch.multinomial`` and much cheaper over a 50k vocabulary."""
    import torch

    cdf = probs.cumsum(0)
    u = torch.rand((1,), generator=generator, dtype=cdf.dtype) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), len(cdf) - 1)


class Job:
    """One request on its way through the scheduler; the caller reads ``events``."""

    def __init__(self, request: GenerationRequest, prompt_ids: list[int], max_tokens: int, adapter: str | None,
                 compiled_grammar, stop_ids: list[int]) -> None:
        self.request = request
        self.prompt_ids = prompt_ids
        self.n = request.n
        self.adapter = adapter
        self.events: queue.Queue = queue.Queue()
        self.completion_tokens = 0
        self.remaining = request.n
        self.cancelled = False
        self.finish_reasons: dict[int, str] = {}
        self.coalesce = False
        """True: each choice's text is sent once, when it finishes (a caller that waits for the whole answer), so
        the caller's thread is not woken for every token while the model's threads compute the next one."""
        self.seqs = [Seq(self, i, max_tokens, compiled_grammar, stop_ids) for i in range(request.n)]

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


class Seq:
    """One choice of a job: one row of the batch while it runs."""

    def __init__(self, job: Job, index: int, max_tokens: int, compiled_grammar, stop_ids: list[int]) -> None:
        import torch

        request = job.request
        self.job = job
        self.index = index
        self.max_tokens = max_tokens
        self.temperature = float(request.temperature)
        self.top_p = float(request.top_p)
        self.stops = request.stop_list()
        self.matcher = new_matcher(compiled_grammar, stop_ids) if compiled_grammar is not None else None
        # Each choice draws from its own generator, so a seeded request samples the same tokens whatever else
        # shares the batch; the choices of one request get different (but fixed) streams.
        seed = request.seed if request.seed is not None else secrets.randbits(62)
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + index) % (2**63))
        self.tokens: list[int] = []  # generated tokens, end-of-turn excluded
        self.generated = 0  # tokens sampled, end-of-turn included (what usage counts)
        self.text = ""
        self.emitted = 0  # characters of text already sent to the caller
        self.stale = False  # ``text`` lags ``tokens`` (a coalesced job without stop strings decodes at the end)
        self.last = -1  # the sampled token the next decode step feeds
        self.pos = 0  # its position id (the number of real tokens before it)


class Runner:
    """A model's tokenizer, its request queue and the scheduler thread; subclasses run the steps."""

    backend = "base"

    def __init__(self, name: str, tokenizer, *, vocab_size: int, stop_ids: list[int], context_length: int,
                 max_batch_size: int, stats: EngineStats, stats_lock: threading.Lock) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch_size = max_batch_size
        self.vocab_size = vocab_size
        self.stop_ids = list(stop_ids)
        self._stop_set = set(self.stop_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.grammars = Grammars(tokenizer, self.vocab_size, self.stop_ids)
        self.adapters: dict[str, str] = {}  # adapter name -> directory
        self._stats = stats
        self._stats_lock = stats_lock
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe to use from several threads at once
        self._model_lock = threading.Lock()  # held for each step, and while adapters are added or removed
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._inflight: Counter = Counter()  # adapter name (None = base) -> jobs queued or running
        self._closed = False
        self._rows: list[Seq] = []  # the running batch: one Seq per row

    def _start(self) -> None:
        """Start the scheduler thread (the subclass's last step in ``__init__``)."""
        self._thread = threading.Thread(target=self._loop, name=f"tunewise-infer:{self.name}", daemon=True)
        self._thread.start()

    # ---- caller side -------------------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids, by the model's own chat template with the generation prompt (or tunewise's
        tool-capable one: ``tunewise.infer.tools.apply_template``, the trainer's very call)."""
        try:
            with self._tok_lock:
                ids = apply_template(self.tokenizer, normalize_messages(messages), tools)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"The messages cannot be rendered with {self.name}'s chat template: {exc}",
                             hint="Each message needs a 'role' (system, user, assistant) and a 'content'.",
                             param="messages") from exc
        except Exception as exc:  # jinja2's TemplateError: the template itself refused these messages
            if type(exc).__module__.startswith("jinja2"):
                raise UsageError(f"{self.name}'s chat template refused these messages: {exc}",
                                 hint="Check the roles and their order.", param="messages") from exc
            raise
        return [int(x) for x in ids]

    def encode_prompt(self, prompt: str) -> list[int]:
        """A legacy completion's prompt as the trainer encodes a prompt/completion example's prompt."""
        with self._tok_lock:
            ids = [int(x) for x in self.tokenizer(prompt, add_special_tokens=True)["input_ids"]]
        if not ids:
            raise UsageError("The prompt is empty: there is nothing to complete.", param="prompt",
                             hint="Pass a non-empty prompt.")
        return ids

    def reserve(self, adapter: str | None) -> None:
        """Count a request as in flight before it is queued, so the engine cannot unload its adapter meanwhile;
        ``submit`` takes the reservation over (or ``release`` gives it back)."""
        with self._cond:
            self._inflight[adapter] += 1

    def release(self, adapter: str | None) -> None:
        with self._cond:
            self._release_locked(adapter)

    def submit(self, request: GenerationRequest, adapter: str | None = None, *, coalesce: bool = False) -> Job:
        """Queue a request reserved with ``reserve``; raises (and releases the reservation) when it cannot run
        (too long, bad response_format). ``coalesce``: each choice's text comes as one delta when it finishes."""
        try:
            job = self._make_job(request, adapter)
        except BaseException:
            self.release(adapter)
            raise
        job.coalesce = coalesce
        with self._cond:
            if self._closed:
                self._release_locked(adapter)
                raise Cancelled(f"The model {self.name} was unloaded while the request was queued.",
                                hint="Retry the request.")
            self._pending.append(job)
            self._cond.notify()
        with self._stats_lock:
            self._stats.requests += 1
        return job

    def _make_job(self, request: GenerationRequest, adapter: str | None) -> Job:
        prompt_ids = (self.render(request.messages, request.tools) if request.prompt is None
                      else self.encode_prompt(request.prompt))
        n_prompt = len(prompt_ids)
        if n_prompt >= self.context_length:
            raise DataError(
                f"This model's maximum context length is {self.context_length} tokens, but the messages take "
                f"{n_prompt} tokens, leaving no room for an answer.",
                hint="Shorten the messages (or drop early turns).", code="context_length_exceeded",
                param="messages")
        if request.max_tokens is not None and n_prompt + request.max_tokens > self.context_length:
            raise DataError(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{n_prompt + request.max_tokens} tokens ({n_prompt} in the messages, {request.max_tokens} in "
                "the completion).",
                hint="Reduce the length of the messages or max_tokens.", code="context_length_exceeded",
                param="messages")
        max_tokens = request.max_tokens or min(self.context_length - n_prompt,
                                               request.default_max_tokens or self.context_length)
        tool_grammar = request.tool_grammar()
        compiled = (self.grammars.compile_structural_tag(tool_grammar) if tool_grammar is not None
                    else self.grammars.compile(request.response_format))
        return Job(request, prompt_ids, max_tokens, adapter, compiled, self.stop_ids)

    def busy(self, adapter: str | None = None, *, any_adapter: bool = False) -> bool:
        with self._cond:
            if any_adapter:
                return sum(self._inflight.values()) > 0
            return self._inflight[adapter] > 0

    def add_adapter(self, name: str, path: str) -> None:
        raise NotImplementedError

    def remove_adapter(self, name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ---- scheduler thread --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pending and not self._rows:
                    self._cond.wait()
                if self._closed:
                    break
                admitted: list[Job] = []
                room = self.max_batch_size - len(self._rows)
                while self._pending and self._pending[0].n <= room:
                    job = self._pending[0]
                    if job.cancelled:
                        self._pending.popleft()
                        self._end_job(job)
                        continue
                    if not self._fits(job, admitted):
                        break
                    self._pending.popleft()
                    admitted.append(job)
                    room -= job.n
            try:
                with self._model_lock:
                    self._step(admitted)
            except Exception as exc:  # a failed forward pass fails the requests in it, not the engine
                jobs = {id(j): j for j in admitted}
                jobs.update({id(s.job): s.job for s in self._rows})
                self._clear_batch()
                for job in jobs.values():
                    job.events.put(exc)
                    with self._cond:
                        self._end_job(job, signal=False)
        error = Cancelled(f"The model {self.name} was unloaded before the request finished.",
                          hint="Retry the request.")
        with self._cond:
            jobs = {id(s.job): s.job for s in self._rows}
            jobs.update({id(j): j for j in self._pending})
            self._pending.clear()
            for job in jobs.values():
                job.events.put(error)
                self._end_job(job, signal=False)
        self._clear_batch()
        self._unload()

    def _fits(self, job: Job, admitted: list[Job]) -> bool:
        """Whether ``job`` may join the batch now (besides free rows); ``admitted`` join with it."""
        return True

    def _step(self, admitted: list[Job]) -> None:
        """Prefill the admitted jobs, then decode one token for every running row."""
        raise NotImplementedError

    def _clear_batch(self) -> None:
        """Forget the running batch (after a failed step, or on close)."""
        self._rows = []

    def _unload(self) -> None:
        """Free the model (the scheduler thread's last act)."""

    def _release_locked(self, adapter: str | None) -> None:
        self._inflight[adapter] -= 1
        if self._inflight[adapter] <= 0:
            del self._inflight[adapter]

    def _end_job(self, job: Job, signal: bool = True) -> None:
        """Account for a job that left the scheduler (call with ``_cond`` held)."""
        self._release_locked(job.adapter)
        if signal:
            job.events.put(_DONE)

    def _sample(self, seqs: list[Seq], logits) -> list[int]:
        """The next token of each row: grammar mask, then greedy or temperature/top-p sampling.

        ``logits``: a torch tensor, or a numpy array (the llama.cpp backend's), ``[rows, vocab]``. Greedy rows
        without a grammar are answered by numpy's argmax when the logits are numpy's: no torch operation (and no
        wake-up of torch's thread pool beside llama.cpp's threads) on the common path."""
        import numpy as np

        if isinstance(logits, np.ndarray) and all(s.matcher is None and s.temperature == 0 for s in seqs):
            return [int(t) for t in logits.argmax(axis=-1)]  # first maximum on ties, as torch's argmax
        import torch

        if isinstance(logits, np.ndarray):
            logits = torch.from_numpy(logits)
        logits = logits.float().cpu()
        constrained = [i for i, s in enumerate(seqs) if s.matcher is not None]
        if constrained:
            import xgrammar as xgr

            bitmask = xgr.allocate_token_bitmask(len(seqs), self.vocab_size)
            for i in constrained:
                seqs[i].matcher.fill_next_token_bitmask(bitmask, i)
            xgr.apply_token_bitmask_inplace(logits, bitmask, indices=constrained)
        tokens = [0] * len(seqs)
        greedy = [i for i, s in enumerate(seqs) if s.temperature == 0]
        if greedy:
            for i, token in zip(greedy, logits[greedy].argmax(dim=-1).tolist(), strict=True):
                tokens[i] = int(token)
        plain = [i for i, s in enumerate(seqs) if s.temperature > 0 and s.top_p >= 1.0]
        if plain:
            # All plain sampling rows at once: softmax, CDF, then each row's own uniform draw inverted.
            temps = torch.tensor([seqs[i].temperature for i in plain]).unsqueeze(1)
            cdf = torch.softmax(logits[plain] / temps, dim=-1).cumsum(dim=-1)
            u = torch.cat([torch.rand((1,), generator=seqs[i].generator) for i in plain]).unsqueeze(1)
            picks = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp(max=cdf.shape[1] - 1)
            for i, token in zip(plain, picks.squeeze(1).tolist(), strict=True):
                tokens[i] = int(token)
        for i, s in enumerate(seqs):
            if s.temperature > 0 and s.top_p < 1.0:
                probs = torch.softmax(logits[i] / s.temperature, dim=-1)
                sorted_probs, order = probs.sort(descending=True)
                # Keep the smallest prefix whose mass reaches top_p (the most likely token always stays).
                drop = (sorted_probs.cumsum(0) - sorted_probs) >= s.top_p
                drop[0] = False  # top_p=0 keeps exactly the most likely token
                sorted_probs[drop] = 0.0
                tokens[i] = int(order[_draw(sorted_probs, s.generator)])
        return tokens

    def _advance(self, seqs: list[Seq], tokens: list[int]) -> list[bool]:
        """Give each row its token; emit text; return which rows keep running."""
        alive = []
        finished_jobs = []
        for s, token in zip(seqs, tokens, strict=True):
            job = s.job
            if job.cancelled:
                alive.append(False)
                job.remaining -= 1
                if job.remaining == 0:
                    finished_jobs.append(job)
                continue
            s.generated += 1
            job.completion_tokens += 1
            reason = None
            if token in self._stop_set:
                reason = "stop"
            else:
                s.tokens.append(token)
                if s.matcher is not None:
                    s.matcher.accept_token(token)
                if s.stops or not job.coalesce:
                    with self._tok_lock:
                        s.text = self.tokenizer.decode(s.tokens, skip_special_tokens=True)
                    if s.stops:
                        cut = min((p for p in (s.text.find(stop) for stop in s.stops) if p >= 0), default=-1)
                        if cut >= 0:
                            s.text = s.text[:cut]
                            reason = "stop"
                else:
                    s.stale = True
                if reason is None and s.generated >= s.max_tokens:
                    reason = "length"
            if reason is not None and s.stale:
                with self._tok_lock:
                    s.text = self.tokenizer.decode(s.tokens, skip_special_tokens=True)
                s.stale = False
            s.last = token
            self._emit(s, reason)
            alive.append(reason is None)
            if reason is not None:
                job.finish_reasons[s.index] = reason
                job.remaining -= 1
                if job.remaining == 0:
                    finished_jobs.append(job)
        with self._stats_lock:
            self._stats.generated_tokens += len(tokens)
        if finished_jobs:
            with self._cond:
                for job in finished_jobs:
                    self._end_job(job)
        return alive

    @staticmethod
    def _emit(s: Seq, reason: str | None) -> None:
        if reason is None and s.job.coalesce:
            return
        text = s.text
        end = len(text)
        if reason is None:
            # Hold back what could still change: a trailing partial UTF-8 character (decoded as U+FFFD) and a
            # suffix that may be the start of a stop string.
            while end > s.emitted and text[end - 1] == "\ufffd":
                end -= 1
            hold = 0
            for stop in s.stops:
                for k in range(min(len(stop) - 1, end - s.emitted), hold, -1):
                    if text[end - k:end] == stop[:k]:
                        hold = k
                        break
            end -= hold
        if end > s.emitted or reason is not None:
            s.job.events.put(StreamDelta(s.index, text[s.emitted:end], reason))
            s.emitted = max(s.emitted, end)

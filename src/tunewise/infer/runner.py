"""The torch backend: one HF model and its continuous-batching scheduler (see ``scheduler.py``).

Sequences are left-padded: each row keeps its own position ids and an attention mask over the shared key/value
cache, so rows of different lengths share every forward pass. Finished rows leave the batch (the cache is cut to
the rows still running, and padding columns no row needs any more are dropped).

LoRA adapters of the same base model are named adapters of one ``PeftModel``; PEFT's ``adapter_names`` lets rows
with different adapters (or none, ``__base__``) share the same forward pass.
"""

from __future__ import annotations

import threading
from typing import Any

from tunewise.infer.scheduler import _DONE, END_OF_TURN_TOKENS, Job, Runner, Seq, stop_ids_for
from tunewise.infer.types import EngineStats

__all__ = ["_DONE", "END_OF_TURN_TOKENS", "Job", "ModelRunner", "Seq"]


def _select_rows(cache, index, start: int = 0) -> None:
    """Keep the KV cache rows in ``index`` (in that order, repeats allowed) and the positions from ``start`` on."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
        layer.values = layer.values.index_select(0, index)[:, :, start:, :]


class ModelRunner(Runner):
    """A torch model, its tokenizer, and a scheduler thread that serves every request for it in shared batches."""

    backend = "torch"

    def __init__(self, name: str, model, tokenizer, *, context_length: int, max_batch_size: int,
                 stats: EngineStats, stats_lock: threading.Lock) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        stop_ids = stop_ids_for((getattr(model, "generation_config", None), model.config), tokenizer, vocab_size)
        super().__init__(name, tokenizer, vocab_size=vocab_size, stop_ids=stop_ids, context_length=context_length,
                         max_batch_size=max_batch_size, stats=stats, stats_lock=stats_lock)
        # The running batch's KV cache (a DynamicCache) and the attention mask over it.
        self._cache = None
        self._mask = None
        self._start()

    def add_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self._model_lock:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
            self.adapters[name] = path

    def remove_adapter(self, name: str) -> None:
        with self._model_lock:
            if name not in self.adapters:
                return
            del self.adapters[name]
            if self.adapters:
                self.model.delete_adapter(name)
            else:
                # The last adapter: give the plain base model back (PEFT's layers removed, weights untouched).
                self.model = self.model.unload()

    def _step(self, admitted: list[Job]) -> None:
        if admitted:
            self._prefill(admitted)
        if self._rows:
            self._decode()

    def _clear_batch(self) -> None:
        self._rows, self._cache, self._mask = [], None, None

    def _forward(self, input_ids, attention_mask, position_ids, cache, adapters: list[str | None]):
        import torch

        kwargs: dict[str, Any] = {}
        if self.adapters:
            kwargs["adapter_names"] = [a or "__base__" for a in adapters]
        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                             position_ids=position_ids.to(self.device), cache=cache, use_cache=True,
                             logits_to_keep=1, **kwargs)
        with self._stats_lock:
            self._stats.forward_passes += 1
            self._stats.max_batch_size_seen = max(self._stats.max_batch_size_seen, int(input_ids.shape[0]))
        return out.cache, out.logits[:, -1, :]

    def _prefill(self, jobs: list[Job]) -> None:
        """One forward pass over the new prompts (left-padded together), then their first tokens."""
        import torch
        from transformers import DynamicCache

        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for r, job in enumerate(jobs):
            ids[r, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[r, width - len(job.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, logits = self._forward(ids, mask, positions, DynamicCache(), [j.adapter for j in jobs])
        with self._stats_lock:
            self._stats.prefill_passes += 1
        # n > 1: the prompt is computed once and its cache row copied for each choice.
        rows = [r for r, job in enumerate(jobs) for _ in range(job.n)]
        if len(rows) != len(jobs):
            index = torch.tensor(rows, device=self.device)
            _select_rows(cache, index)
            mask = mask[rows]
            logits = logits.index_select(0, index)
        seqs = [s for job in jobs for s in job.seqs]
        for s in seqs:
            s.pos = len(s.job.prompt_ids)
        alive = self._advance(seqs, self._sample(seqs, logits))
        if not any(alive):
            return
        keep = [i for i, a in enumerate(alive) if a]
        new_rows = [seqs[i] for i in keep]
        if len(keep) != len(seqs):
            _select_rows(cache, torch.tensor(keep, device=self.device))
            mask = mask[keep]
        self._merge(cache, mask, new_rows)

    def _merge(self, cache, mask, rows: list[Seq]) -> None:
        """Append prefilled rows to the running batch, left-padding whichever side is shorter."""
        import torch
        import torch.nn.functional as F

        if not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)

        def pad(t, missing):  # [batch, heads, seq, dim]: zeros on the left of the sequence axis
            return F.pad(t, (0, 0, missing, 0)) if missing else t

        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([pad(old.keys, width - old_len), pad(new.keys, width - new_len)])
            old.values = torch.cat([pad(old.values, width - old_len), pad(new.values, width - new_len)])
        self._mask = torch.cat([F.pad(self._mask, (width - old_len, 0)), F.pad(mask, (width - new_len, 0))])
        self._rows = self._rows + rows

    def _decode(self) -> None:
        """One forward pass that feeds every running row its last token, then samples the next one."""
        import torch

        rows = self._rows
        ids = torch.tensor([[s.last] for s in rows], dtype=torch.long)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        positions = torch.tensor([[s.pos] for s in rows], dtype=torch.long)
        self._cache, logits = self._forward(ids, mask, positions, self._cache, [s.job.adapter for s in rows])
        self._mask = mask
        for s in rows:
            s.pos += 1
        with self._stats_lock:
            self._stats.decode_steps += 1
            self._stats.batch_sizes[len(rows)] = self._stats.batch_sizes.get(len(rows), 0) + 1
        alive = self._advance(rows, self._sample(rows, logits))
        if all(alive):
            return
        keep = [i for i, a in enumerate(alive) if a]
        self._rows = [rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask[keep]
        # Padding columns that no remaining row attends to are dropped: the batch never drags the length of
        # a long-gone prompt along.
        used = mask.sum(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        _select_rows(self._cache, index, start)
        self._mask = mask[:, start:]


"""The training loop: load, render, check, train, checkpoint, resume.

Read top to bottom: ``train`` resolves the config, renders and checks every example before the model is touched
(so bad input fails in seconds), then runs the steps of a fixed, seeded plan. A resumable state (trainable weights,
optimizer, RNG, metrics so far) is written atomically every few steps, at each epoch end and on a stop, so a run
killed at any point and started again with the same ``output_dir`` ends exactly as an uninterrupted one.

Speed comes from not computing what is not trained: logits are computed only at labelled positions (the LM head
over SmolLM2's 49k vocabulary is a large share of a step), tokens after the last trained one are dropped, batches
are grouped by length, and right padding needs no attention mask so the fast causal attention kernel applies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewise import models
from tunewise.errors import (
    Cancelled,
    Conflict,
    DataError,
    DistributedError,
    LocalFileNotFound,
    Unsupported,
    UsageError,
)
from tunewise.train import distributed, methods
from tunewise.train.batching import micro_batches, pad_slack, plan, split_batch
from tunewise.train.config import (
    TrainConfig,
    TrainEvent,
    TrainResult,
    resolve_dtype,
    resolve_hyperparameters,
)
from tunewise.train.methods import StepContext
from tunewise.train.render import Rendered, Renderer, read_examples

METRICS_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
STATE = "state"
# Architectures whose causal-LM logits are exactly ``lm_head(final hidden state)``; for those the loss is computed
# from hidden states gathered at labelled positions. Others take the plain (slower) full-logits path.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo", "olmo2"}

EventCallback = Callable[[TrainEvent], None]


# ---------------------------------------------------------------------------------------------------- setup


def _stop_check(stop) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    if callable(stop):
        return lambda: bool(stop())
    raise UsageError("stop must be a threading.Event (or anything with is_set()) or a zero-argument callable.")


def _device_and_dtype(config: TrainConfig):
    import torch

    has_cuda = torch.cuda.is_available()
    if config.device == "cuda" and not has_cuda:
        raise Unsupported("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here.",
                          hint="Use --device auto (CUDA when present, else CPU) or --device cpu.", param="device")
    device = "cuda" if has_cuda and config.device in ("auto", "cuda") else "cpu"
    return device, resolve_dtype(config, device)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render_file(path: str | Path, renderer: Renderer, context_length: int, param: str,
                model: str | None = None) -> list[Rendered]:
    """Every example of a file rendered and checked; any problem is a ``DataError`` naming the line."""
    path = Path(path)
    out = []
    checked_as = model if model in models.REGISTRY else None  # the data checks know registry models only
    for line, example in read_examples(path, model=checked_as, param=param):
        rendered = renderer.render(line, example)
        if len(rendered.input_ids) > context_length:
            raise DataError(
                f"{path}:{line}: the example is {len(rendered.input_ids)} tokens, longer than the model's context "
                f"of {context_length}.", hint="Shorten or split the example, or remove it.",
                code="example_too_long", param=param)
        out.append(rendered)
    if not out:
        raise DataError(f"{path} has no examples.", hint="Add chat examples, one JSON object per line.", param=param)
    return out


def _lineage(adapter_dir: Path) -> list[str]:
    """The models an adapter was itself continued from, oldest first (empty for one trained from its base)."""
    try:
        return list(json.loads((adapter_dir / "tunewise_model.json").read_text()).get("lineage") or [])
    except (OSError, ValueError):
        return []


def _base_model_name(spec: models.ModelSpec) -> str:
    """A registry name, a hub id, or (for a local directory) its absolute path: what loads the base again."""
    return spec.name


def _default_output_dir(config: TrainConfig) -> Path:
    from tunewise import paths

    name = Path(str(config.model)).name + (f"-{config.suffix}" if config.suffix else "")
    return paths.home() / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


# What must be the same for a run to continue in an existing output directory.
_RESUME_KEYS = ("base_model", "method", "objective", "grader", "hyperparameters", "training_file_sha256", "validation_file_sha256",
                "dtype", "lora", "weight_decay", "warmup_ratio", "max_grad_norm", "max_tokens_per_microbatch",
                "sharding", "packing")


# ---------------------------------------------------------------------------------------------------- the model


def _load(config: TrainConfig, seed: int, device: str, dtype: str):
    import torch

    torch.manual_seed(seed)  # LoRA's initialisation draws from it
    # bf16 training autocasts the matmuls to bf16. Full fine-tuning keeps fp32 master weights, and so does LoRA on
    # CPU: its residual stream and norms stay fp32 (the held-out loss within 1% of float32's, where bf16 weights
    # lost 12%). LoRA on CUDA keeps the frozen base in bf16 (half the memory). PEFT keeps the adapters in fp32.
    fp32_weights = dtype == "float32" or config.method == "full" or not device.startswith("cuda")
    load_dtype = torch.float32 if fp32_weights else torch.bfloat16
    model = models.load_model(config.model, dtype=load_dtype, device=device,
                              attn_implementation=attention_implementation(device, config.packing))
    model.config.use_cache = False
    if config.method == "lora" and config.init_adapter is not None:
        from peft import PeftModel

        # Continued fine-tuning: the adapter's trained weights are the starting point, and they keep training.
        model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
    elif config.method == "lora":
        from peft import LoraConfig, get_peft_model

        target = config.lora_target_modules
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=target if isinstance(target, str) else list(target),
                          bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    if config.method == "lora":
        from tunewise.train import fused_lora

        fused_lora.install(model)  # the same sums, the update added in one product (see fused_lora)
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass. Non-reentrant checkpointing needs no input
    gradients, so it works with frozen embeddings (LoRA) too."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def attention_implementation(device: str, packing: bool) -> str | None:
    """On CUDA: PyTorch's SDPA (its flash and memory-efficient kernels), or, for packed rows, flash-attention's
    variable-length kernel where the ``flash_attn`` package is installed (SDPA needs a block-diagonal mask there,
    which leaves the flash kernel). On CPU: transformers' default."""
    if not device.startswith("cuda"):
        return None
    if packing:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def _core_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.config.model_type in PLAIN_HEAD_MODEL_TYPES and hasattr(base, "model"):
        return base.model, base.get_output_embeddings()
    return None, None


def _sums(model, core, head, mb, device, forward=None):
    """Summed token loss, correct argmax count and labelled-token count of one micro-batch (SFT's loss, see
    ``methods.sft.token_sums``)."""
    from tunewise.train.methods.sft import token_sums

    return token_sums(model, core, head, mb, device, forward=forward)


def evaluate(model, examples: list[Rendered], *, max_tokens: int, pad_id: int, device: str,
             autocast_dtype=None) -> tuple[float, float]:
    """Mean token loss and token accuracy over the labelled tokens of ``examples``."""
    loss_sum, correct, count = _eval_sums(model, examples, max_tokens=max_tokens, pad_id=pad_id, device=device,
                                          autocast_dtype=autocast_dtype)
    return loss_sum / count, correct / count


def _eval_sums(model, examples: list[Rendered], *, max_tokens: int, pad_id: int, device: str,
               autocast_dtype=None, forward=None) -> tuple[float, int, int]:
    """Summed token loss, correct count and labelled-token count over ``examples`` (zeros for none)."""
    import torch

    core, head = _core_and_head(model)
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad(), _autocast(device, autocast_dtype):
        for mb in micro_batches(examples, max_tokens, pad_id, pad_slack(device)) if examples else []:
            loss, c, n = _sums(model, core, head, mb, device, forward=forward)
            loss_sum += loss.item()
            correct += c
            count += n
    model.train(was_training)
    return loss_sum, correct, count


def _autocast(device: str, dtype):
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _lr_at(step: int, total: int, base: float, warmup_ratio: float) -> float:
    """Linear warm-up from 0 over the first steps, then linear decay towards 0: the schedule of transformers'
    ``get_linear_schedule_with_warmup``, as a pure function of the step so a resumed run needs no scheduler state."""
    warmup = math.ceil(total * warmup_ratio)
    if step < warmup:
        return base * step / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def _csv_row(r: dict[str, Any], columns: tuple[str, ...]) -> list[str]:
    return [str(r["step"]), *(_fmt(r.get(c)) for c in METRICS_HEADER[1:]), *(_fmt(r.get(c)) for c in columns)]


def _write_metrics(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = ()) -> None:
    """``METRICS_HEADER``, then the method's own columns (none for SFT)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*METRICS_HEADER, *columns])
    for r in rows:
        writer.writerow(_csv_row(r, columns))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _append_metrics(path: Path, r: dict[str, Any], columns: tuple[str, ...] = ()) -> None:
    with path.open("a") as f:
        f.write(",".join(_csv_row(r, columns)) + "\n")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished temporary directory into place; a crash at any point leaves either the old or the new one
    (``target.old`` is picked up by the reader when ``target`` is missing)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def save_model_dir(model, tokenizer, target: Path, meta: dict[str, Any], state_dict=None) -> None:
    """A self-describing model directory: PEFT adapter or full HF model, tokenizer, ``tunewise_model.json``.
    ``state_dict``: the full weights where the model's own are sharded (FSDP)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if state_dict is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        (tmp / "tunewise_model.json").write_text(json.dumps(meta, indent=2, default=str))
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def openai_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row under the names of OpenAI's checkpoint ``metrics`` object. Validation here always covers the
    whole validation file, so ``full_valid_*`` equal ``valid_*`` where they were computed."""
    out = {"step": row["step"], "train_loss": row["train_loss"], "train_mean_token_accuracy": row["train_accuracy"],
           "valid_loss": row["valid_loss"], "valid_mean_token_accuracy": row["valid_mean_token_accuracy"]}
    if row["valid_loss"] is not None:
        out["full_valid_loss"] = row["valid_loss"]
        out["full_valid_mean_token_accuracy"] = row["valid_mean_token_accuracy"]
    return out


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_state(out: Path, model, optimizer, progress: dict[str, Any], group=None) -> None:
    """The resumable state. In a multi-process run every rank calls this at the same step (the random states of
    all ranks are gathered) and rank 0 alone writes."""
    import torch

    rng = _rng_state()
    extra = {}
    sharded = group is not None and group.sharding == "fsdp"
    if sharded:  # the full weights and optimizer state, gathered from the shards (every rank takes part)
        trainable, optimizer_state = distributed.full_state(model, optimizer)
        extra["optimizer_by_name"] = True
    if group is not None:
        extra["rng_ranks"] = group.gather(rng)
        extra["world_size"] = group.world
        if not group.main:
            return
    if not sharded:
        trainable = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        optimizer_state = optimizer.state_dict()
    tmp = Path(tempfile.mkdtemp(prefix=".state-", dir=out))
    try:
        with (tmp / "state.pt").open("wb") as f:
            torch.save({"trainable": trainable, "optimizer": optimizer_state, "rng": rng, **extra}, f)
            f.flush()
            os.fsync(f.fileno())
        (tmp / "progress.json").write_text(json.dumps(progress, default=str))
        _replace_dir(tmp, out / STATE)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_state(out: Path):
    import torch

    for name in (STATE, STATE + ".old"):
        d = out / name
        if (d / "state.pt").is_file() and (d / "progress.json").is_file():
            progress = json.loads((d / "progress.json").read_text())
            tensors = torch.load(d / "state.pt", map_location="cpu", weights_only=False)
            return progress, tensors
    return None, None


# ---------------------------------------------------------------------------------------------------- train


def _objective_text(config: TrainConfig, hyper: dict[str, Any]) -> str:
    """What the start message says of the loss beyond the weights trained (nothing for supervised)."""
    if config.objective == "dpo":
        return f" DPO (beta {hyper['beta']:g})"
    if config.objective == "grpo":
        return f" GRPO ({hyper['group_size']} completions per prompt, KL beta {hyper['kl_beta']:g})"
    return ""


def _count(n: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``, ``34,950 tokens``: thousands separated, the noun agreeing with the number."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def train(config: TrainConfig, on_event: EventCallback | None = None, stop=None) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.training_file``; resume if ``config.output_dir`` holds a saved state.

    ``on_event`` receives ``TrainEvent``s; ``stop`` (a ``threading.Event`` or a zero-argument callable) is checked
    between steps: when set, the state is saved and ``Cancelled`` raised. Errors in the input are raised before any
    training starts.

    Inside a multi-process launch (``torchrun``, ``accelerate launch``, ``tunewise train --nproc-per-node N``: the
    ``WORLD_SIZE`` variable says so) each process trains its share of every batch with DDP; rank 0 alone writes
    files and receives events, and the run's batches, schedule and metrics are those of one process.
    """
    config.validate()
    should_stop = _stop_check(stop)
    for param in ("training_file", "validation_file"):
        path = getattr(config, param)
        if path is not None and not Path(path).is_file():
            raise LocalFileNotFound(f"The {param.replace('_', ' ')} {path} does not exist.", hint="Check the path.",
                           param=param)
    spec = models.resolve(config.model)
    device, dtype = _device_and_dtype(config)
    if not distributed.is_distributed_env():
        if config.sharding == "fsdp":
            raise UsageError("sharding 'fsdp' splits the model over several processes, and this is one.",
                             hint="Add --nproc-per-node N (N >= 2), launch with torchrun, or leave --sharding out.",
                             param="sharding")
        return _train(config, spec, device, dtype, on_event or (lambda event: None), should_stop, None)
    if config.objective != "sft":
        raise Unsupported(f"{config.objective.upper()} trains in one process here; multi-process runs are "
                          "supervised only.", hint="Leave --nproc-per-node out (and launch without torchrun).",
                          param="nproc_per_node")
    group = distributed.join(device, config.collective_timeout_s, sharding=config.sharding)
    emit = (on_event or (lambda event: None)) if group.main else (lambda event: None)
    try:
        result = _train(config, spec, group.device, dtype, emit, should_stop, group)
    except DistributedError:
        raise  # the group is broken: tearing it down would wait on the process that is gone
    except BaseException:
        group.close()
        raise
    group.close()
    return result


def _train(config: TrainConfig, spec, device: str, dtype: str, emit: EventCallback, should_stop, group) -> TrainResult:
    main = group is None or group.main  # the process that writes files
    out = Path(config.output_dir) if config.output_dir else _default_output_dir(config)
    out = out.expanduser().resolve()
    if group is not None:
        out = Path(group.broadcast(str(out)))  # a default directory's time stamp is rank 0's
    saved = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
    if saved:  # "auto" resumes in the dtype the run started with (older runs: float32 on every CPU)
        dtype = resolve_dtype(config, device, saved.get("dtype"))
    tokenizer = models.load_tokenizer(config.model)
    renderer = Renderer(tokenizer, model_name=spec.name)
    method = methods.get(config)
    train_set = method.render_file(config.training_file, renderer, spec.context_length, "training_file", config.model)
    valid_set = (method.render_file(config.validation_file, renderer, spec.context_length, "validation_file",
                                    config.model) if config.validation_file else [])

    base_lr = (spec.learning_rate if config.method == "lora" else spec.full_learning_rate) * method.lr_scale
    hyper = resolve_hyperparameters(config, len(train_set), base_lr)
    if hyper["seed"] is None:
        hyper["seed"] = saved["hyperparameters"]["seed"] if saved else random.SystemRandom().randrange(2**31)
        if group is not None:
            hyper["seed"] = group.broadcast(hyper["seed"])
    seed = hyper["seed"]
    world = group.world if group is not None else 1
    resolved = {
        "training_file": str(Path(config.training_file).resolve()),
        "training_file_sha256": _sha256(Path(config.training_file)),
        "validation_file": str(Path(config.validation_file).resolve()) if config.validation_file else None,
        "validation_file_sha256": _sha256(Path(config.validation_file)) if config.validation_file else None,
        "model": str(config.model), "base_model": _base_model_name(spec), "method": config.method,
        "hyperparameters": hyper, "suffix": config.suffix, "output_dir": str(out), "device": device.split(":")[0],
        "dtype": dtype, "lora": ({"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                                  "target_modules": config.lora_target_modules}
                                 if config.method == "lora" else None),
        "weight_decay": config.weight_decay, "warmup_ratio": config.warmup_ratio,
        "max_grad_norm": config.max_grad_norm, "max_tokens_per_microbatch": config.max_tokens_per_microbatch,
        "eval_every_steps": config.eval_every_steps, "save_state_every_steps": config.save_state_every_steps,
        "keep_checkpoints": config.keep_checkpoints, "n_train_examples": len(train_set),
        "init_adapter": str(Path(config.init_adapter).resolve()) if config.init_adapter else None,
        "n_valid_examples": len(valid_set), "base_model_dir": str(models.local_dir(config.model)),
    }
    if group is not None:
        resolved["world_size"] = world
    if config.sharding == "fsdp":
        resolved["sharding"] = "fsdp"  # a resume key: its state is saved by name
    if config.packing:
        resolved["packing"] = True  # a resume key (recorded only when on, so older runs still resume)
    if config.objective != "sft":
        resolved["objective"] = config.objective  # a resume key (recorded only for DPO, so older runs resume)
    if config.grader is not None:
        resolved["grader"] = config.grader  # a resume key (GRPO's reward)
    if saved:
        changed = [k for k in _RESUME_KEYS if json.loads(json.dumps(saved.get(k), default=str))
                   != json.loads(json.dumps(resolved.get(k), default=str))]
        if changed:
            raise Conflict(f"{out} holds a different run (it differs in: {', '.join(changed)}).",
                           hint="Use another --output directory, or delete this one to start over.",
                           param="output_dir")
        if (out / "result.json").is_file():
            emit(TrainEvent("message", f"Training already finished in {out}"))
            return TrainResult.from_dict(json.loads((out / "result.json").read_text()))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", resolved)
        # Temporary directories of a process killed mid-write: never complete, never read.
        for tmp in [*out.glob(".state-*"), *out.glob(".final-*"), *out.glob("checkpoints/.step-*")]:
            shutil.rmtree(tmp, ignore_errors=True)

    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    steps = plan([method.length(e) for e in train_set], hyper["batch_size"], hyper["n_epochs"], seed)
    total = len(steps)
    model = _load(config, seed, device, dtype)
    model.train()
    # bf16 autocast for every bf16 run: the matmuls (base and LoRA alike) run in bf16 over fp32 weights (or the bf16
    # base on CUDA). On CPU that is what makes bf16 pay: bf16 weights without autocast ran slower than float32, as
    # PEFT computes the fp32 adapters beside them in fp32 and casts at every layer (bench/train.py, docs/train.md).
    autocast_dtype = torch.bfloat16 if dtype == "bfloat16" else None
    core, head = _core_and_head(model)
    pad_id = tokenizer.pad_token_id
    progress, state = _load_state(out)
    ctx = StepContext(device=device, pad_id=pad_id, max_tokens=config.max_tokens_per_microbatch,
                      autocast_dtype=autocast_dtype, packing=config.packing, core=core, head=head, seed=seed)
    # What the method computes once from the starting model (DPO's reference), before any saved weights go in.
    method.prepare(model, train_set, valid_set, out, ctx, main,
                   lambda text, level="info": emit(TrainEvent("message", text, level=level)))
    if progress:  # the saved weights go in before the model is wrapped or sharded
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                named[name].copy_(tensor)
    ddp = None
    if group is not None:
        labelled = distributed.labelled_module(model, core, head)
        ddp = (distributed.shard(labelled, core, group) if group.sharding == "fsdp"
               else distributed.wrap(labelled, group))
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP's sharded parameters, where sharded
    optimizer = torch.optim.AdamW(params, lr=hyper["learning_rate"], weight_decay=config.weight_decay)

    metrics_csv = out / "metrics.csv"
    if progress:
        if state.get("optimizer_by_name") or (group is not None and group.sharding == "fsdp"):
            distributed.load_optimizer(model, optimizer, state["optimizer"])
        else:
            optimizer.load_state_dict(state["optimizer"])
        ranks = state.get("rng_ranks")
        _set_rng_state(ranks[group.rank] if group is not None and ranks and len(ranks) == world else state["rng"])
        start = progress["step"]
        # Anything written after the saved state (a kill between saves) is redone identically.
        if main:
            for d in (out / "checkpoints").glob("step-*") if (out / "checkpoints").is_dir() else []:
                if int(d.name.split("-")[1]) > start:
                    shutil.rmtree(d)
        saved_world = state.get("world_size", 1)
        emit(TrainEvent("message", f"Training resumed from step {start}/{total}"
                        + (f" on {world} process{'es' if world > 1 else ''} (saved by {saved_world}; the batches "
                           "and schedule do not depend on the number of processes)" if saved_world != world else "")))
    else:
        progress = {"step": 0, "trained_tokens": 0, "rows": [], "checkpoints": [], "real_tokens": 0,
                    "padded_tokens": 0}
        start = 0
        emit(TrainEvent("message", f"Training started: {_count(len(train_set), 'example')}, "
                        f"{_count(hyper['n_epochs'], 'epoch')}, batch size {hyper['batch_size']}, "
                        f"{_count(total, 'step')}, {config.method}"
                        + _objective_text(config, hyper)
                        + f" on {device} ({dtype})"
                        + (f", {world} processes" if group is not None else "")))
    if main:
        _write_metrics(metrics_csv, progress["rows"], method.columns)
    lengths = [len(e.input_ids) for e in train_set] if method.name == "sft" else []
    sharded = group is not None and group.sharding == "fsdp"

    meta_base = {"base_model": resolved["base_model"], "method": config.method, "suffix": config.suffix,
                 "train_config": resolved}
    if config.objective != "sft":
        meta_base["objective"] = config.objective
    if config.init_adapter is not None:
        meta_base["parent_model"] = config.parent_model
        meta_base["lineage"] = [*_lineage(Path(config.init_adapter)), config.parent_model or str(config.init_adapter)]
    t0 = time.monotonic()
    last_saved = start
    eval_every = hyper.get("eval_interval") or config.eval_every_steps
    try:
        for i in range(start, total):
            stopping = should_stop()
            if group is not None:
                stopping = group.any(stopping)  # every rank stops at the same step
            if stopping:
                if last_saved != i:
                    _save_state(out, model, optimizer, progress, group)
                emit(TrainEvent("message", f"Training stopped at step {i}/{total}; state saved", level="warn"))
                stopped = Cancelled(f"Training stopped at step {i} of {total}; the state is saved in {out}.",
                                    hint=f"Train again with output_dir={out} to resume.")
                stopped.output_dir = out
                raise stopped
            epoch, indices = steps[i]
            batch = [train_set[j] for j in indices]
            for group_ in optimizer.param_groups:
                group_["lr"] = _lr_at(i, total, hyper["learning_rate"], config.warmup_ratio)
            optimizer.zero_grad(set_to_none=True)
            if group is None:
                stats = method.step(model, batch, ctx, progress)
            else:
                n_labels = sum(e.n_labels for e in batch)
                loss_sum, correct = _distributed_step(model, core, head, ddp, group, indices, lengths, train_set,
                                                      n_labels, config, pad_id, device, autocast_dtype, progress)
                stats = {"train_loss": loss_sum / n_labels, "train_accuracy": correct / n_labels}
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            progress["step"] = i + 1
            progress["trained_tokens"] += sum(method.tokens(e) for e in batch)
            epoch_end = i + 1 == total or steps[i + 1][0] != epoch
            row = {"step": i + 1, "valid_loss": None, "valid_mean_token_accuracy": None,
                   **{c: None for c in method.columns}, **stats}
            if valid_set and (epoch_end or (eval_every and (i + 1) % eval_every == 0)):
                if group is None:
                    row.update(method.evaluate(model, valid_set, ctx))
                else:  # each rank evaluates a share; the sums are added up
                    sums = _eval_sums(model, valid_set[group.rank::world], max_tokens=config.max_tokens_per_microbatch,
                                      pad_id=pad_id, device=device, autocast_dtype=autocast_dtype,
                                      forward=ddp if sharded else None)
                    v_loss, v_correct, v_count = group.all_sum(list(sums))
                    row["valid_loss"], row["valid_mean_token_accuracy"] = v_loss / v_count, v_correct / v_count
            progress["rows"].append(row)
            if main:
                _append_metrics(metrics_csv, row, method.columns)
            elapsed = time.monotonic() - t0
            done_here = i + 1 - start
            emit(TrainEvent("metrics", f"step {i + 1}/{total}: loss {row['train_loss']:.4f}", data={
                "step": i + 1, "total_steps": total, "epoch": epoch + 1, "train_loss": row["train_loss"],
                "train_mean_token_accuracy": row["train_accuracy"], "valid_loss": row["valid_loss"],
                "valid_mean_token_accuracy": row["valid_mean_token_accuracy"],
                "trained_tokens": progress["trained_tokens"], "elapsed_s": elapsed,
                "eta_s": elapsed / done_here * (total - i - 1), "learning_rate": optimizer.param_groups[0]["lr"],
                **{c: row[c] for c in method.columns}}))
            if epoch_end:
                path = out / "checkpoints" / f"step-{i + 1}"
                weights = distributed.full_state(model)[0] if sharded else None  # every rank gathers
                if main:
                    save_model_dir(model, tokenizer, path, {**meta_base, "step": i + 1, "epoch": epoch + 1},
                                   state_dict=weights)
                record = {"step": i + 1, "path": str(path), "metrics": openai_metrics(row)}
                progress["checkpoints"].append(record)
                if main:
                    for old in progress["checkpoints"][:-config.keep_checkpoints]:
                        shutil.rmtree(old["path"], ignore_errors=True)
                progress["checkpoints"] = progress["checkpoints"][-config.keep_checkpoints:]
                emit(TrainEvent("checkpoint", f"Checkpoint saved at step {i + 1}", data=record))
                emit(TrainEvent("message", f"Epoch {epoch + 1}/{hyper['n_epochs']} done"))
            if epoch_end or (i + 1) % config.save_state_every_steps == 0:
                _save_state(out, model, optimizer, progress, group)
                last_saved = i + 1
    except Exception as exc:
        if group is not None and not isinstance(exc, Cancelled) and distributed.is_collective_failure(exc):
            raise distributed.collective_error(group, exc, progress["step"] + 1, last_saved, out) from exc
        raise
    finally:
        if hasattr(method, "close"):
            method.close()

    final = out / "final"
    weights = distributed.full_state(model)[0] if sharded else None
    if main:
        save_model_dir(model, tokenizer, final, {**meta_base, "step": total, "epoch": hyper["n_epochs"]},
                       state_dict=weights)
    waste = 1 - progress["real_tokens"] / progress["padded_tokens"] if progress["padded_tokens"] else 0.0
    result = TrainResult(
        output_dir=out, model_dir=final, method=config.method, base_model=resolved["base_model"],
        trained_tokens=progress["trained_tokens"], hyperparameters=hyper, metrics_csv=metrics_csv,
        checkpoints=progress["checkpoints"], metrics=openai_metrics(progress["rows"][-1]), padding_waste=waste, steps=total)
    if main:
        _write_json(out / "result.json", result.to_dict())
        shutil.rmtree(out / STATE, ignore_errors=True)
    if group is not None:
        group.barrier()  # no rank returns before rank 0 has written the result
    emit(TrainEvent("message", f"Training finished: {_count(total, 'step')}, "
                    f"{_count(progress['trained_tokens'], 'token')}, "
                    f"padding waste {waste:.1%}; model in {final}"))
    return result


def _distributed_step(model, core, head, ddp, group, indices, lengths, train_set, n_labels, config, pad_id, device,
                      autocast_dtype, progress) -> tuple[float, int]:
    """This rank's share of one global batch, forward and backward through DDP; the batch's sums over all ranks.

    DDP averages the gradients over ranks, so each rank's loss is weighted ``world / n_labels`` (``n_labels``: the
    labelled tokens of the whole batch): the average is then the gradient of the whole batch's mean token loss,
    as in one process. Every rank runs the same number of synchronising backward passes (one, the last
    micro-batch; the others under ``no_sync``); a rank whose share is empty runs one on an example weighted 0."""
    mine = [train_set[j] for j in distributed.share(indices, lengths, group.rank, group.world)]
    weight = group.world / n_labels
    if not mine:
        mine, weight = [train_set[indices[0]]], 0.0
    mbs = split_batch(mine, config.max_tokens_per_microbatch, pad_id, packing=config.packing, device=device)
    loss_sum, correct, real, padded = 0.0, 0, 0, 0
    for mb, sync in zip(mbs, distributed.sync_points(len(mbs), ddp), strict=True):
        with sync:
            with _autocast(device, autocast_dtype):
                loss, c, _ = _sums(model, core, head, mb, device, forward=ddp)
            (loss * weight).backward()
        if weight:
            loss_sum += loss.item()
            correct += c
            real += mb.real_tokens
            padded += mb.padded_tokens
    loss_sum, correct, real, padded = group.all_sum([loss_sum, correct, real, padded])
    progress["real_tokens"] += int(real)
    progress["padded_tokens"] += int(padded)
    return loss_sum, int(correct)


# ---------------------------------------------------------------------------------------------------- export


def export_merged(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter written by ``train`` into its base model and save a plain HF model directory."""
    import torch
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    meta_path = adapter_dir / "tunewise_model.json"
    if not (adapter_dir / "adapter_config.json").is_file() or not meta_path.is_file():
        raise UsageError(f"{adapter_dir} is not a LoRA adapter written by tunewise (adapter_config.json and "
                         "tunewise_model.json expected).", hint="Pass OUTPUT/final of a LoRA run.",
                         param="adapter_dir")
    meta = json.loads(meta_path.read_text())
    base = models.load_model(meta["base_model"], dtype=torch.float32, device="cpu")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    out_dir = Path(out_dir).expanduser().resolve()
    save_model_dir(merged, tokenizer, out_dir, {**meta, "method": "full", "merged_from": str(adapter_dir.resolve())})
    return out_dir

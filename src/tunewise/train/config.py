"""The trainer's typed configuration, its events and its result.

``TrainConfig`` is what a caller asks for (OpenAI's hyperparameters, ``"auto"`` allowed); ``resolve_hyperparameters``
turns the ``"auto"`` values into numbers by the rules below, which the README states too. The resolved config is
saved as ``OUTPUT/config.json`` and beside every checkpoint, so each output describes itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunewise.errors import UsageError

MAX_EPOCHS = 25
# batch_size "auto": about 0.2% of the examples, clamped to this range (OpenAI's documented maximum is 256).
AUTO_BATCH_FRACTION = 0.002
MAX_BATCH_SIZE = 256
MAX_EVAL_SAMPLES = 64  # GRPO: completions per validation prompt (each one a generation)

Method = Literal["lora", "full"]
Objective = Literal["sft", "dpo", "grpo"]
REASONING_EFFORTS = ("default", "low", "medium", "high")


@dataclass
class TrainConfig:
    training_file: str | Path
    """Chat JSONL in OpenAI's fine-tuning format (one ``{"messages": [...]}`` per line)."""
    validation_file: str | Path | None = None
    """Optional chat JSONL for ``valid_loss`` and ``valid_mean_token_accuracy``."""
    model: str = "smollm2-135m-instruct"
    """A registry name (``tunewise models``), a local Hugging Face model directory, or a hub id."""
    method: Method = "lora"
    """``lora`` trains a PEFT LoRA adapter (small, fast); ``full`` trains every weight."""
    objective: Objective = "sft"
    """What the loss is (``tunewise.train.methods``): ``sft`` (supervised, chat or prompt/completion data) or
    ``dpo`` (direct preference optimization, preference data, OpenAI's ``method.type`` "dpo") or ``grpo``
    (reinforcement fine-tuning: completions sampled and graded, OpenAI's ``method.type`` "reinforcement"; needs
    ``grader``); ``method`` says which weights train either way."""
    beta: float | Literal["auto"] = "auto"
    """DPO's beta (OpenAI's range: above 0, at most 2): how strongly the policy is held to the reference.
    ``auto``: 0.1. Only for ``objective="dpo"``."""
    grader: dict[str, Any] | None = None
    """GRPO's grader, an OpenAI grader object (``tunewise.eval.graders``: string_check, text_similarity, python,
    score_model, multi); its reward is what training raises. Only for ``objective="grpo"``, which needs it."""
    grader_base_url: str | None = None
    """GRPO with a model grader (``score_model``, or a ``multi`` holding a ``score_model``/``label_model``): the
    OpenAI-compatible endpoint its judge model is asked at (``http://127.0.0.1:8000/v1`` for a ``tunewise serve``),
    which such a grader needs. Not part of the run's identity: a resumed run may ask another endpoint."""
    grader_api_key: str | None = field(default=None, repr=False)
    """The API key for ``grader_base_url`` (None: ``OPENAI_API_KEY``). Never written to the run's files."""
    grader_concurrency: int = 8
    """GRPO with a model grader: judge requests in flight at once while a step's completions are graded."""
    compute_multiplier: float | Literal["auto"] = "auto"
    """GRPO (OpenAI's range: above 0, at most 10): completions sampled per prompt, the group size
    ``G = max(2, round(4 * compute_multiplier))``. ``auto``: 1.0 (G = 4)."""
    eval_interval: int | Literal["auto"] = "auto"
    """GRPO: training steps between validation runs. ``auto``: the steps of one epoch (validation at each epoch
    end)."""
    eval_samples: int | Literal["auto"] = "auto"
    """GRPO: completions sampled (and graded) per validation prompt. ``auto``: 1."""
    reasoning_effort: str = "default"
    """OpenAI's reasoning_effort (default, low, medium, high) for reasoning models: accepted and recorded, no
    effect on the local models, which do not reason before answering."""
    kl_beta: float = 0.04
    """GRPO: the KL penalty's coefficient (TRL's ``GRPOConfig.beta``; 0.04 is the GRPO paper's and TRL's
    original default), holding the policy to the reference model. 0 drops the penalty (``kl`` is still
    reported)."""
    max_completion_tokens: int = 256
    """GRPO: the longest completion sampled (TRL's ``max_completion_length``); a longer one is cut there."""
    temperature: float = 1.0
    """GRPO: the sampling temperature of the training completions (TRL's default, 1.0)."""
    n_epochs: int | Literal["auto"] = "auto"
    """Passes over the training data. ``auto``: 3, raised so at least 100 examples are seen, lowered so at most
    25,000 are, clamped to 1..25 (OpenAI's rule)."""
    batch_size: int | Literal["auto"] = "auto"
    """Examples per optimizer step. ``auto``: 0.2% of the training examples, clamped to 1..256."""
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    """Scales the model's base learning rate from the registry (LoRA and full each have one). ``auto``: 1.0."""
    seed: int | None = None
    """Makes a run reproducible (data order, LoRA initialisation). ``None``: a random seed, recorded in config.json."""
    suffix: str | None = None
    """Up to 64 characters recorded in the output's metadata (OpenAI puts it in the model name)."""
    output_dir: str | Path | None = None
    """Where everything is written; ``None``: ``$TUNEWISE_HOME/runs/<model>-<suffix>-<time>``. Training again into the
    same directory resumes from its last saved state."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when present, else CPU. ``cuda`` without a GPU is an error."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Training precision. ``auto``: bfloat16 on CUDA, float32 on CPU (``resolve_dtype``: bfloat16 would become the
    CPU default only with a held-out loss within 1% of float32's on ``bench/train.py``, which it is not yet).
    ``bfloat16`` runs the matrix products under bf16 autocast over float32 weights; on a CPU with bf16 instructions
    (``cpu_has_bf16``) that is much faster (see docs/train.md), at bf16's precision. The adapter is kept and saved
    in float32 either way."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input; 0 keeps steps deterministic and cheaper."""
    lora_target_modules: tuple[str, ...] | str = "all-linear"
    """Modules that get adapters: ``all-linear`` (every linear layer but the LM head) or a list of names."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.03
    """Fraction of the steps over which the learning rate rises linearly from 0; it then decays linearly to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global L2 norm); 0 disables it."""
    max_tokens_per_microbatch: int = 1024
    """Token budget (rows x padded length) of one forward pass; a batch larger than this is split into micro-batches
    whose gradients are accumulated, so memory stays bounded whatever the batch size. Activations are most of the
    memory (SmolLM2-135M, LoRA, float32: roughly 2 GB per 1,000 tokens), so the default keeps a pass near that."""
    eval_every_steps: int | None = None
    """Compute the validation loss every N steps as well as at each epoch end; ``None``: only at epoch ends."""
    save_state_every_steps: int = 20
    """Write the resumable state every N steps (and at each epoch end and on a stop)."""
    keep_checkpoints: int = 3
    """Epoch-end checkpoints kept (the last N, like OpenAI)."""
    num_threads: int | None = None
    """CPU threads for PyTorch; ``None`` leaves PyTorch's default."""
    packing: bool = False
    """Padding-free batches: the examples of a micro-batch are concatenated into one row (up to
    ``max_tokens_per_microbatch`` tokens) with position ids restarting at each example, so no example attends to
    another and the loss is that of the unpacked batch; no compute goes to padding. Pays most on a GPU with
    flash-attention (a variable-length kernel); with SDPA or eager attention the isolation is a block-diagonal mask."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them: much less memory
    for long sequences or large batches (on a GPU, room for a bigger ``max_tokens_per_microbatch``), about a third
    more compute per step. The run's arithmetic is unchanged (the same losses), so it is not part of what a resumed
    run must match."""
    sharding: Literal["ddp", "fsdp"] = "ddp"
    """In a multi-process run: ``ddp`` (every process holds the whole model; LoRA and full) or ``fsdp`` (PyTorch's
    fully sharded data parallel: weights, gradients and optimizer state split over the processes, for models that
    do not fit one device; ``method="full"`` only)."""
    init_adapter: str | Path | None = None
    """Continued fine-tuning: a LoRA adapter directory written by tunewise (a fine-tuned model or a checkpoint) to
    start from instead of a fresh adapter; ``model`` must be its base model. ``None``: a new adapter."""
    parent_model: str | None = None
    """The name of the model ``init_adapter`` holds (``ft:...``), recorded with the lineage in the output's
    ``tunewise_model.json``."""
    collective_timeout_s: float = 300.0
    """In a multi-process run (``torchrun``, ``--nproc-per-node``): seconds a collective operation (the gradient
    all-reduce of a step, the sums of the metrics) waits for the other processes before the run fails with an error
    naming the rank. It must exceed the longest gap between two steps (a checkpoint, an evaluation)."""

    def validate(self) -> None:
        """Raise ``UsageError`` for a value that cannot work, before anything is loaded."""
        if self.method not in ("lora", "full"):
            raise UsageError(f"method must be 'lora' or 'full', not {self.method!r}.", param="method")
        if self.objective not in ("sft", "dpo", "grpo"):
            raise UsageError(f"objective must be 'sft', 'dpo' or 'grpo', not {self.objective!r}.",
                             param="objective")
        self._validate_grpo()
        b = self.beta
        if b != "auto" and (isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b <= 2):
            raise UsageError(f"beta must be 'auto' or a number in (0, 2], not {b!r}.", param="beta")
        if b != "auto" and self.objective != "dpo":
            raise UsageError("beta is DPO's hyperparameter; supervised training has none.",
                             hint="Use --method dpo, or leave --beta out.", param="beta")
        if self.objective == "dpo" and self.packing:
            raise UsageError("packing is for supervised training; DPO keeps each answer in a row of its own.",
                             hint="Leave --packing out.", param="packing")
        _check_auto_int("n_epochs", self.n_epochs, 1, MAX_EPOCHS)
        _check_auto_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        m = self.learning_rate_multiplier
        if m != "auto" and (isinstance(m, bool) or not isinstance(m, int | float) or not 0 < m <= 100):
            raise UsageError(f"learning_rate_multiplier must be 'auto' or a number in (0, 100], not {m!r}.",
                             param="learning_rate_multiplier")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**31):
            raise UsageError(f"seed must be an integer in 0..2147483647, not {self.seed!r}.", param="seed")
        if self.suffix is not None and len(self.suffix) > 64:
            raise UsageError("suffix is at most 64 characters.", param="suffix")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device must be auto, cpu or cuda, not {self.device!r}.", param="device")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UsageError(f"dtype must be auto, float32 or bfloat16, not {self.dtype!r}.", param="dtype")
        for name in ("lora_r", "lora_alpha", "max_tokens_per_microbatch", "save_state_every_steps",
                     "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, not {value!r}.", param=name)
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise UsageError("eval_every_steps must be a positive integer or None.", param="eval_every_steps")
        if self.sharding not in ("ddp", "fsdp"):
            raise UsageError(f"sharding must be ddp or fsdp, not {self.sharding!r}.", param="sharding")
        if self.init_adapter is not None:
            if self.method != "lora":
                raise UsageError("init_adapter continues a LoRA adapter; it needs method 'lora'.", param="method")
            if not (Path(self.init_adapter) / "adapter_config.json").is_file():
                raise UsageError(f"{self.init_adapter} is not a LoRA adapter (no adapter_config.json).",
                                 hint="Pass a fine-tuned model's or a checkpoint's directory.", param="init_adapter")
        if self.sharding == "fsdp" and self.method != "full":
            raise UsageError("sharding 'fsdp' is for method 'full'; LoRA trains few weights and keeps DDP.",
                             hint="Use --method full with --sharding fsdp, or leave --sharding out.", param="sharding")
        t = self.collective_timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0:
            raise UsageError(f"collective_timeout_s must be a positive number of seconds, not {t!r}.",
                             param="collective_timeout_s")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise UsageError("warmup_ratio and lora_dropout must be in [0, 1).")


    def _validate_grpo(self) -> None:
        grpo = self.objective == "grpo"
        if grpo and self.grader is None:
            raise UsageError("Reinforcement fine-tuning needs a grader: what rewards a completion.",
                             hint="Pass --grader GRADER.json (an OpenAI grader object; see docs/graders.md).",
                             param="grader")
        if not grpo:
            for name, default in (("grader", None), ("compute_multiplier", "auto"), ("eval_interval", "auto"),
                                  ("eval_samples", "auto"), ("reasoning_effort", "default")):
                if getattr(self, name) != default:
                    raise UsageError(f"{name} is a reinforcement fine-tuning option; this run is {self.objective}.",
                                     hint="Use --method reinforcement, or leave it out.", param=name)
            return
        from tunewise.train.methods.grpo import uses_model

        if uses_model(self.grader) and not self.grader_base_url:
            raise UsageError("The grader asks a judge model (score_model or label_model), and no judge endpoint "
                             "was given.", hint="Pass --grader-base-url URL (TrainConfig.grader_base_url): an "
                             "OpenAI-compatible endpoint such as a running `tunewise serve` "
                             "(http://127.0.0.1:8000/v1), with its key in --grader-api-key-env's variable.",
                             param="grader_base_url")
        c = self.grader_concurrency
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 256:
            raise UsageError(f"grader_concurrency must be an integer in 1..256, not {c!r}.",
                             param="grader_concurrency")
        if self.packing:
            raise UsageError("packing is for supervised training; reinforcement fine-tuning samples its own "
                             "completions.", hint="Leave --packing out.", param="packing")
        m = self.compute_multiplier
        if m != "auto" and (isinstance(m, bool) or not isinstance(m, int | float) or not 0 < m <= 10):
            raise UsageError(f"compute_multiplier must be 'auto' or a number in (0, 10], not {m!r}.",
                             param="compute_multiplier")
        _check_auto_int("eval_interval", self.eval_interval, 1, 10**9)
        _check_auto_int("eval_samples", self.eval_samples, 1, MAX_EVAL_SAMPLES)
        if self.reasoning_effort not in REASONING_EFFORTS:
            raise UsageError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, not "
                             f"{self.reasoning_effort!r}.", param="reasoning_effort")
        b = self.kl_beta
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 10:
            raise UsageError(f"kl_beta must be a number in [0, 10], not {b!r}.", param="kl_beta")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 2:
            raise UsageError(f"temperature must be in (0, 2] (sampling; 0 would make every completion of a group "
                             f"the same), not {t!r}.", param="temperature")
        n = self.max_completion_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"max_completion_tokens must be a positive integer, not {n!r}.",
                             param="max_completion_tokens")


def _check_auto_int(name: str, value: Any, low: int, high: int) -> None:
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name} must be 'auto' or an integer in {low}..{high}, not {value!r}.", param=name)


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's rule: 3 epochs, adjusted so that 100..25,000 examples are seen, within 1..25. One rule for
    the trainer and for the cost estimate, so a job trains the epochs it was priced for."""
    from tunewise.cost import auto_epochs

    return auto_epochs(n_examples)


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples, within 1..256: small data gets many small steps."""
    return max(1, min(MAX_BATCH_SIZE, round(n_examples * AUTO_BATCH_FRACTION)))


# Whether ``dtype="auto"`` may pick bfloat16 for supervised LoRA on a CPU with bf16 instructions. The rule: only while
# bench/train.py's held-out loss with bfloat16 stays within 1% of float32's on the same run. Measured: +11.3% (0.2251
# vs 0.2023, 16 receipts examples, batch 4, one epoch; +11.2% again on another bf16 CPU, and +1.56% on a 36-step run
# there, where bfloat16 was no faster), so float32 stays the CPU default; bfloat16 is asked for.
CPU_AUTO_BF16 = False


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles) through oneDNN, which PyTorch's CPU
    matmuls use for bfloat16. Without those instructions bfloat16 is emulated and slower than float32."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except RuntimeError:  # a build without the CPU feature probes
        return False


def resolve_dtype(config: TrainConfig, device: str, saved: str | None = None) -> str:
    """The training dtype for ``config.dtype`` on ``device``: an explicit value as given; ``auto`` is bfloat16 on
    CUDA and float32 on CPU, unless ``CPU_AUTO_BF16`` (the 1% rule) allows bfloat16 for supervised LoRA where
    ``cpu_has_bf16``. ``saved``: the dtype of the run being resumed, which ``auto`` keeps so a run continues as it
    started."""
    if config.dtype != "auto":
        return config.dtype
    if saved in ("float32", "bfloat16"):
        return saved
    if device.startswith("cuda"):
        return "bfloat16"
    if CPU_AUTO_BF16 and config.method == "lora" and config.objective == "sft" and cpu_has_bf16():
        return "bfloat16"
    return "float32"


def resolve_hyperparameters(config: TrainConfig, n_examples: int, base_learning_rate: float) -> dict[str, Any]:
    """Numbers for every ``auto``: n_epochs, batch_size, learning_rate_multiplier and the learning rate itself."""
    n_epochs = auto_n_epochs(n_examples) if config.n_epochs == "auto" else int(config.n_epochs)
    batch_size = auto_batch_size(n_examples) if config.batch_size == "auto" else int(config.batch_size)
    batch_size = min(batch_size, n_examples)  # a batch larger than the data is the whole data
    multiplier = 1.0 if config.learning_rate_multiplier == "auto" else float(config.learning_rate_multiplier)
    out = {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": multiplier,
        "learning_rate": multiplier * base_learning_rate,
        "seed": config.seed,
    }
    if config.objective == "dpo":
        from tunewise.train.methods.dpo import resolve_beta

        out["beta"] = resolve_beta(config.beta)
    if config.objective == "grpo":
        from tunewise.train.methods.grpo import resolve

        out.update(resolve(config, n_examples, batch_size))
    return out


@dataclass
class TrainEvent:
    """Something a caller may show or record: a human line, a step's metrics or a saved checkpoint."""

    type: Literal["message", "metrics", "checkpoint"]
    """``message``: a human line; ``metrics``: one step (``data`` has step, total_steps, epoch, train_loss,
    train_mean_token_accuracy, valid_loss, valid_mean_token_accuracy, trained_tokens, elapsed_s, eta_s);
    ``checkpoint``: an epoch-end checkpoint (``data`` has step, path, metrics)."""
    message: str
    level: Literal["info", "warn", "error"] = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    output_dir: Path
    """The run's directory (config.json, metrics.csv, checkpoints/, final/)."""
    model_dir: Path
    """The final artifact: a PEFT adapter (LoRA) or a full HF model directory, each with tunewise_model.json."""
    method: str
    base_model: str
    """Registry name, or the absolute path of the base model directory."""
    trained_tokens: int
    """Tokens processed in training (every token of every example, times the epochs)."""
    hyperparameters: dict[str, Any]
    """Resolved n_epochs, batch_size, learning_rate_multiplier, learning_rate, seed."""
    metrics_csv: Path
    checkpoints: list[dict[str, Any]]
    """Kept epoch-end checkpoints, oldest first: ``{"step", "path", "metrics"}``."""
    metrics: dict[str, Any]
    """The last step's metrics under OpenAI's names (step, train_loss, train_mean_token_accuracy, valid_loss,
    valid_mean_token_accuracy, and full_valid_loss, full_valid_mean_token_accuracy with a validation file)."""
    padding_waste: float = 0.0
    """Share of the tokens fed to the model that were padding (length-grouped batches keep it small)."""
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir), "model_dir": str(self.model_dir), "method": self.method,
            "base_model": self.base_model, "trained_tokens": self.trained_tokens,
            "hyperparameters": self.hyperparameters, "metrics_csv": str(self.metrics_csv),
            "checkpoints": self.checkpoints, "metrics": self.metrics, "padding_waste": self.padding_waste,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        return cls(output_dir=Path(d["output_dir"]), model_dir=Path(d["model_dir"]), method=d["method"],
                   base_model=d["base_model"], trained_tokens=d["trained_tokens"],
                   hyperparameters=d["hyperparameters"], metrics_csv=Path(d["metrics_csv"]),
                   checkpoints=d["checkpoints"], metrics=d["metrics"], padding_waste=d.get("padding_waste", 0.0),
                   steps=d.get("steps", 0))

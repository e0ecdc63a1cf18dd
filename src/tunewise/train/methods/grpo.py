"""Reinforcement fine-tuning (OpenAI's ``method.type`` "reinforcement") trained as GRPO.

GRPO (group relative policy optimization; DeepSeekMath, Shao et al. 2024, as TRL's ``GRPOTrainer`` implements it)
needs no answers in the data: for each prompt of a batch the policy samples a group of ``G`` completions, the
grader scores each one, and each completion's advantage is its reward relative to its group's:

    A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)            (std with Bessel's correction, as TRL)

The loss is the policy gradient on the completion tokens plus a KL penalty to the reference model, averaged over
every completion token of the batch (a token-level mean, TRL's ``loss_type="bnpo"``):

    loss = sum_t [ -exp(logp_t - stop_grad(logp_t)) * A_i + beta * kl_t ] / (completion tokens of the batch)
    kl_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                 (the k3 estimator, >= 0)

One policy step per batch (TRL's ``num_iterations=1``): the completions were sampled from the very weights being
updated, so the PPO ratio is exactly 1 (its clipping never acts) and the gradient is that of ``-A * logp``.
``beta`` is ``TrainConfig.kl_beta`` (0.04: the paper's and TRL's original default; TRL now defaults to 0). The
reference is the model training starts from: the base with the adapter disabled for a new LoRA adapter, else a
frozen copy of the starting weights taken before the first step. The completions of a prompt all begin with it,
so the loss's passes run the prompt once and repeat its keys and values for each completion
(``shared_prompt_logps``).

Sampling runs on the serving engine's own scheduler (``tunewise.infer.runner.ModelRunner``, continuous batching,
the prompt rendered as chat inference renders it) over the live policy in eval mode without gradients: the same
code that answers ``/v1/chat/completions``. Each prompt's request is seeded from the run's seed, the step and its
place in the batch, and a batch's requests are queued at once, so a step samples the same completions whatever
happened before it: a resumed run equals an uninterrupted one.

OpenAI's hyperparameters and their local meaning: ``compute_multiplier`` sets the group size,
``G = max(2, round(4 * compute_multiplier))`` (``auto``: 1, so G = 4); ``eval_interval`` is the steps between
validation runs (``auto``: one epoch); ``eval_samples`` the completions sampled per validation prompt (``auto``:
1); ``reasoning_effort`` is recorded and has no effect (the local models do not reason before answering).

Model graders (``score_model``, ``label_model``, or a ``multi`` holding one) ask the judge endpoint
``TrainConfig.grader_base_url`` (``tunewise.eval.graders.ModelJudge``, answers cached), the completions of a step
graded concurrently (at most ``grader_concurrency`` at once). A completion whose grader gave no judgement (its judge
or its process did not answer, or the judge's answer could not be read: the flags of ``NOT_GRADED``) has no reward:
it is left out of its group's advantages and of the loss, and the step's metrics count it
(``train_grader_errors``); a step with no graded completion at all stops the run with an error that says why, as
there is nothing to train on.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, TunewiseError
from tunewise.eval.graders.spec import item_fields
from tunewise.train.methods import StepContext, labelled_logits
from tunewise.train.render import IGNORE, Rendered, checked_examples

GROUP_PER_COMPUTE = 4  # G = round(4 * compute_multiplier): OpenAI's "auto" (1.0) samples 4 per prompt
MIN_GROUP = 2  # a group of one has no relative advantage
ADVANTAGE_EPS = 1e-4  # TRL's: keeps a group whose rewards barely differ from blowing up
AUTO_EVAL_SAMPLES = 1
MAX_SAMPLING_ROWS = 64  # completions decoded together at most (rows of the engine's batch)
# RL moves the policy by small steps from where it starts; the share of the supervised learning rate (for
# SmolLM2-135M LoRA, 1e-3 x 0.3 = 3e-4), which learning_rate_multiplier scales as for SFT.
LEARNING_RATE_SCALE = 0.3
VALID_SEED = 7_919  # validation draws from seeds of their own, the same at every evaluation
# The result flags (``tunewise.eval.graders.ERROR_FLAGS``) that say the grader gave no judgement of the answer: its
# judge or its process did not answer, or the judge's answer could not be read. Such a completion has no reward (the
# runner's 0.0 is no score). A flag about the answer itself (``sample_parse_error``: the answer is not the JSON the
# template reads; a python grader that raised on it) stays a reward of 0, as OpenAI scores it.
NOT_GRADED = ("model_grader_server_error", "model_grader_refusal_error", "model_grader_parse_error",
              "truncated_observation_error", "python_grader_server_error", "unresponsive_reward_error")


def group_size(compute_multiplier: Any) -> int:
    m = 1.0 if compute_multiplier in ("auto", None) else float(compute_multiplier)
    return max(MIN_GROUP, round(GROUP_PER_COMPUTE * m))


def resolve(config: Any, n_examples: int, batch_size: int) -> dict[str, Any]:
    """GRPO's resolved hyperparameters (``auto`` made numbers), beside n_epochs, batch_size and the rate."""
    multiplier = 1.0 if config.compute_multiplier == "auto" else float(config.compute_multiplier)
    steps_per_epoch = max(1, math.ceil(n_examples / max(1, batch_size)))
    return {
        "compute_multiplier": multiplier,
        "group_size": group_size(multiplier),
        "eval_interval": steps_per_epoch if config.eval_interval == "auto" else int(config.eval_interval),
        "eval_samples": AUTO_EVAL_SAMPLES if config.eval_samples == "auto" else int(config.eval_samples),
        "reasoning_effort": config.reasoning_effort,
        "kl_beta": float(config.kl_beta),
        "max_completion_tokens": int(config.max_completion_tokens),
        "temperature": float(config.temperature),
    }


# ---------------------------------------------------------------------------------------------------- the grader


def load_grader(grader: Any):
    """The checked grader (``tunewise.eval.graders.parse_grader``). A model grader needs a judge endpoint to train
    with (``TrainConfig.grader_base_url``), which ``TrainConfig.validate`` checks."""
    from tunewise.eval.graders import parse_grader

    return parse_grader(grader, "grader")


def uses_model(grader: Any) -> bool:
    """Whether the grader object asks a judge model (score_model, label_model, or a multi holding one)."""
    return load_grader(grader).uses_model


def grader_from_file(path: str | Path) -> dict[str, Any]:
    """The one grader of a JSON or YAML file (``tunewise.eval.graders.load_graders``), as its OpenAI object."""
    from tunewise.errors import UsageError
    from tunewise.eval.graders import load_graders

    graders = load_graders(path)
    if len(graders) != 1:
        raise UsageError(f"{path} holds {len(graders)} graders; reinforcement fine-tuning takes one.",
                         hint="Combine them in one multi grader (its calculate_output weighs them).",
                         param="grader")
    grader = graders[0].to_dict()
    load_grader(grader)
    return grader


def score_names(grader) -> list[str]:
    """The graders whose scores are reported beside the reward: a multi grader's sub-graders (by key)."""
    return list(grader.children) if grader.type == "multi" else []


def _column(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "grader"


# ---------------------------------------------------------------------------------------------------- the data


@dataclass
class Prompt:
    """One reinforcement example: the conversation to complete and the row its grader reads as ``item``."""

    line: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    item: dict[str, Any]
    prompt_ids: list[int]
    index: int
    param: str = "training_file"


def read_prompts(path: str | Path, model: str | None, param: str, grader: dict[str, Any]):
    """Validate the file as reinforcement data for this grader (errors name the lines), then yield
    ``(line, example)``."""
    from tunewise import data

    report = data.validate(path, model=model, data_format="reinforcement", grader=grader)
    yield from checked_examples(report, path, param)


# ---------------------------------------------------------------------------------------------------- the loss


def advantages(rewards, graded=None):
    """``[prompts, G]`` rewards -> advantages, each reward against its own group (TRL's formula). ``graded``
    (``[prompts, G]`` booleans): only those rewards count, each against its group's graded ones; the others (and a
    group with fewer than two graded) get 0."""
    if graded is None or bool(graded.all()):
        mean = rewards.mean(dim=1, keepdim=True)
        std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else rewards.new_zeros(rewards.shape[0], 1)
        return (rewards - mean) / (std + ADVANTAGE_EPS)
    out = rewards.new_zeros(rewards.shape)
    for i in range(rewards.shape[0]):
        keep = graded[i]
        if int(keep.sum()) < 2:
            continue  # one graded answer has nothing to be compared with
        r = rewards[i][keep]
        out[i, keep] = (r - r.mean()) / (r.std() + ADVANTAGE_EPS)
    return out


def grpo_token_loss(logps, ref_logps, token_advantages, beta: float):
    """Per completion token: the loss (policy gradient plus ``beta`` times the k3 KL) and the KL itself."""
    import torch

    delta = ref_logps - logps
    kl = torch.exp(delta) - delta - 1
    policy = -torch.exp(logps - logps.detach()) * token_advantages
    return policy + beta * kl, kl.detach()


def token_logps(model, core, head, mb, device, temperature: float = 1.0):
    """The log-probability of every labelled token of a micro-batch (row-major order) and each one's row, under the
    distribution the completions were sampled from: the logits divided by the sampling ``temperature`` (as TRL's
    ``GRPOTrainer``), for the policy and the reference alike."""
    import torch.nn.functional as F

    logits, wanted, keep = labelled_logits(model, core, head, mb, device)
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits, wanted, reduction="none"), keep.nonzero()[:, 0]


def shared_prompt_logps(model, core, head, prompt_ids: list[int], completions: list[list[int]], device: str,
                        temperature: float = 1.0):
    """What ``token_logps`` gives for rows ``prompt_ids + completion``, with the shared prompt run once: its keys
    and values are computed by one pass over ``prompt_ids[:-1]`` (gradients flow back through them) and repeated
    for every completion, then one pass over ``[prompt_ids[-1], *completion[:-1]]`` per completion (right-padded,
    so no real token sees a pad) gives each completion token's logits. A group of ``G`` completions of a
    ``P``-token prompt costs ``P + G * C`` token positions instead of ``G * (P + C)``."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    body = core if core is not None else model
    cache = DynamicCache()
    body(input_ids=torch.tensor([prompt_ids[:-1]], device=device), cache=cache, use_cache=True)
    cache.batch_repeat_interleave(len(completions))
    length = max(len(c) for c in completions)
    ids = torch.zeros((len(completions), length), dtype=torch.long)
    targets = torch.full((len(completions), length), IGNORE, dtype=torch.long)
    for row, c in enumerate(completions):
        ids[row, 0] = prompt_ids[-1]
        ids[row, 1:len(c)] = torch.tensor(c[:-1], dtype=torch.long)
        targets[row, :len(c)] = torch.tensor(c, dtype=torch.long)
    start = len(prompt_ids) - 1
    positions = torch.arange(start, start + length).expand(len(completions), -1)
    ids, targets, positions = ids.to(device), targets.to(device), positions.to(device)
    keep = targets != IGNORE
    out = body(input_ids=ids, cache=cache, position_ids=positions, use_cache=True)
    logits = (head(out.last_hidden_state[keep]) if core is not None else out.logits[keep]).float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits, targets[keep], reduction="none"), keep.nonzero()[:, 0]


@dataclass
class GroupBatch:
    """One micro-batch of a step's completions: ``index`` (their places in the step's list) and either padded
    ``rows`` (a ``MicroBatch`` of prompt + completion rows) or one shared ``prompt_ids`` and its ``completions``."""

    index: list[int]
    rows: Any = None
    prompt_ids: list[int] | None = None
    completions: list[list[int]] | None = None

    @property
    def real_tokens(self) -> int:
        if self.rows is not None:
            return self.rows.real_tokens
        return len(self.prompt_ids) - 1 + sum(len(c) for c in self.completions)

    @property
    def padded_tokens(self) -> int:
        if self.rows is not None:
            return self.rows.padded_tokens
        return len(self.prompt_ids) - 1 + len(self.completions) * max(len(c) for c in self.completions)


@dataclass
class Completion:
    prompt: Prompt
    ids: list[int]
    """The sampled tokens, the end-of-turn token included where the model stopped by itself."""
    text: str
    prompt_ids: list[int] = field(default_factory=list)
    """The prompt as the engine rendered and fed it."""
    reward: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    """Why the grader gave no judgement (a ``NOT_GRADED`` flag and what went wrong); None: graded."""

    @property
    def graded(self) -> bool:
        return self.error is None

    def rendered(self, prompt_ids: list[int]) -> Rendered:
        return Rendered(line=self.prompt.line, input_ids=[*prompt_ids, *self.ids],
                        labels=[IGNORE] * len(prompt_ids) + list(self.ids))


def row_groups(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices of rows of ``lengths`` tokens in micro-batches of at most ``max_tokens`` (rows x the longest),
    longest first; a row longer than that is a micro-batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class GRPO:
    name = "grpo"
    lr_scale = LEARNING_RATE_SCALE

    def __init__(self, config: Any) -> None:
        from tunewise.eval.graders import GradingContext

        self.config = config
        self.grader = load_grader(config.grader)
        self.fields = item_fields(config.grader)
        self.context = GradingContext(allow_python=True)
        self._pool = None
        if self.grader.uses_model:
            from concurrent.futures import ThreadPoolExecutor

            from tunewise.eval.graders import ModelJudge

            self.context.judge = ModelJudge(config.grader_base_url, config.grader_api_key)
            self._pool = ThreadPoolExecutor(max_workers=int(config.grader_concurrency),
                                            thread_name_prefix="grpo-grader")
        # Graders that can fail to give a judgement report how many completions they did not grade.
        self.can_fail = self.grader.uses_model or self.grader.uses_python
        self._emit: Callable[..., None] = lambda text, level="info": None
        self.group = group_size(config.compute_multiplier)
        self.temperature = float(config.temperature)
        self.eval_samples = AUTO_EVAL_SAMPLES if config.eval_samples == "auto" else int(config.eval_samples)
        self.scores = score_names(self.grader)
        extra = [f"train_score_{_column(k)}" for k in self.scores]
        valid_extra = [f"valid_score_{_column(k)}" for k in self.scores]
        errors = ("train_grader_errors",) if self.can_fail else ()
        valid_errors = ("valid_grader_errors",) if self.can_fail else ()
        self.columns = ("train_reward_mean", "train_reward_std", "train_kl", "train_completion_length", *extra,
                        *errors, "valid_reward_mean", "valid_reward_std", *valid_extra, *valid_errors)
        self.tokenizer = None
        self.context_length = 0
        self.fresh_lora = False
        self.reference = None
        self._runner = None
        self._runner_model = None

    # -- data ----------------------------------------------------------------------------------------------
    def render_file(self, path, renderer, context_length, param, model) -> list[Prompt]:
        self.tokenizer = renderer.tokenizer
        self.context_length = context_length
        prompts: list[Prompt] = []
        for line, example in read_prompts(path, model, param, self.config.grader):
            tools = example.get("tools") or None
            try:
                ids = renderer.prompt_ids(example["messages"], tools)
            except DataError as exc:
                exc.param = param
                raise
            if len(ids) >= context_length:
                raise DataError(f"{path}:{line}: the prompt is {len(ids)} tokens, leaving no room for a completion in "
                                f"the model's context of {context_length}.", hint="Shorten the prompt, or remove it.",
                                code="example_too_long", param=param)
            prompts.append(Prompt(line=line, messages=example["messages"], tools=tools, item=example, prompt_ids=ids,
                                  index=len(prompts), param=param))
        if not prompts:
            raise DataError(f"{path} has no examples.", hint="Add prompts, one {\"messages\": [...]} per line.",
                            param=param)
        return prompts

    def length(self, prompt: Prompt) -> int:
        return len(prompt.prompt_ids)

    def tokens(self, prompt: Prompt) -> int:
        return len(prompt.prompt_ids) * self.group  # the completions' tokens are added as they are sampled

    # -- the reference -------------------------------------------------------------------------------------
    def prepare(self, model, train_set, valid_set, out: Path, ctx: StepContext, main: bool,
                emit: Callable[..., None]) -> None:
        self._emit = emit
        self.fresh_lora = self.config.method == "lora" and self.config.init_adapter is None \
            and hasattr(model, "disable_adapter")
        if self.fresh_lora:
            emit(f"GRPO: {self.group} completions per prompt; the KL reference is the base model (adapter disabled)")
            return
        # Continued or full training: the starting weights, frozen (taken before any saved state goes in).
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        emit(f"GRPO: {self.group} completions per prompt; the KL reference is a frozen copy of the starting model")

    def _micro_batches(self, trained: list[Completion], ctx: StepContext) -> list[GroupBatch]:
        """The step's completions as micro-batches of at most ``ctx.max_tokens`` completion positions: those of one
        prompt together, its prompt run once (``shared_prompt_logps``) where the model has a plain LM head (the
        causal LMs whose cache this is known to work with), else whole padded rows (``token_logps``)."""
        from tunewise.train.batching import _collate

        if ctx.core is None:
            rows = [c.rendered(c.prompt_ids) for c in trained]
            return [GroupBatch(index=idx, rows=_collate([rows[i] for i in idx], ctx.pad_id))
                    for idx in row_groups([len(r.input_ids) for r in rows], ctx.max_tokens)]
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, c in enumerate(trained):
            by_prompt.setdefault(tuple(c.prompt_ids), []).append(i)
        out = []
        for prompt, members in by_prompt.items():
            lengths = [len(trained[i].ids) for i in members]
            for chunk in row_groups(lengths, ctx.max_tokens):
                out.append(GroupBatch(index=[members[k] for k in chunk], prompt_ids=list(prompt),
                                      completions=[trained[members[k]].ids for k in chunk]))
        return out

    def _logps(self, model, core, head, mb: GroupBatch, ctx: StepContext):
        if mb.rows is not None:
            return token_logps(model, core, head, mb.rows, ctx.device, self.temperature)
        return shared_prompt_logps(model, core, head, mb.prompt_ids, mb.completions, ctx.device, self.temperature)

    def _ref_logps(self, model, mb: GroupBatch, ctx: StepContext):
        import contextlib

        import torch

        from tunewise.train.trainer import _core_and_head

        with torch.no_grad():
            if self.reference is not None:
                core, head = _core_and_head(self.reference)
                return self._logps(self.reference, core, head, mb, ctx)[0]
            with (model.disable_adapter() if self.fresh_lora else contextlib.nullcontext()):
                return self._logps(model, ctx.core, ctx.head, mb, ctx)[0]

    # -- sampling ------------------------------------------------------------------------------------------
    def _runner_for(self, model):
        import threading as _t

        from tunewise.infer.runner import ModelRunner
        from tunewise.infer.types import EngineStats

        if self._runner is None or self._runner_model is not model:
            self._close_runner()
            rows = max(self.group, self.eval_samples, MAX_SAMPLING_ROWS)
            self._runner = ModelRunner("policy", model, self.tokenizer, context_length=self.context_length,
                                       max_batch_size=rows, stats=EngineStats(), stats_lock=_t.Lock())
            self._runner_model = model
        return self._runner

    def sample(self, model, prompts: list[Prompt], n: int, seeds: list[int]) -> list[list[Completion]]:
        """``n`` completions of each prompt, sampled by the engine's scheduler from the live weights."""
        from tunewise.infer.runner import _DONE
        from tunewise.infer.types import GenerationRequest

        runner = self._runner_for(model)
        was_training = model.training
        model.eval()
        try:
            jobs = []
            # All of a batch's requests are queued before the scheduler admits any (its condition's lock is
            # re-entrant): the batches it decodes, hence the completions, do not depend on thread timing.
            with runner._cond:
                for prompt, seed in zip(prompts, seeds, strict=True):
                    room = self.context_length - len(prompt.prompt_ids)
                    request = GenerationRequest(model=runner.name, messages=prompt.messages, tools=prompt.tools,
                                                max_tokens=min(self.config.max_completion_tokens, room),
                                                temperature=float(self.config.temperature), seed=seed, n=n)
                    request.check(runner.max_batch_size)
                    runner.reserve(None)
                    jobs.append(runner.submit(request))
            out = []
            for prompt, job in zip(prompts, jobs, strict=True):
                while (event := job.events.get()) is not _DONE:
                    if isinstance(event, BaseException):
                        raise event
                group = []
                for seq in job.seqs:
                    ids = list(seq.tokens)
                    if job.finish_reasons.get(seq.index) == "stop" and seq.last in runner._stop_set:
                        ids.append(int(seq.last))
                    group.append(Completion(prompt=prompt, ids=ids, text=seq.text, prompt_ids=list(job.prompt_ids)))
                out.append(group)
            return out
        finally:
            model.train(was_training)

    def grade(self, completions: list[Completion]) -> None:
        """Grade each completion (concurrently where a judge is asked); one the grader gave no judgement of keeps
        its ``error`` and no reward."""
        from tunewise.eval.graders import grade

        def one(c: Completion):
            return grade(self.grader, c.text, c.prompt.item, self.context)

        results = list(self._pool.map(one, completions)) if self._pool is not None else map(one, completions)
        for c, result in zip(completions, results, strict=True):
            failed = [k for k in NOT_GRADED if result.errors.get(k) is True]
            if failed:
                why = (result.errors.get("model_grader_server_error_details") or result.details.get("error")
                       or result.details.get("refusal") or "")
                c.error = ", ".join(failed) + (f" ({str(why).strip()[:300]})" if why else "")
                c.reward, c.scores = math.nan, {}
                continue
            c.error = None
            c.reward = float(result.reward)
            c.scores = {k: float(result.sub_rewards.get(k, 0.0)) for k in self.scores}

    def _ungraded(self, flat: list[Completion], what: str) -> int:
        """Say (a warning event) how many of ``flat`` were not graded, and why the first was not; return how many."""
        bad = [c for c in flat if not c.graded]
        if bad:
            self._emit(f"{what}: the grader gave no judgement of {len(bad)} of {len(flat)} completions, left out of "
                       f"the rewards: {bad[0].error}", level="warn")
        return len(bad)

    def _seeds(self, ctx: StepContext, step: int, prompts: list[Prompt]) -> list[int]:
        return [((ctx.seed * 1_000_003 + step) * 4_099 + j) % (2**31) for j in range(len(prompts))]

    # -- training and evaluation ---------------------------------------------------------------------------
    def step(self, model, batch: list[Prompt], ctx: StepContext, progress: dict[str, Any]) -> dict[str, float]:
        import torch


        step = progress["step"] + 1
        groups = self.sample(model, batch, self.group, self._seeds(ctx, progress["step"], batch))
        flat = [c for g in groups for c in g]
        self.grade(flat)
        n_errors = self._ungraded(flat, f"Step {step}")
        trained = [c for c in flat if c.graded]
        if not trained:
            raise TunewiseError(f"Step {step}: the grader gave no judgement of any of the {len(flat)} completions, so "
                                f"the step has no reward to train on: {flat[0].error}.",
                                hint="Check the grader's judge endpoint (grader_base_url, --grader-base-url) and its "
                                "key, or the python grader; training again into the same output resumes from the "
                                "last saved state.", code="grader_failed", param="grader")
        graded = torch.tensor([[c.graded for c in g] for g in groups])
        rewards = torch.tensor([[c.reward if c.graded else 0.0 for c in g] for g in groups], dtype=torch.float64)
        adv_all = advantages(rewards, graded).flatten()
        keep = [i for i, c in enumerate(flat) if c.graded]
        adv = adv_all[torch.tensor(keep)]
        n_tokens = sum(len(c.ids) for c in trained)
        loss_sum, kl_sum = 0.0, 0.0
        for mb in self._micro_batches(trained, ctx):
            ref = self._ref_logps(model, mb, ctx)
            with ctx.autocast():
                logps, row_of = self._logps(model, ctx.core, ctx.head, mb, ctx)
            token_adv = adv[torch.tensor(mb.index)][row_of.cpu()].to(logps.device, logps.dtype)
            per_token, kl = grpo_token_loss(logps, ref.to(logps.dtype), token_adv, float(self.config.kl_beta))
            (per_token.sum() / n_tokens).backward()  # each micro-batch's share of the batch's token mean
            loss_sum += per_token.detach().sum().item()
            kl_sum += kl.sum().item()
            progress["real_tokens"] += mb.real_tokens
            progress["padded_tokens"] += mb.padded_tokens
        progress["trained_tokens"] += n_tokens
        flat_rewards = torch.tensor([c.reward for c in trained], dtype=torch.float64)
        stats = {"train_loss": loss_sum / n_tokens, "train_accuracy": None,
                 "train_reward_mean": flat_rewards.mean().item(),
                 "train_reward_std": flat_rewards.std().item() if len(flat_rewards) > 1 else 0.0,
                 "train_kl": kl_sum / n_tokens, "train_completion_length": sum(len(c.ids) for c in flat) / len(flat)}
        for k in self.scores:
            stats[f"train_score_{_column(k)}"] = sum(c.scores[k] for c in trained) / len(trained)
        if self.can_fail:
            stats["train_grader_errors"] = n_errors
        return stats

    def evaluate(self, model, prompts: list[Prompt], ctx: StepContext) -> dict[str, float]:
        seeds = [(ctx.seed * 1_000_003 + VALID_SEED * 4_099 + p.index) % (2**31) for p in prompts]
        flat = [c for g in self.sample(model, prompts, self.eval_samples, seeds) for c in g]
        self.grade(flat)
        n_errors = self._ungraded(flat, "Validation")
        graded = [c for c in flat if c.graded]
        rewards = [c.reward for c in graded]
        out: dict[str, Any] = {"valid_loss": None, "valid_mean_token_accuracy": None, "valid_reward_mean": None,
                               "valid_reward_std": None}
        if self.can_fail:
            out["valid_grader_errors"] = n_errors
        if not rewards:  # nothing graded: no validation reward this time (the warning says why)
            return out
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1)) if len(rewards) > 1 else 0.0
        out.update(valid_reward_mean=mean, valid_reward_std=std)
        for k in self.scores:
            out[f"valid_score_{_column(k)}"] = sum(c.scores[k] for c in graded) / len(graded)
        return out

    def _close_runner(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._runner_model = self._runner, None, None
            runner.close()

    def close(self) -> None:
        """Stop the sampling engine's thread and let go of the judge (the run is over)."""
        self._close_runner()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.context.judge is not None:
            self.context.judge.close()
            self.context.judge = None



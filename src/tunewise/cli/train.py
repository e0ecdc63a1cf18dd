"""``tunewise train`` and ``tunewise export``: thin over ``tunewise.train.train`` and ``export_merged``."""

from __future__ import annotations

import os

import click

from tunewise.errors import UsageError


def _auto_or(kind):
    def convert(ctx, param, value):
        if value is None or value == "auto":
            return "auto"
        try:
            return kind(value)
        except ValueError:
            raise click.BadParameter(f"expected 'auto' or a number, not {value!r}") from None
    return convert


@click.command("train")
@click.argument("training_file", type=click.Path(dir_okay=False))
@click.option("--validation-file", type=click.Path(dir_okay=False), help="Chat JSONL for validation loss/accuracy.")
@click.option("--model", "-m", default="smollm2-135m-instruct", show_default=True,
              help="Registry name, local HF model directory or hub id.")
@click.option("--method", type=click.Choice(["lora", "full", "dpo", "reinforcement"]), default="lora",
              show_default=True,
              help="lora: a small adapter over the frozen base (fast, small); full: every weight; dpo: preference "
                   "data (DPO); reinforcement: prompts and a --grader (GRPO); the last two train the weights "
                   "--weights names.")
@click.option("--weights", type=click.Choice(["lora", "full"]), default=None,
              help="With --method dpo or reinforcement: train a LoRA adapter (default) or every weight.")
@click.option("--grader", "grader_file", type=click.Path(dir_okay=False),
              help="With --method reinforcement: a JSON or YAML file holding one OpenAI grader (the reward).")
@click.option("--grader-base-url", default=None, metavar="URL",
              help="With --method reinforcement and a model grader (score_model): the OpenAI-compatible endpoint "
                   "its judge model is asked at, e.g. a `tunewise serve` (http://127.0.0.1:8000/v1).")
@click.option("--grader-api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="NAME",
              help="With --grader-base-url: the environment variable holding that endpoint's API key.")
@click.option("--grader-concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="With --grader-base-url: judge requests in flight at once while a step is graded.")
@click.option("--compute-multiplier", default="auto", callback=_auto_or(float), show_default=True,
              help="With --method reinforcement: X in (0, 10] or auto (1); completions per prompt = "
                   "max(2, round(4 * X)).")
@click.option("--eval-interval", default="auto", callback=_auto_or(int), show_default=True,
              help="With --method reinforcement: steps between validation runs, or auto (one epoch).")
@click.option("--eval-samples", default="auto", callback=_auto_or(int), show_default=True,
              help="With --method reinforcement: completions graded per validation prompt (1-64), or auto (1).")
@click.option("--reasoning-effort", type=click.Choice(["default", "low", "medium", "high"]), default="default",
              show_default=True, help="With --method reinforcement: OpenAI's; recorded, no effect on local models.")
@click.option("--kl-beta", type=click.FloatRange(0, 10), default=0.04, show_default=True,
              help="With --method reinforcement: the KL penalty's weight, holding the model to where it started.")
@click.option("--max-completion-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="With --method reinforcement: the longest completion sampled in training.")
@click.option("--temperature", type=click.FloatRange(0, 2, min_open=True), default=1.0, show_default=True,
              help="With --method reinforcement: the sampling temperature of the training completions.")
@click.option("--beta", default="auto", callback=_auto_or(float), show_default=True,
              help="With --method dpo: X in (0, 2] or auto (0.1); higher holds the model closer to the reference.")
@click.option("--init-adapter", type=click.Path(file_okay=False, exists=True),
              help="Start from this LoRA adapter (OUTPUT/final of a run on the same base): e.g. DPO on top of SFT.")
@click.option("--epochs", "--n-epochs", "n_epochs", default="auto", callback=_auto_or(int), show_default=True,
              help="N or auto (OpenAI's rule from the number of examples).")
@click.option("--batch-size", default="auto", callback=_auto_or(int), show_default=True, help="N or auto.")
@click.option("--learning-rate-multiplier", default="auto", callback=_auto_or(float), show_default=True,
              help="X or auto (times the model's base learning rate).")
@click.option("--seed", type=int, help="Makes the run reproducible.")
@click.option("--suffix", help="Recorded in the model's metadata (up to 64 characters).")
@click.option("--output", "output_dir", type=click.Path(file_okay=False),
              help="Output directory; an existing one resumes its run. Default: $TUNEWISE_HOME/runs/...")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when a GPU is present, else CPU.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="auto: bfloat16 on CUDA, float32 on CPU; bfloat16 on CPU: bf16 autocast (fast on CPUs with "
                   "bf16 instructions), float32 adapters.")
@click.option("--num-threads", type=click.IntRange(min=1),
              help="CPU threads for PyTorch (default: PyTorch's choice; 1 is faster on a busy shared machine).")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes on this machine (DDP: gloo on CPU, nccl with one GPU each on CUDA).")
@click.option("--packing", is_flag=True,
              help="Padding-free batches: examples concatenated per micro-batch, each attending to itself only.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass: much less memory, about a third more compute.")
@click.option("--sharding", type=click.Choice(["ddp", "fsdp"]), default="ddp", show_default=True,
              help="With several processes: ddp (each holds the whole model) or fsdp (sharded; --method full).")
@click.option("--collective-timeout", "collective_timeout_s", type=click.FloatRange(min=0, min_open=True),
              default=300.0, show_default=True,
              help="Seconds a multi-process run waits for a silent process before failing with its rank.")
def train(training_file, validation_file, model, method, weights, grader_file, grader_base_url, grader_api_key_env,
          grader_concurrency, compute_multiplier, eval_interval,
          eval_samples, reasoning_effort, kl_beta, max_completion_tokens, temperature, beta, init_adapter, n_epochs,
          batch_size,
          learning_rate_multiplier, seed, suffix, output_dir, device, dtype, num_threads, packing,
          gradient_checkpointing, nproc_per_node, sharding, collective_timeout_s):
    """Fine-tune MODEL on TRAINING_FILE (OpenAI chat JSONL, preference JSONL with --method dpo, or prompts with
    --method reinforcement --grader G.json); Ctrl-C saves the state, run again to resume."""
    import signal
    import sys
    import threading

    from tqdm import tqdm

    from tunewise.errors import Cancelled, TunewiseError
    from tunewise.train import TrainConfig, distributed
    from tunewise.train import train as run

    objective = {"dpo": "dpo", "reinforcement": "grpo"}.get(method, "sft")
    if objective == "sft" and weights is not None and weights != method:
        raise UsageError(f"--weights {weights} contradicts --method {method}.",
                         hint="--weights goes with --method dpo or reinforcement; for supervised training --method "
                         "names the weights.", param="weights")
    if objective != "sft" and nproc_per_node > 1:
        raise UsageError(f"--method {method} trains in one process; --nproc-per-node is for supervised training.",
                         hint="Leave --nproc-per-node out.", param="nproc_per_node")
    rft: dict = {}
    if objective == "grpo":
        from tunewise.train.methods.grpo import grader_from_file, uses_model

        if grader_file is None:
            raise UsageError("--method reinforcement needs --grader: the grader that scores each sampled answer.",
                             hint="Write one OpenAI grader to a JSON file (see docs/graders.md) and pass "
                             "--grader FILE.", param="grader")
        grader = grader_from_file(grader_file)
        if uses_model(grader) and not grader_base_url:
            raise UsageError(f"The grader in {grader_file} asks a judge model (score_model or label_model); "
                             "training needs the endpoint to ask.",
                             hint="Pass --grader-base-url URL: an OpenAI-compatible endpoint such as a running "
                             "`tunewise serve` (http://127.0.0.1:8000/v1), its key in $OPENAI_API_KEY (or the "
                             "variable --grader-api-key-env names).", param="grader_base_url")
        rft = dict(grader=grader, compute_multiplier=compute_multiplier,
                   eval_interval=eval_interval, eval_samples=eval_samples, reasoning_effort=reasoning_effort,
                   kl_beta=kl_beta, max_completion_tokens=max_completion_tokens, temperature=temperature,
                   grader_base_url=grader_base_url, grader_api_key=os.environ.get(grader_api_key_env) or None,
                   grader_concurrency=grader_concurrency)
    elif grader_file is not None:
        raise UsageError("--grader is for --method reinforcement.", hint="Add --method reinforcement, or leave "
                         "--grader out.", param="grader")
    elif grader_base_url is not None:
        raise UsageError("--grader-base-url is for --method reinforcement with a model grader.",
                         hint="Leave --grader-base-url out.", param="grader_base_url")
    method = (weights or "lora") if objective != "sft" else method
    config = TrainConfig(**rft, training_file=training_file, validation_file=validation_file, model=model, method=method,
                         objective=objective, beta=beta, init_adapter=init_adapter, n_epochs=n_epochs, batch_size=batch_size,
                         learning_rate_multiplier=learning_rate_multiplier,
                         seed=seed, suffix=suffix, output_dir=output_dir, device=device, dtype=dtype,
                         num_threads=num_threads, packing=packing, sharding=sharding, collective_timeout_s=collective_timeout_s,
                         gradient_checkpointing=gradient_checkpointing)
    world = distributed.world_size_from_env()
    if nproc_per_node > 1:
        if world > 1:
            raise UsageError(f"--nproc-per-node starts its own processes, but this one is already one of {world} "
                             "(WORLD_SIZE is set by torchrun or accelerate launch).",
                             hint="Leave --nproc-per-node out under a launcher; its own option sets the processes.",
                             param="nproc_per_node")
        _launch(config, nproc_per_node)
        return
    if world > 1 and distributed.rank_from_env() != 0:
        # Another rank: rank 0 reports progress, errors and the result; this one only trains.
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            run(config, stop=stop)
        except TunewiseError as exc:
            from tunewise.cli import exit_code
            from tunewise.errors import DistributedError

            if isinstance(exc, DistributedError):  # this rank's own view of a lost process; other errors rank 0 says
                click.echo(f"error: {exc}", err=True)
            sys.exit(130 if isinstance(exc, Cancelled) and stop.is_set() else exit_code(exc))
        return
    bar = None
    stop = threading.Event()

    def on_event(event):
        nonlocal bar
        if event.type == "metrics":
            d = event.data
            if bar is None:
                bar = tqdm(total=d["total_steps"], initial=d["step"] - 1, unit="step", dynamic_ncols=True)
            postfix = {"epoch": d["epoch"], "loss": f"{d['train_loss']:.4f}"}
            if d.get("train_reward_mean") is not None:
                postfix["reward"] = f"{d['train_reward_mean']:.3f}"
            if d["valid_loss"] is not None:
                postfix["valid"] = f"{d['valid_loss']:.4f}"
            bar.set_postfix(postfix)
            bar.update(1)
        elif bar is not None:
            bar.write(event.message, file=sys.stderr)
        else:
            click.echo(event.message, err=True)

    # Ctrl-C asks the trainer to stop after the current step; it saves its state and raises Cancelled. A stop
    # the user asked for is no error: the CLI says where the state is and prints the command that resumes.
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = run(config, on_event=on_event, stop=stop)
    except Cancelled as exc:
        if not stop.is_set():
            raise
        if bar is not None:
            bar.close()
            bar = None
        click.echo(f"stopped: {exc.message}", err=True)
        out = getattr(exc, "output_dir", None)
        if out is not None:
            command = resume_command(sys.argv, out)
            if os.environ.get(distributed.ENV_NPROC):
                command += f" --nproc-per-node {os.environ[distributed.ENV_NPROC]}"
            elif world > 1:
                command = command.replace("tunewise train", "torchrun --nproc-per-node "
                                          f"{os.environ.get('LOCAL_WORLD_SIZE', world)} -m tunewise.train", 1)
            click.echo(f"resume with: {command}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    m = result.metrics
    click.echo(f"model: {result.model_dir}")
    if objective == "grpo":
        import csv

        with open(result.metrics_csv, newline="") as f:
            last = list(csv.DictReader(f))[-1]
        valid = [r for r in [last] if r.get("valid_reward_mean")]
        click.echo(f"final train_reward_mean {float(last['train_reward_mean']):.4f}"
                   + (f", valid_reward_mean {float(valid[0]['valid_reward_mean']):.4f}" if valid else "")
                   + f"; {result.trained_tokens:,} trained tokens; metrics: {result.metrics_csv}")
        return
    click.echo(f"final train_loss {m['train_loss']:.4f}"
               + (f", valid_loss {m['valid_loss']:.4f}" if m.get("valid_loss") is not None else "")
               + f"; {result.trained_tokens:,} trained tokens; metrics: {result.metrics_csv}")


def _launch(config, nproc: int) -> None:
    """``--nproc-per-node N``: check what can be checked here, then run N workers of this same command."""
    import sys
    from pathlib import Path

    from tunewise.errors import LocalFileNotFound
    from tunewise.train import distributed
    from tunewise.train.trainer import _default_output_dir

    config.validate()
    for param in ("training_file", "validation_file"):
        path = getattr(config, param)
        if path is not None and not Path(path).is_file():
            raise LocalFileNotFound(f"The {param.replace('_', ' ')} {path} does not exist.", hint="Check the path.",
                                    param=param)
    if config.device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and nproc > gpus:
            raise UsageError(f"--nproc-per-node {nproc} asks for one GPU per process, and this machine has {gpus}.",
                             hint=f"Use --nproc-per-node {gpus} or fewer, or --device cpu.", param="nproc_per_node")
    out = Path(config.output_dir) if config.output_dir else _default_output_dir(config)
    out = out.expanduser().resolve()
    args = [str(config.training_file)]
    for flag, value in (("--validation-file", config.validation_file), ("--model", config.model),
                        ("--method", config.method), ("--epochs", config.n_epochs),
                        ("--batch-size", config.batch_size),
                        ("--learning-rate-multiplier", config.learning_rate_multiplier), ("--seed", config.seed),
                        ("--suffix", config.suffix), ("--output", out), ("--device", config.device),
                        ("--dtype", config.dtype), ("--num-threads", config.num_threads),
                        ("--sharding", config.sharding),
                        ("--collective-timeout", config.collective_timeout_s)):
        if value is not None:
            args += [flag, str(value)]
    if config.packing:
        args.append("--packing")
    if config.gradient_checkpointing:
        args.append("--gradient-checkpointing")
    from tunewise.errors import DistributedError

    try:
        code = distributed.launch(args, nproc, str(out), config.collective_timeout_s)
    except DistributedError:
        click.echo("", err=True)  # rank 0's progress bar may have been cut mid-line
        raise
    if code:
        sys.exit(code)


def resume_command(argv: list[str], output_dir) -> str:
    """The command line that resumes a stopped run: the same arguments, with ``--output`` set to its directory."""
    import shlex
    from pathlib import Path

    words = list(argv[1:]) if argv and Path(argv[0]).name != "train" else list(argv)
    if "train" in words:
        words = words[words.index("train") + 1:]
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--output":
            skip = True
            continue
        if word.startswith("--output="):
            continue
        kept.append(word)
    return shlex.join(["tunewise", "train", *kept, "--output", str(Path(output_dir).resolve())])


@click.command("export")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["hf", "gguf", "gguf-lora"]), default="hf", show_default=True,
              help="hf: a merged Hugging Face model directory; gguf: one GGUF file for llama.cpp plus an Ollama "
              "Modelfile; gguf-lora: the LoRA adapter alone in llama.cpp's adapter GGUF format, with a Modelfile "
              "that applies it over the base model's GGUF.")
@click.option("--quant", type=click.Choice(["f16", "f32", "q8_0", "q4_k_m"]), default="f16", show_default=True,
              help="GGUF weights: f16/f32 as they are; q8_0/q4_k_m by llama.cpp's quantizer (needs "
              "llama-cpp-python; --format gguf only). Not with --format hf.")
@click.pass_context
def export(ctx, run, out_dir, fmt, quant):
    """Export a fine-tuned model: merge a LoRA adapter (OUTPUT/final of a run) into its base model as a plain HF
    model directory, write it (or a full fine-tune) as GGUF with an Ollama Modelfile, or write the adapter alone
    as a llama.cpp LoRA adapter GGUF."""
    if fmt == "hf" and ctx.get_parameter_source("quant") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--quant applies to --format gguf and gguf-lora only (an HF export keeps float32 "
                               "weights).")
    if fmt == "hf":
        from tunewise.train import export_merged

        click.echo(export_merged(run, out_dir))
        return
    threads = max(1, (os.cpu_count() or 2) // 2)
    if fmt == "gguf-lora":
        from tunewise.train.gguf import export_gguf_lora

        paths = export_gguf_lora(run, out_dir, quant, threads=threads)
        for key in ("adapter", "base", "modelfile"):
            click.echo(paths[key])
        return
    from tunewise.train.gguf import export_gguf

    paths = export_gguf(run, out_dir, quant, threads=threads)
    click.echo(paths["gguf"])
    click.echo(paths["modelfile"])

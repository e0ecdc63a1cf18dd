"""``tunewise train`` and ``tunewise export``: thin over ``tunewise.train.train`` and ``export_merged``."""

from __future__ import annotations

import click


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
@click.option("--method", type=click.Choice(["lora", "full"]), default="lora", show_default=True,
              help="lora: a small adapter over the frozen base (fast, small); full: every weight.")
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
              help="auto: bfloat16 on CUDA, float32 on CPU.")
@click.option("--num-threads", type=click.IntRange(min=1),
              help="CPU threads for PyTorch (default: PyTorch's choice; 1 is faster on a busy shared machine).")
def train(training_file, validation_file, model, method, n_epochs, batch_size, learning_rate_multiplier, seed,
          suffix, output_dir, device, dtype, num_threads):
    """Fine-tune MODEL on TRAINING_FILE (OpenAI chat JSONL); Ctrl-C saves the state, run again to resume."""
    import signal
    import sys
    import threading

    from tqdm import tqdm

    from tunewise.errors import Cancelled
    from tunewise.train import TrainConfig
    from tunewise.train import train as run

    config = TrainConfig(training_file=training_file, validation_file=validation_file, model=model, method=method,
                         n_epochs=n_epochs, batch_size=batch_size, learning_rate_multiplier=learning_rate_multiplier,
                         seed=seed, suffix=suffix, output_dir=output_dir, device=device, dtype=dtype,
                         num_threads=num_threads)
    bar = None
    stop = threading.Event()

    def on_event(event):
        nonlocal bar
        if event.type == "metrics":
            d = event.data
            if bar is None:
                bar = tqdm(total=d["total_steps"], initial=d["step"] - 1, unit="step", dynamic_ncols=True)
            postfix = {"epoch": d["epoch"], "loss": f"{d['train_loss']:.4f}"}
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
            click.echo(f"resume with: {resume_command(sys.argv, out)}", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    m = result.metrics
    click.echo(f"model: {result.model_dir}")
    click.echo(f"final train_loss {m['train_loss']:.4f}"
               + (f", valid_loss {m['valid_loss']:.4f}" if m.get("valid_loss") is not None else "")
               + f"; {result.trained_tokens:,} trained tokens; metrics: {result.metrics_csv}")


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
@click.argument("adapter_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
def export(adapter_dir, out_dir):
    """Merge a LoRA adapter (OUTPUT/final of a LoRA run) into its base model as a plain HF model directory."""
    from tunewise.train import export_merged

    click.echo(export_merged(adapter_dir, out_dir))

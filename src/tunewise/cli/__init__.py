"""The ``tunewise`` command line: a thin layer over the library.

Each command lives in a module of this package and is imported only when it runs (or when ``--help``
lists it), so ``tunewise validate`` never pays for importing torch.

Exit codes, the same for every command:

- 0: done (``validate``: the file has no errors);
- 1: the command ran and what it checked or asked for failed (the file has errors, a job failed, the service
  refused);
- 2: what was typed cannot be used (an unknown option, a missing file, an unknown model name): one line that
  says what and how to fix it, never click's usage block;
- 3: an internal error (a fault of tunewise, not of the user): one line with the log file's path; the traceback
  only with ``--debug`` or ``TUNEWISE_DEBUG=1``;
- 130: stopped with Ctrl-C.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from tunewise import __version__
from tunewise.cli.crash import EXIT_INTERNAL, crash_message, debug_enabled
from tunewise.errors import LocalFileNotFound, ModelNotFound, TunewiseError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# command name -> ("module:attribute", one-line description for `tunewise --help`); the attribute is a click
# command or group, imported only when it runs or its own help is asked for.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("tunewise.cli.data:validate", "Check fine-tuning JSONL against OpenAI's rules; count its tokens."),
    "tokens": ("tunewise.cli.data:tokens", "Exact token count of a text or file, offline."),
    "estimate": ("tunewise.cli.cost:estimate", "Billed training tokens, epochs and the cost of fine-tuning."),
    "breakeven": ("tunewise.cli.cost:breakeven", "Long prompt vs fine-tuned short prompt: monthly cost, break-even."),
    "models": ("tunewise.cli.cost:models", "The model catalog: encodings, context limits, prices."),
    "files": ("tunewise.cli.client:files", "Upload, list, show and delete files on the fine-tuning service."),
    "jobs": ("tunewise.cli.client:jobs", "Create, follow and control fine-tuning jobs."),
    "train": ("tunewise.cli.train:train", "Fine-tune a local model (LoRA or full) on a JSONL file."),
    "export": ("tunewise.cli.train:export", "Export a run: merged HF model directory, GGUF, or a llama.cpp LoRA adapter GGUF."),
    "serve": ("tunewise.cli.serve:serve", "Run the OpenAI-compatible fine-tuning service and its dashboard."),
    "keys": ("tunewise.cli.serve:keys", "API keys of the local service, one project each."),
    "eval": ("tunewise.cli.eval:eval_command", "Score candidates (model + prompt) on a held-out set."),
    "decide": ("tunewise.cli.eval:decide", "The verdict from an evaluation, with cost and a report."),
    "distill": ("tunewise.cli.distill:distill", "A training file from a teacher's checked answers, or stored ones."),
    "graders": ("tunewise.cli.graders:graders", "Check and run graders in OpenAI's shapes on one answer."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name][0].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Every command with its whole one-line description, without importing any of them."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx) if name in COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["TUNEWISE_DEBUG"] = "1"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="tunewise")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug,
              help="Show the traceback of an internal error (also TUNEWISE_DEBUG=1).")
def cli() -> None:
    """tunewise: should I fine-tune? Validate chat data, price it, fine-tune it, prove the gain.

    Exit codes: 0 done; 1 the command ran and found a problem (errors in the file, a failed job, a refusal);
    2 bad usage (an unknown option, a missing file, an unknown model); 3 internal error; 130 Ctrl-C.
    """


def exit_code(error: TunewiseError) -> int:
    """2 for what the user typed (bad usage, an unknown model name, a missing local file), else 1."""
    return EXIT_USAGE if isinstance(error, UsageError | ModelNotFound | LocalFileNotFound) else EXIT_FAILED


def fail(error: TunewiseError) -> None:
    """Print a domain error as one line (plus its hint) and exit with ``exit_code(error)``."""
    click.echo(f"error: {error}", err=True)
    sys.exit(exit_code(error))


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line: what is wrong, and where the help is."""
    message = exc.format_message().strip().replace("\n", " ")
    if message and message[-1] not in ".?!":
        message += "."
    path = exc.ctx.command_path if exc.ctx is not None else "tunewise"
    return f"error: {message} See `{path} --help`."


def _command_name(argv: list[str] | None) -> str:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")][:2]
    group = COMMANDS.get(words[0]) if words else None
    if group and words[0] in ("files", "jobs", "keys") and len(words) > 1:
        return f"`tunewise {words[0]} {words[1]}`"
    return f"`tunewise {words[0]}`" if group else "`tunewise`"


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="tunewise", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except TunewiseError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a fault of tunewise, not of the user: one line and a log file
        if debug_enabled():
            raise
        click.echo(crash_message(exc, _command_name(argv)), err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()

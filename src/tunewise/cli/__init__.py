"""The ``tunewise`` command line: a thin layer over the library.

Each command lives in a module of this package and is imported only when it runs (or when ``--help``
lists it), so ``tunewise validate`` never pays for importing torch. A ``TunewiseError`` from the library
becomes one line on stderr and exit code 1 (2 for a usage error), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from tunewise import __version__
from tunewise.errors import TunewiseError, UsageError

# command name -> "module:attribute"; the attribute is a click command or group.
COMMANDS: dict[str, str] = {
    "validate": "tunewise.cli.data:validate",
    "tokens": "tunewise.cli.data:tokens",
    "estimate": "tunewise.cli.cost:estimate",
    "breakeven": "tunewise.cli.cost:breakeven",
    "models": "tunewise.cli.cost:models",
    "files": "tunewise.cli.client:files",
    "jobs": "tunewise.cli.client:jobs",
    "train": "tunewise.cli.train:train",
    "export": "tunewise.cli.train:export",
    "serve": "tunewise.cli.serve:serve",
    "keys": "tunewise.cli.serve:keys",
    "eval": "tunewise.cli.eval:eval_command",
    "decide": "tunewise.cli.eval:decide",
    "distill": "tunewise.cli.distill:distill",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunewise")
def cli() -> None:
    """tunewise: should I fine-tune? Validate chat data, price it, fine-tune it, prove the gain."""


def fail(error: TunewiseError) -> None:
    """Print a domain error as one line (plus its hint) and exit 1, or 2 for usage errors."""
    click.echo(f"error: {error}", err=True)
    sys.exit(2 if isinstance(error, UsageError) else 1)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="tunewise", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except TunewiseError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""The README is the manual: every command, subcommand and option of the CLI must appear in it."""

from __future__ import annotations

from pathlib import Path

import click

from tunewise.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = prefix + (name,)
        yield path, command
        if isinstance(command, click.Group):
            yield from _walk(command, ctx, path)


def test_every_command_and_option_is_in_the_readme():
    ctx = click.Context(cli)
    missing = []
    for path, command in _walk(cli, ctx):
        words = " ".join(path)
        if f"tunewise {words}" not in README and f"`{words}" not in README and f"{path[-1]} " not in README:
            missing.append(f"command `tunewise {words}`")
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and not getattr(param, "hidden", False) and opt not in README:
                    missing.append(f"option {opt} of `tunewise {words}`")
    assert not missing, "undocumented in README.md:\n" + "\n".join(missing)

"""Helpers shared by test files (importable as ``helpers``: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from tunewise.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real CLI entry point, in-process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err

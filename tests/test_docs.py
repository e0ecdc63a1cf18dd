"""The README and docs/ are the manual: every command, subcommand and option of the CLI must appear in them,
and every link between them must lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tunewise.cli import cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MANUAL = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)


def _walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        path = prefix + (name,)
        yield path, command
        if isinstance(command, click.Group):
            yield from _walk(command, ctx, path)


def test_every_command_and_option_is_in_the_manual():
    ctx = click.Context(cli)
    missing = []
    for path, command in _walk(cli, ctx):
        words = " ".join(path)
        if f"tunewise {words}" not in MANUAL and f"`{words}" not in MANUAL and f"{path[-1]} " not in MANUAL:
            missing.append(f"command `tunewise {words}`")
        for param in command.params:
            for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--") and not getattr(param, "hidden", False) and opt not in MANUAL:
                    missing.append(f"option {opt} of `tunewise {words}`")
    assert not missing, "undocumented in README.md and docs/*.md:\n" + "\n".join(missing)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text, anchors, fence = page.read_text(encoding="utf-8"), set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            anchors.add(_anchor(line.lstrip("#")))
    return anchors


def test_every_link_between_pages_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_stays_the_quickstart_and_the_map():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 400, "reference material belongs in docs/"
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"

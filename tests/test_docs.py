"""The docs cannot drift from the code: every `gpucat ...` line they show parses with the
command's own parser, and docs/cli.md lists exactly the flags each command has. (Their
Python blocks run too: conftest.py at the root.)"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from gpucat.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_lines(page: Path) -> list[str]:
    """The `gpucat ...` commands of a page's ```bash blocks, comments dropped."""
    out, inside = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```bash", "```sh")
            continue
        if inside and line.strip().startswith("gpucat "):
            out.append(line.split(" #")[0].strip())
    return out


COMMANDS = [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in shell_lines(p)]


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 20 and {"README.md", "docs/cli.md"} <= {p for p, _ in COMMANDS}


@pytest.mark.parametrize("page, command", COMMANDS)
def test_every_command_shown_parses(page, command):
    argv = shlex.split(command)[1:]
    for part in (" && ", " | "):
        assert part not in command, f"{page}: one command a line: {command}"
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:  # --version and --help exit 0; an error exits 2
        assert e.code == 0, f"{page}: `{command}` does not parse"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def documented() -> dict[str, set[str]]:
    """docs/cli.md: each `## gpucat NAME` section's flags (and positional arguments)."""
    sections, name = {}, None
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        m = re.match(r"## gpucat (\S+)", line)
        if m:
            name = m.group(1)
            sections[name] = set()
        elif name and line.startswith("| `"):
            first = line.split("`")[1].split()[0].rstrip(",")
            sections[name].add(first)
    return sections


def documented_rows() -> dict[str, dict[str, tuple[str, str]]]:
    """docs/cli.md's flag tables: {command: {first flag: (the flag cell, the help cell)}}."""
    rows: dict[str, dict[str, tuple[str, str]]] = {}
    name = None
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        m = re.match(r"## gpucat (\S+)", line)
        if m:
            name = m.group(1)
            rows[name] = {}
        elif name and line.startswith("| `"):
            flag, what = line[1:-1].split(" | ", 1)
            flag = flag.strip().strip("`")
            rows[name][flag.split()[0].rstrip(",")] = (flag, what.strip())
    return rows


def test_docs_cli_says_what_each_flag_takes_and_does_as_help_does():
    """Each row of docs/cli.md is the flag as `--help` shows it and its help text, defaults
    filled in: the page and the program cannot drift apart."""
    docs = documented_rows()
    for name, parser in subcommands().items():
        formatter = parser._get_formatter()
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            invocation = formatter._format_action_invocation(a)
            key = invocation.split()[0].rstrip(",")
            flag, what = docs[name][key]
            assert flag == invocation, f"gpucat {name} {key}: docs/cli.md says {flag!r}"
            assert what == formatter._expand_help(a), f"gpucat {name} {key}: its help differs"


def test_docs_cli_lists_every_flag_of_every_command():
    docs = documented()
    assert set(docs) == set(subcommands())
    for name, parser in subcommands().items():
        flags = set()
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            flags.add(a.option_strings[0] if a.option_strings else (a.metavar or a.dest.upper()))
        assert docs[name] == flags, f"gpucat {name}: docs/cli.md and the parser differ"


def sections() -> dict[str, list[str]]:
    """docs/cli.md's `## gpucat NAME` sections: {command: its lines}."""
    out: dict[str, list[str]] = {}
    name = None
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        m = re.match(r"## (gpucat (\S+)|.*)", line)
        if m:
            name = m.group(2)
            if name:
                out[name] = []
        elif name:
            out[name].append(line)
    return out


def test_docs_cli_opens_each_command_with_its_summary_and_groups_its_flags_as_help_does():
    """Each section's first line is the summary `gpucat --help` gives the command; each
    group of flags `gpucat NAME --help` shows under a title of its own is a `###` heading of
    the section, its table those flags."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summary = {a.dest: a.help for a in action._choices_actions}
    for name, lines in sections().items():
        text = [ln for ln in lines if ln.strip()]
        assert text[0] == summary[name][:1].upper() + summary[name][1:] + ".", name
        under: dict[str, set[str]] = {}
        heading = None
        for line in lines:
            if line.startswith("### "):
                heading = line[4:]
                under[heading] = set()
            elif heading and line.startswith("| `"):
                under[heading].add(line.split("`")[1].split()[0].rstrip(","))
        groups = {
            g.title: {a.option_strings[0] for a in g._group_actions}
            for g in subcommands()[name]._action_groups
            if g.title not in ("positional arguments", "options") and g._group_actions
        }
        assert under == groups, f"gpucat {name}: docs/cli.md's groups differ from --help's"


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150

"""pytest collects the Python blocks of README.md and docs/*.md (sybil): each block runs on
its own, in a fresh namespace, so that an example cannot lean on the one before it. A block
that cannot run here is preceded by `<!-- skip: next -->`."""

from __future__ import annotations

from pathlib import Path

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent


def _standalone(example) -> None:
    code = compile(example.parsed, str(example.path), "exec", dont_inherit=True)
    exec(code, {"__name__": "__main__"})


_collect = Sybil(
    parsers=[CodeBlockParser("python", evaluator=_standalone), SkipParser()],
    patterns=["*.md"],
).pytest()


def pytest_collect_file(file_path, parent):
    if file_path == ROOT / "README.md" or file_path.parent == ROOT / "docs":
        return _collect(file_path, parent)
    return None

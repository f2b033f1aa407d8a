"""The shape the code keeps (docs: README, "How the code is laid out"): subpackages by
concern, one level deep, a short top level, short functions, and scripts/ holding only the
quickstart's commands and their helpers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gpucat"
LONGEST = 60  # lines a function may take, its docstring included


def test_subpackages_one_level_deep_and_a_short_top_level():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(set(subpackages) - {"cli"}) >= 4, subpackages
    for sub in subpackages:  # one level deep
        assert not [p for p in (PACKAGE / sub).iterdir() if (p / "__init__.py").exists()]
    assert len(list(PACKAGE.glob("*.py"))) <= 12


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert not long, long


def test_scripts_holds_the_quickstart_and_its_helpers():
    files = sorted(p.name for p in (ROOT / "scripts").iterdir())
    assert len(files) <= 6 and {"train.sh", "test.sh"} <= set(files), files
    readme = (ROOT / "README.md").read_text()
    for name in ("train.sh", "test.sh"):
        assert f"bash scripts/{name}" in readme


def test_every_file_a_command_runs_exists():
    """Each `bash PATH` / `python PATH` in the pages' shell blocks names a file of the tree."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        inside = False
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                inside = line.strip() in ("```bash", "```sh")
                continue
            words = line.split("#")[0].split()
            for runner, path in zip(words, words[1:]):
                if inside and runner in ("bash", "python", "python3") and "/" in path:
                    if not (ROOT / path).exists():
                        missing.append(f"{page.name}: {path}")
    assert not missing, missing


DEVICE_NAMES = {"numpy", "cupy", "cupy-standin", "strict", "array-api-strict", "cpu", "gpu", "cuda"}


def test_no_code_outside_the_device_layer_asks_which_device_it_runs_on():
    """A comparison of a device's or backend's name against a device's name belongs to
    gpucat/backends only: elsewhere the device object answers (its data movement and
    primitives)."""
    asks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "backends"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            words = {
                c.value
                for side in sides
                for c in ast.walk(side)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            about = " ".join(ast.unparse(s) for s in sides).lower()
            if words & DEVICE_NAMES and any(w in about for w in ("device", "backend", ".xp")):
                asks.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not asks, asks

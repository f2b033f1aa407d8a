#!/usr/bin/env python3
"""Say in one line each which of gpucat's requirements this Python lacks or has too old.

    python checks/check_requirements.py [EXTRA ...]      (default: the test extra)

For a machine set up without pip resolving anything (checks/gpu_check.sh installs with
--no-deps): a missing package is named at the start, not found later as failing tests.
Exit code 1 when something is missing.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[Requirement]:
    """The core requirements and those of each extra, extras that name gpucat expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    out, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            r = Requirement(text)
            if r.name == project["name"]:
                todo.extend(r.extras)
            else:
                out.append(r)
    return out


def problems(reqs: list[Requirement]) -> list[str]:
    out = []
    for r in reqs:
        if r.marker is not None and not r.marker.evaluate():
            continue
        try:
            have = metadata.version(r.name)
        except metadata.PackageNotFoundError:
            out.append(f"missing: {r}")
            continue
        if r.specifier and not r.specifier.contains(have, prereleases=True):
            out.append(f"too old or too new: {r.name} {have} (needs {r.specifier})")
    return out


def main(argv: list[str] | None = None) -> int:
    extras = (argv if argv is not None else sys.argv[1:]) or ["test"]
    found = problems(requirements(extras))
    for line in found:
        print(f"requirement {line}")
    print(f"requirements of gpucat[{','.join(extras)}]: {'ok' if not found else 'NOT met'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Mutation testing of chosen modules with mutmut: each module's mutants against the tests
that cover it (MODULES), in a copy of this tree, so nothing here is written but the report.

    bash checks/mutation.sh gpucat/data/inputs.py gpucat/frontends/compare.py --report FILE.json
    bash checks/mutation.sh --all --report FILE.json       # every module in MODULES

Prints each module's kill ratio and its survivors (the mutant's name and its changed lines);
``--report`` writes them as JSON. A survivor is either killed by a new test or listed, with
the reason it changes nothing a user could see, in docs/testing.md's table of equivalent
mutants (read here: those count neither way). ``--work DIR`` keeps mutmut's folder, so that a
second run resumes: it tests the mutants of functions that changed, and the survivors and
timeouts again (against the tests as they are now); by default it is a temporary folder.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# each module where users meet gpucat's edges, and the test files that cover it
MODULES = {
    "gpucat/data/inputs.py": ["tests/test_inputs.py", "tests/test_own_data.py", "tests/test_big_data.py"],
    "gpucat/data/dataset.py": ["tests/test_data_checks.py", "tests/test_inputs.py", "tests/test_own_data.py", "tests/test_api.py"],
    "gpucat/data/h5.py": ["tests/test_data_checks.py", "tests/test_inputs.py", "tests/test_own_data.py", "tests/test_big_data.py"],
    "gpucat/data/course.py": ["tests/test_data_checks.py", "tests/test_fetch.py"],
    "gpucat/data/batches.py": ["tests/test_batches.py", "tests/test_big_data.py", "tests/test_training_options.py", "tests/test_properties.py"],
    "gpucat/data/shards.py": ["tests/test_batches.py", "tests/test_big_data.py", "tests/test_device_memory.py", "tests/test_properties.py"],
    "gpucat/data/streaming.py": ["tests/test_streaming_edges.py", "tests/test_big_data.py"],
    # (test_train.py's long runs check the math, not the loop's control; the two slowest runs
    # of the others, 5 and 15 s, are left to the suite: a survivor runs every test it reaches)
    "gpucat/training/loop.py": ["tests/test_train.py", "tests/test_training_options.py", "tests/test_honest_runs.py", "tests/test_checkpoints.py", "tests/test_properties.py", "tests/test_train_command.py",
                                "-k", "not published and not full_reference_run and not 50_iterations and not early_stopping_restores and not writes_nothing_under_home"],
    "gpucat/training/checkpoint.py": ["tests/test_checkpoints.py", "tests/test_honest_runs.py", "tests/test_training_options.py", "tests/test_cli.py"],
    "gpucat/modelfiles/model.py": ["tests/test_modelfiles.py", "tests/test_models.py", "tests/test_own_data.py", "tests/test_cli.py"],
    "gpucat/modelfiles/export.py": ["tests/test_models.py", "tests/test_own_data.py"],
    # (scikit-learn's own suite runs in a process of its own, a minute a mutant: left to the
    # suite; where fit's warning points cannot be checked under mutmut, whose trampoline is
    # one more frame between fit and its caller: docs/testing.md, "Checked outside the run")
    "gpucat/frontends/estimator.py": ["tests/test_estimator.py", "tests/test_api.py", "-k", "not check_estimator and not points_at_the_callers_fit_line"],
    "gpucat/frontends/compare.py": ["tests/test_compare.py", "tests/test_api.py"],
    "gpucat/cli/train.py": ["tests/test_train_command.py", "tests/test_cli.py", "tests/test_docs.py", "tests/test_honest_runs.py"],
    "gpucat/cli/__init__.py": ["tests/test_cli.py", "tests/test_backend.py", "tests/test_docs.py", "tests/test_train_command.py"],
    "gpucat/config.py": ["tests/test_config.py", "tests/test_training_options.py", "tests/test_cli.py", "tests/test_docs.py", "tests/test_train_command.py", "tests/test_checkpoints.py", "tests/test_api.py"],
    "gpucat/files.py": ["tests/test_models.py", "tests/test_own_data.py", "tests/test_cli.py", "tests/test_checkpoints.py", "tests/test_honest_runs.py"],
    "gpucat/cli/evaluate.py": ["tests/test_cli.py", "tests/test_docs.py", "tests/test_own_data.py", "tests/test_inputs.py"],
}  # fmt: skip
# mutmut's verdicts by the exit code of the tests a mutant ran (mutmut/stats.py); a mutant
# whose tests fail, time out or crash is killed, any other is not. Exit code 2 is pytest's
# for a KeyboardInterrupt: in an unattended run, one the mutant raised (gpucat's Interrupted
# is one), which stopped the tests: killed too
STATUS = {1: "killed", 3: "killed", 2: "interrupted", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout",
          24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault"}  # fmt: skip
KILLED = {"killed", "interrupted", "timeout", "caught by type check", "segfault"}
EQUIVALENT_TABLE = ROOT / "docs" / "testing.md"


def equivalent() -> dict[str, str]:
    """docs/testing.md's equivalent mutants: {name: the reason}."""
    rows = re.findall(
        r"^\| `([\w.]+__mutmut_\d+)` \| (.+?) \|$", EQUIVALENT_TABLE.read_text(), re.M
    )
    return dict(rows)


def tree_files() -> list[str]:
    """The files of this tree as git sees them: tracked, and untracked but not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).exists()]


def snapshot(into: Path) -> Path:
    """This tree as git sees it, copied once: every module is tested against the same code."""
    for f in tree_files():
        target = into / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    return into


def prepare(work: Path, tree: Path, module: str, tests: list[str]) -> None:
    """A copy of the snapshot in ``work`` whose pyproject.toml tells mutmut what to mutate
    and which tests to run; an existing copy keeps its mutants folder (resumed)."""
    shutil.copytree(tree, work, dirs_exist_ok=True)
    config = {
        "source_paths": ["gpucat"],
        "only_mutate": [module],
        "also_copy": [
            "data/",
            "scripts/",
            "checks/",
            "benchmarks/",
            "docs/",
            "README.md",
            "conftest.py",
        ],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-x"],
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    with open(work / "pyproject.toml", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    meta = work / "mutants" / f"{module}.meta"
    if meta.exists():  # resumed: mutmut keeps every verdict; survivors (and timeouts, which
        # a stuck worker can cause) meet today's tests again
        data = json.loads(meta.read_text())
        again = lambda c: STATUS.get(c) not in KILLED or STATUS.get(c) == "timeout"  # noqa: E731
        data["exit_code_by_key"] = {
            k: None if again(c) else c for k, c in data["exit_code_by_key"].items()
        }
        meta.write_text(json.dumps(data))


def results(work: Path, module: str) -> dict[str, dict]:
    """{mutant name: {"status": ..., "diff": changed lines}} from mutmut's records."""
    meta = json.loads((work / "mutants" / f"{module}.meta").read_text())
    out = {}
    for name, code in meta["exit_code_by_key"].items():
        out[name] = {"status": STATUS.get(code, "not checked" if code is None else "suspicious")}
    variants = functions((work / "mutants" / module).read_text())
    for name, row in out.items():
        if row["status"] not in KILLED:
            mutant = name.rsplit(".", 1)[-1]
            original = variants.get(mutant.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", [])
            changed = difflib.unified_diff(original, variants.get(mutant, []), lineterm="", n=0)
            row["diff"] = [ln for ln in changed if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    return out


def functions(source: str) -> dict[str, list[str]]:
    """Every function of mutmut's mutated module by name (a mutant and the original are
    functions of their own there), as its lines, its own name left out of them."""
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            text = lines[node.lineno - 1 : node.end_lineno]
            out[node.name] = [ln.strip().replace(node.name, "f") for ln in text]
    return out


def run(module: str, work: Path, tree: Path, jobs: int) -> dict:
    tests = MODULES[module]
    prepare(work, tree, module, tests)
    started = time.monotonic()
    log = work / "mutmut.log"
    with open(log, "w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)],
            cwd=work, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TERM": "dumb"},
        )  # fmt: skip
    if not (work / "mutants" / f"{module}.meta").exists():
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(
            f"mutation: mutmut made no results for {module} (exit {done.returncode}; "
            f"{log}): {' / '.join(tail)}; run it as `bash checks/mutation.sh`, which installs "
            "mutmut"
        )
    mutants = results(work, module)
    unchecked = sum(r["status"] == "not checked" for r in mutants.values())
    if unchecked:
        raise SystemExit(
            f"mutation: mutmut left {unchecked} of {len(mutants)} mutants of {module} unchecked "
            f"(do the tests pass without a mutant? was it stopped?); see {log}"
        )
    known = equivalent()
    live = {n: r for n, r in mutants.items() if n not in known}
    killed = sum(r["status"] in KILLED for r in live.values())
    return {
        "module": module,
        "tests": tests,
        "mutants": len(mutants),
        "equivalent": sorted(n for n in mutants if n in known),
        "killed": killed,
        "kill_ratio": killed / len(live) if live else 1.0,
        "survivors": {n: r for n, r in live.items() if r["status"] not in KILLED},
        "stale_equivalents": sorted(
            n for n in known if n.startswith(module_prefix(module)) and n not in mutants
        ),
        "seconds": round(time.monotonic() - started),
    }


def head() -> str:
    """The commit the tree is at, with a mark when it has changes not committed."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
    )
    return commit.stdout.strip() + (" (with changes)" if dirty.stdout.strip() else "")


def module_prefix(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".") + "."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", help=f"modules to mutate, among: {', '.join(MODULES)}")
    p.add_argument("--all", action="store_true", help="every module in MODULES")
    p.add_argument("--report", type=Path, help="write the results here as JSON")
    p.add_argument("--work", type=Path, help="mutmut's folder, kept (default: a temporary one)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    modules = list(MODULES) if a.all else a.modules
    unknown = [m for m in modules if m not in MODULES]
    if not modules or unknown:
        p.error(f"name modules among {', '.join(MODULES)} (or --all); unknown: {unknown}")
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
    base = a.work or Path(tempfile.mkdtemp(prefix="gpucat-mutation-"))
    report = {"date": time.strftime("%Y-%m-%d"), "commit": head(), "modules": []}
    try:
        tree = snapshot(base / "tree")
        for module in modules:
            work = base / module.replace("/", "_").removesuffix(".py")
            work.mkdir(parents=True, exist_ok=True)
            row = run(module, work, tree, a.jobs)
            report["modules"].append(row)
            print(
                f"{module}: {row['killed']} of {row['mutants'] - len(row['equivalent'])} killed "
                f"({row['kill_ratio']:.1%}), {len(row['equivalent'])} equivalent, "
                f"{len(row['survivors'])} survived, {row['seconds']} s",
                flush=True,
            )
            for name, r in row["survivors"].items():
                print(f"  {name} ({r['status']}): {' / '.join(r.get('diff', []))[:200]}")
            if a.report:
                a.report.write_text(json.dumps(report, indent=1) + "\n")
    finally:
        if not a.work:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

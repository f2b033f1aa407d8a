"""The package as users get it, on every Python gpucat supports: `nox` (or `bash .ci/run`).

- ``package``: sdist and wheel with `python -m build`, checked by twine and
  check-wheel-contents, into dist/.
- ``installed-3.10`` ... ``installed-3.13``: the wheel built from this tree, installed (not
  editable) with its test extras into a fresh environment, and the tests in ``INSTALLED``
  run against it from outside the repository: training against the independent reference
  (test_train: the published run; every backend equal to it), the network's steps and Ops
  on every backend (test_network), the device shim (test_backend), the command line
  (test_cli, test_compare), model files (test_models), the public Python API (test_api)
  and the installed command as a user has it (test_installed).

An interpreter that is not on the PATH is skipped, and nox says so (CI passes
--no-error-on-missing-interpreters and prints the list).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # pyproject.toml's classifiers
INSTALLED = [
    "tests/test_train.py",
    "tests/test_network.py",
    "tests/test_backend.py",
    "tests/test_cli.py",
    "tests/test_compare.py",
    "tests/test_models.py",
    "tests/test_installed.py",
    "tests/test_api.py",
]
nox.options.sessions = ["package", "installed"]
nox.options.default_venv_backend = "venv"


@nox.session
def package(session: nox.Session) -> None:
    session.install("build", "twine", "check-wheel-contents")
    dist = ROOT / "dist"
    for old in dist.glob("gpucat-*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    session.run("twine", "check", "--strict", *map(str, dist.glob("gpucat-*")))
    session.run("check-wheel-contents", *map(str, dist.glob("gpucat-*.whl")))


@nox.session(python=PYTHONS)
def installed(session: nox.Session) -> None:
    tmp = Path(session.create_tmp()).resolve()
    wheels = tmp / "wheel"
    for old in wheels.glob("gpucat-*.whl"):
        old.unlink()
    session.run("python", "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("gpucat-*.whl")
    session.install(f"{wheel}[test]")
    where = tmp / "elsewhere"  # not the repository: `import gpucat` must find the installed one
    where.mkdir(exist_ok=True)
    session.chdir(where)
    session.run(
        "python", "-c", "import gpucat, sys; sys.exit('site-packages' not in gpucat.__file__)"
    )  # and under pytest: tests/conftest.py refuses a gpucat that is not the installed one
    env = {"GPUCAT_WHEEL": str(wheel), "GPUCAT_DATA_DIR": os.environ.get("GPUCAT_DATA_DIR", "")}
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
        # not the root conftest.py (the docs' collector): pytest would put the repository
        # on sys.path, and `import gpucat` would find the tree instead of the wheel
        "--confcutdir",
        str(ROOT / "tests"),
        *[str(ROOT / t) for t in INSTALLED],
        *session.posargs,
        env=env,
    )

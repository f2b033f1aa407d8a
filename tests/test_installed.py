"""gpucat as a user has it: the wheel built from this tree, installed (not editable) into a
fresh virtual environment outside the repository, run from an empty folder with a new HOME
and no GPUCAT_* variables. Editable installs map the whole source folder and hide what the
wheel lacks; these tests do not.

The wheel is built here (pip, build isolation), or taken from GPUCAT_WHEEL (the nox sessions
pass the one they built). Its dependencies come from the package index pip is set up for;
where there is none (a GPU machine), checks/gpu_check.sh deselects these tests (marker
``installed``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from gpucat import __version__
from gpucat.data.course import SHA256, TEST_FILE, TRAIN_FILE, sha256_of

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.installed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("GPUCAT_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("gpucat-*.whl")
    return path


def test_the_wheel_holds_every_module_and_both_course_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gpucat").rglob("*.py")}
    assert modules and modules <= names, sorted(modules - names)
    for name in (TRAIN_FILE, TEST_FILE):
        assert f"gpucat/course_data/{name}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [
        n for n in names if n.startswith(("tests/", "data/", "scripts/", "checks/", "benchmarks/"))
    ]


@pytest.fixture(scope="module")
def user(tmp_path_factory, wheel):
    """run(*command) in the user's empty folder, with the user's fresh venv first on PATH."""
    home = tmp_path_factory.mktemp("home")
    work = tmp_path_factory.mktemp("work")
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCAT_", "PYTHON"))}
    env = {
        **clean,
        "HOME": str(home),
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{clean.get('PATH', '')}",
        "VIRTUAL_ENV": str(env_dir),
    }
    env.pop("XDG_CACHE_HOME", None)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    cache = os.environ.get("PIP_CACHE_DIR")  # the real HOME's pip cache keeps reruns quick
    cache = cache or str(Path.home() / ".cache" / "pip")
    subprocess.run(
        [*pip, "--disable-pip-version-check", "--cache-dir", cache, str(wheel)],
        check=True,
        env=env,
        cwd=work,
    )

    def run(*command: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, capture_output=True, text=True, env={**env, **extra}, cwd=work
        )

    run.home, run.work, run.env_dir = home, work, env_dir
    return run


def test_the_installed_command_trains_the_published_run_offline(user):
    version = user("gpucat", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gpucat {__version__}"
    where = user("python", "-c", "import gpucat; print(gpucat.__file__)")
    assert str(user.env_dir) in where.stdout  # the installed copy, not this tree
    out = user(
        "gpucat", "train", "--json", "--device", "cpu"
    )  # the course files come from the wheel: no network, nothing beside it
    assert out.returncode == 0, out.stderr
    assert "downloading" not in out.stderr.lower()
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert round(doc["costs"][0][1], 6) == 0.771749
    assert (doc["train_correct"], doc["train_examples"]) == (206, 209)
    assert (doc["test_correct"], doc["test_examples"]) == (40, 50)
    assert list(user.work.iterdir()) == []  # nothing written where the user stands


def test_the_installed_info_and_compare(user):
    info = user("python", "-m", "gpucat", "info", "--json")
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert doc["gpucat"] == __version__ and doc["python_executable"].startswith(str(user.env_dir))
    out = user("gpucat", "compare", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    numpy64 = next(r for r in result["rows"] if r["backend"] == "numpy" and r["dtype"] == "float64")
    assert (numpy64["train_correct"], numpy64["test_correct"]) == (206, 40)
    assert {r["dtype"] for r in result["rows"]} == {"float32", "float64"}


def test_fetch_data_writes_into_the_user_cache_not_the_package(user):
    """fetch-data's folder is the user's cache; where no address answers it says why for
    each, whole, and the package's own copies stay as they are."""
    refused = "http://127.0.0.1:9/"  # nothing listens on port 9
    out = user("gpucat", "fetch-data", GPUCAT_DATA_URL=refused)
    cache = user.home / ".cache" / "gpucat"
    assert out.returncode == 2 and f"{cache / TRAIN_FILE}: could not download" in out.stderr
    assert f"{refused}{TRAIN_FILE}\n    ConnectionError: " in out.stderr
    assert "Traceback" not in out.stderr and not list(cache.iterdir())
    packaged = user(
        "python", "-c", "from gpucat.data.course import default_data_dir; print(default_data_dir())"
    )
    folder = Path(packaged.stdout.strip())
    assert folder.is_relative_to(user.env_dir)
    for name in (TRAIN_FILE, TEST_FILE):
        assert sha256_of(folder / name) == SHA256[name]

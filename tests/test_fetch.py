"""Downloads over a loopback HTTP server: verification, fallback, nothing corrupt kept."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

from gpucat.data import fetch
from gpucat.data.course import TEST_FILE, TRAIN_FILE, load_course_data
from gpucat.errors import GpucatError

from conftest import data_file, run_gpucat


@pytest.fixture
def serve(tmp_path):
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 for that folder."""
    servers = []

    def start(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def good_copy(folder):
    folder.mkdir()
    for name in (TRAIN_FILE, TEST_FILE):
        shutil.copy(data_file(f"catvnoncat/{name}"), folder / name)
    return folder


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedded_files_are_the_published_ones():
    """data/ and tests/fixtures hold the published bytes, and gpucat pins the same hashes."""
    sums = dict(reversed(line.split()) for line in data_file("SHA256SUMS").read_text().splitlines())
    assert fetch.SHA256[TRAIN_FILE] == sums[f"catvnoncat/{TRAIN_FILE}"]
    assert fetch.SHA256[TEST_FILE] == sums[f"catvnoncat/{TEST_FILE}"]
    for relative, digest in sums.items():
        assert sha256(data_file(relative)) == digest, relative


def test_train_runs_offline_on_the_embedded_data():
    """No GPUCAT_DATA_DIR and no reachable download address: data/ is enough."""
    env = {k: v for k, v in os.environ.items() if k != "GPUCAT_DATA_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "gpucat", "train", "--device", "cpu", "--iterations", "3"],
        capture_output=True,
        text=True,
        env={**env, "GPUCAT_DATA_URL": "http://127.0.0.1:9/"},  # nothing listens on port 9
        cwd=tmp_cwd(),
    )
    assert out.returncode == 0, out.stderr
    assert "downloading" not in out.stderr and "209 examples" in out.stdout
    assert "/209)" in out.stdout and "/50)" in out.stdout  # both embedded files were read


def tmp_cwd() -> str:
    """Somewhere other than the project root, so that data/ is found from the package."""
    import tempfile

    return tempfile.gettempdir()


def test_a_changed_course_file_is_refused(tmp_path, capsys):
    """One flipped byte in a course file: a clear error naming it, not a different result."""
    from gpucat.cli import main

    d = good_copy(tmp_path / "d")
    raw = bytearray((d / TEST_FILE).read_bytes())
    raw[-100] ^= 0xFF
    (d / TEST_FILE).write_bytes(bytes(raw))
    assert main(["train", "--device", "cpu", "--iterations", "1", "--data-dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert str(d / TEST_FILE) in err and "not the published course file" in err
    assert "gpucat fetch-data" in err and "Traceback" not in err


def test_download_and_verify(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("GPUCAT_DATA_URL", serve(good_copy(tmp_path / "site")))
    dest, done = fetch.fetch_data(tmp_path / "data", progress=False)
    assert done == ["downloaded", "downloaded"]
    for name in (TRAIN_FILE, TEST_FILE):
        assert sha256(dest / name) == fetch.SHA256[name]
    train, test = load_course_data(dest)
    assert (train.n_examples, test.n_examples) == (209, 50)


def test_corrupted_download_is_rejected_and_not_kept(tmp_path, serve):
    site = good_copy(tmp_path / "site")
    data = bytearray((site / TRAIN_FILE).read_bytes())
    data[5000] ^= 0xFF  # one flipped byte
    (site / TRAIN_FILE).write_bytes(bytes(data))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(GpucatError, match="could not download a verified copy") as e:
        fetch.fetch_file(TRAIN_FILE, dest, (serve(site),))
    assert "SHA256" in str(e.value) or "hash" in str(e.value)
    assert list(dest.iterdir()) == []  # neither the file nor a temporary left behind


def test_truncated_download_is_rejected(tmp_path, serve):
    site = good_copy(tmp_path / "site")
    (site / TEST_FILE).write_bytes((site / TEST_FILE).read_bytes()[:1000])
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(GpucatError):
        fetch.fetch_file(TEST_FILE, dest, (serve(site),))
    assert list(dest.iterdir()) == []


def test_falls_back_to_the_mirror(tmp_path, serve):
    broken = tmp_path / "broken"
    broken.mkdir()  # serves 404 for everything
    mirror = good_copy(tmp_path / "mirror")
    dest = tmp_path / "data"
    dest.mkdir()
    path = fetch.fetch_file(TEST_FILE, dest, (serve(broken), serve(mirror)))
    assert sha256(path) == fetch.SHA256[TEST_FILE]


def test_fetch_replaces_an_html_page_saved_as_h5(tmp_path, serve):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / TEST_FILE).write_text("<!DOCTYPE HTML><html>not the data</html>")
    fetch.fetch_file(TEST_FILE, dest, (serve(good_copy(tmp_path / "site")),))
    assert sha256(dest / TEST_FILE) == fetch.SHA256[TEST_FILE]


def test_train_downloads_missing_data_then_trains(tmp_path, serve):
    url = serve(good_copy(tmp_path / "site"))
    out = run_gpucat(
        "train",
        "--iterations",
        "5",
        "--data-dir",
        str(tmp_path / "fresh"),
        env_extra={"GPUCAT_DATA_URL": url},
    )
    assert out.returncode == 0, out.stderr
    assert "downloading" in out.stderr and "Train accuracy" in out.stdout
    assert sha256(tmp_path / "fresh" / TRAIN_FILE) == fetch.SHA256[TRAIN_FILE]


def test_fetch_data_command(tmp_path, serve):
    url = serve(good_copy(tmp_path / "site"))
    out = run_gpucat(
        "fetch-data", "--data-dir", str(tmp_path / "d"), env_extra={"GPUCAT_DATA_URL": url}
    )
    assert out.returncode == 0, out.stderr
    assert f"{tmp_path / 'd' / TEST_FILE}: downloaded" in out.stdout
    assert f"gpucat train --data-dir {tmp_path / 'd'}" in out.stdout
    assert (tmp_path / "d" / TEST_FILE).is_file()


def test_fetch_data_says_when_it_downloads_nothing_and_force_downloads_anew(tmp_path, serve):
    """Verified copies already there: nothing is downloaded, and the words say so;
    --force downloads both anew (the server sees two requests)."""
    site = good_copy(tmp_path / "site")
    dest = good_copy(tmp_path / "d")
    before = {n: (dest / n).stat().st_mtime_ns for n in (TRAIN_FILE, TEST_FILE)}
    url = serve(site)
    out = run_gpucat("fetch-data", "--data-dir", str(dest), env_extra={"GPUCAT_DATA_URL": url})
    assert out.returncode == 0, out.stderr
    assert f"{dest / TRAIN_FILE}: verified" in out.stdout and "--force" in out.stdout
    assert "downloaded" not in out.stdout
    assert before == {n: (dest / n).stat().st_mtime_ns for n in before}
    out = run_gpucat(
        "fetch-data", "--force", "--data-dir", str(dest), env_extra={"GPUCAT_DATA_URL": url}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": downloaded") == 2 and "--force" not in out.stdout
    assert all((dest / n).stat().st_mtime_ns != t for n, t in before.items())
    assert sorted(p.name for p in dest.iterdir()) == sorted([TEST_FILE, TRAIN_FILE])


def test_a_failed_forced_download_keeps_the_good_copy(tmp_path, serve):
    dest = good_copy(tmp_path / "d")
    broken = tmp_path / "broken"
    broken.mkdir()  # 404 for everything
    out = run_gpucat(
        "fetch-data",
        "--force",
        "--data-dir",
        str(dest),
        env_extra={"GPUCAT_DATA_URL": serve(broken)},
    )
    assert out.returncode == 2 and "could not download a verified copy" in out.stderr
    assert sha256(dest / TRAIN_FILE) == fetch.SHA256[TRAIN_FILE]
    assert sorted(p.name for p in dest.iterdir()) == sorted([TEST_FILE, TRAIN_FILE])


def test_each_address_gives_its_whole_reason_on_its_own_line(tmp_path):
    """Offline, every address is named with its reason, not cut mid-word."""
    urls = ("http://127.0.0.1:9/a/", "http://127.0.0.1:9/b/")  # nothing listens on port 9
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(GpucatError) as e:
        fetch.fetch_file(TEST_FILE, dest, urls)
    lines = str(e.value).splitlines()
    for url in urls:
        k = lines.index(f"  {url}{TEST_FILE}")
        reason = lines[k + 1]
        assert reason.startswith("    ConnectionError: ") and reason.rstrip().endswith(")")
        assert "Connection refused" in reason
    assert list(dest.iterdir()) == []


def test_fetch_data_defaults_to_the_user_cache(tmp_path, serve):
    url = serve(good_copy(tmp_path / "site"))
    env = {"GPUCAT_DATA_URL": url, "XDG_CACHE_HOME": str(tmp_path / "cache"), "GPUCAT_DATA_DIR": ""}
    out = run_gpucat("fetch-data", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert sha256(tmp_path / "cache" / "gpucat" / TRAIN_FILE) == fetch.SHA256[TRAIN_FILE]

"""`gpucat train` in the test's own process: the data it takes, the lines it prints (on a
terminal too), its checkpoints and resumption, and where it runs. (tests/test_cli.py runs the
command in fresh processes as well.)"""

from __future__ import annotations

import json
import shutil
import sys
import time
import types

import numpy as np
import pytest

from gpucat import backends
from gpucat.cli import main
from gpucat.cli import train as train_command
from gpucat.data.streaming import H5Source
from gpucat.modelfiles.model import load_model
from gpucat.training.reducers import LocalReducer

from conftest import data_file

SMALL = ["--device", "cpu", "--layers", "12288,3,1"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gpucat ARGV` run by main() in this process."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def labelled_photos(root):
    """Four labelled photos: two under cat/, two under non-cat/."""
    for k, photo in enumerate(sorted(data_file("photos").iterdir())):
        sub = root / ("cat" if k % 2 else "non-cat")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, sub / photo.name)
    return root


def test_own_files_are_streamed_and_announced(tmp_path, capsys, monkeypatch):
    """--train a uint8 h5 (read from disk as training goes) and --test a folder: the first
    line names what trains on what, each log point is one line, the scores count each set."""
    reads = []
    real_read = H5Source.read
    monkeypatch.setattr(H5Source, "read", lambda self, idx: reads.append(len(idx)) or real_read(self, idx))  # fmt: skip
    h5, photos = data_file("catvnoncat/test_catvnoncat.h5"), labelled_photos(tmp_path / "p")
    argv = [*SMALL, "--iterations", "3", "--log-every", "1", "--train", str(h5)]
    code, out, err = cli(capsys, "train", *argv, "--test", str(photos), "--json")
    assert code == 0, err
    lines, doc = out.splitlines(), last_json(out)
    label = backends.get_device("cpu").label
    assert lines[0] == (
        f"Training 12288-3-1 on {label}, float64, 3 iterations, learning rate 0.0075, "
        f"50 examples from {h5}"
    )
    assert [ln for ln in lines if ln.startswith("Cost after")] == [
        f"Cost after iteration {i}: {c:.6f}" for i, c in doc["costs"]
    ]
    assert [i for i, _ in doc["costs"]] == [0, 1, 2] and sum(reads) >= 3 * 50
    assert f"Test accuracy: {doc['test_accuracy']:.4f} ({doc['test_correct']}/4)" in lines
    # without --test, own training data is scored on itself alone
    code, out, err = cli(capsys, "train", *argv)
    assert code == 0, err
    assert "Train accuracy: " in out and "Test accuracy" not in out


def test_own_training_data_must_be_labelled_and_excludes_data_dir(tmp_path, capsys):
    photos = data_file("photos")
    code, out, err = cli(capsys, "train", *SMALL, "--train", str(photos))
    assert code == 2 and out == "" and err.startswith(f"gpucat: error: {photos}: ")
    assert "carry no labels" in err
    code, out, err = cli(capsys, "train", *SMALL, "--train", str(photos), "--data-dir", "d")
    assert code == 2 and out == ""
    assert err == "gpucat: error: --data-dir names the course files; drop it when giving --train.\n"


def test_missing_course_files_are_downloaded_into_the_folder_named(tmp_path, capsys, monkeypatch):
    """Course files missing from --data-dir: one line says so, the download goes there (not
    to GPUCAT_DATA_DIR), and training reads them from there; --test still wins over the
    course test set."""
    from gpucat.data import fetch

    fetched, files = [], [data_file(f"catvnoncat/{n}_catvnoncat.h5") for n in ("train", "test")]

    def fake_fetch(folder):  # the verified files, as a download would leave them
        fetched.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, folder / f.name)

    monkeypatch.setattr(fetch, "fetch_data", fake_fetch)
    monkeypatch.setenv("GPUCAT_DATA_DIR", str(tmp_path / "elsewhere"))
    fresh, photos = tmp_path / "fresh", labelled_photos(tmp_path / "p")
    argv = ["train", *SMALL, "--iterations", "1", "--data-dir", str(fresh), "--test", str(photos)]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert err == f"Course data not found in {fresh}; downloading it.\n"
    assert fetched == [fresh] and f"209 examples from {fresh / 'train_catvnoncat.h5'}" in out
    assert "Test accuracy: " in out and "/4)" in out


def test_the_end_of_a_run_reports_early_stopping_and_a_dead_network(capsys):
    argv = [*SMALL, "--iterations", "200", "--optimizer", "adam", "--learning-rate", "0.01",
            "--validation", "0.3", "--patience", "1", "--validate-every", "1", "--json"]  # fmt: skip
    code, out, err = cli(capsys, "train", *argv)
    assert code == 0, err
    doc = last_json(out)
    assert doc["stopped_early"] and doc["iterations_done"] < 200 and doc["dead_layers"] == [1]
    assert (doc["train_examples"], doc["validation_examples"]) == (146, 63)
    assert (
        f"Early stopping after iteration {doc['iterations_done'] - 1}; restored the parameters "
        f"of iteration {doc['best_iteration']} (best validation cost)"
    ) in out.splitlines()
    assert err == (
        "gpucat: warning: every unit of hidden layer 1 is inactive for every training image, "
        "so the model gives all inputs the same probability (a 'dead' ReLU network). Try "
        "another --seed or a smaller --learning-rate.\n"
    )
    validations = [ln for ln in out.splitlines() if ln.startswith("Validation cost after")]
    assert validations == [f"Validation cost after iteration {i}: {c:.6f}" for i, c in doc["validation_costs"]]  # fmt: skip


def test_the_model_and_the_plot_carry_the_run(tmp_path, capsys, monkeypatch):
    """--out stores the JSON summary as the model's record; --plot draws the costs under a
    title naming the stack and the learning rate."""
    from gpucat.frontends import plots

    drawn = []
    monkeypatch.setattr(plots, "plot_costs", lambda *a: drawn.append(a))
    model, png = tmp_path / "m.safetensors", tmp_path / "c.png"
    argv = [*SMALL, "--iterations", "2", "--out", str(model), "--plot", str(png), "--json"]
    started = time.perf_counter()
    code, out, err = cli(capsys, "train", *argv)
    elapsed = time.perf_counter() - started
    assert code == 0, err
    doc = last_json(out)
    assert 0 < doc["seconds"] < elapsed and doc["reduce"] == "one process"
    assert doc["cost_kind"] == "mean loss over the whole training set in the training pass"
    assert f"Device: {doc['device']}, solver: {doc['solver']}, gradients: one process" in out
    record = {k: v for k, v in doc.items() if k not in ("threads", "model", "checkpoint")}
    assert load_model(model).metadata["result"] == record
    costs = [tuple(c) for c in doc["costs"]]
    assert [(p, {k: list(v) for k, v in curves.items()}, title) for p, curves, title in drawn] == [
        (str(png), {"numpy float64": costs}, "gpucat 12288-3-1, lr 0.0075")
    ]


def test_checkpoints_every_n_and_a_resumed_run_equal_an_uninterrupted_one(tmp_path, capsys, monkeypatch):  # fmt: skip
    """Train 20 of 40 iterations writing a checkpoint every 10, resume to 40: the same model
    values as one run of 40; the resumed run keeps the saved recipe, takes the flags given,
    counts its own iterations' time, and refuses a different recipe."""
    import gpucat.training.checkpoint as checkpoints

    saved = []
    real_save = checkpoints.save_checkpoint
    monkeypatch.setattr(checkpoints, "save_checkpoint", lambda path, *a: saved.append(a[-1].next_iteration) or real_save(path, *a))  # fmt: skip
    common = ["--device", "cpu", "--dtype", "float64", "--layers", "12288,5,3,1", "--optimizer",
              "momentum", "--batch-size", "70", "--keep-prob", "0.9", "--log-every", "10"]  # fmt: skip
    ck = str(tmp_path / "ck.safetensors")
    argv = ["train", *common, "--iterations", "20", "--checkpoint", ck, "--checkpoint-every", "10"]
    assert cli(capsys, *argv)[0] == 0
    assert set(saved) == {10, 20}  # every 10 iterations, and at the end
    resumed, whole = tmp_path / "resumed.safetensors", tmp_path / "whole.safetensors"
    code, out, err = cli(capsys, "train", "--resume", ck, "--iterations", "40", "--out", str(resumed), "--json")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("Training 12288-5-3-1 on ")
    assert "Cost after iteration 39" in out and "Cost after iteration 0" not in out
    doc = last_json(out)
    assert (doc["first_iteration"], doc["iterations_done"], doc["checkpoint"]) == (20, 40, ck)
    assert saved[-1] == 40  # the resumed run keeps writing the checkpoint it came from
    # the time per iteration counts this run's 20 iterations, not the 40 of the recipe
    assert doc["ms_per_iteration"] == pytest.approx(1000 * doc["seconds"] / 20)
    assert cli(capsys, "train", *common, "--iterations", "40", "--out", str(whole))[0] == 0
    for (W, b), (W0, b0) in zip(load_model(resumed).params, load_model(whole).params):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    code, out, err = cli(capsys, "train", "--resume", ck, "--learning-rate", "0.5")
    assert code == 2 and "different recipe" in err


def on_screen(text: str) -> list[str]:
    """What a terminal shows of ``text`` once written: each line as its carriage returns
    leave it (a later segment overwrites an earlier one from the line's start)."""
    shown = []
    for line in text.split("\n"):
        row = ""
        for part in line.split("\r"):
            row = part + row[len(part) :]
        shown.append(row.rstrip())
    return [ln for ln in shown if ln]


def test_a_terminal_shows_a_progress_bar_that_leaves_the_report_as_a_pipe_gets_it(tmp_path, capsys, monkeypatch):  # fmt: skip
    """On a terminal: a bar over the iterations of this run (a resumed one starts part way),
    redrawn under each cost line with the count done and the last cost; once done it is
    erased, leaving on screen exactly the lines a pipe gets."""
    ck, kept = tmp_path / "ck.safetensors", tmp_path / "kept.safetensors"
    assert cli(capsys, "train", *SMALL, "--log-every", "2", "--checkpoint", str(ck), "--iterations", "3")[0] == 0  # fmt: skip
    shutil.copy(ck, kept)
    resume = ["train", "--resume", str(ck), "--iterations", "7"]
    piped = cli(capsys, *resume)[1]
    shutil.copy(kept, ck)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = cli(capsys, *resume)
    assert code == 0, err
    assert "training:" in out and "it/s" in out
    cost_lines = {
        int(ln.split()[3][:-1]): ln for ln in piped.splitlines() if ln.startswith("Cost after")
    }
    assert sorted(cost_lines) == [4, 6]
    for i, line in cost_lines.items():  # after each cost line, the bar: i done
        after = out.split(line + "\n", 1)[1]
        assert after.startswith("\rtraining: ") and f"| {i}/7 [" in after.split("\r")[1]
    # ... with the cost logged before
    assert (
        "cost " + format(float(cost_lines[4].rsplit(" ", 1)[1]), ".4f")
        in out.split(cost_lines[6])[1]
    )
    timing = lambda lines: [ln for ln in lines if not ln.startswith("Training time:")]  # noqa: E731
    assert timing(on_screen(out)) == timing(piped.splitlines())


@pytest.mark.parametrize("json_, root, tty", [(j, r, t) for j in (0, 1) for r in (0, 1) for t in (0, 1)])  # fmt: skip
def test_the_bar_is_drawn_on_a_terminal_by_rank_0_without_json(json_, root, tty, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: bool(tty))
    args = types.SimpleNamespace(json=bool(json_))
    reducer = types.SimpleNamespace(is_root=bool(root))
    bar = train_command._progress_bar(args, types.SimpleNamespace(iterations=5), reducer)
    assert (bar is not None) == (not json_ and root and tty)
    if bar is not None:
        bar.close()


class Ranks(LocalReducer):
    """A rank of an MPI run whose sums are its own (enough for what the command prints)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("rank, size", [(0, 1), (0, 3), (1, 3)])
def test_distributed_ranks_announce_once_and_say_how_the_node_is_shared(rank, size, capsys, monkeypatch):  # fmt: skip
    """--distributed: the run set up for the device asked for (its fallback said as a note);
    one process alone is told how to start more; rank 0 alone prints, naming the processes and
    how they share the node."""
    import gpucat.training.distributed as distributed

    asked = []

    def setup(device, on_fallback):
        asked.append(device)
        on_fallback("the device's fallback")
        return Ranks(rank, size), backends.get_device("cpu"), "1 thread each"

    monkeypatch.setattr(distributed, "setup", setup)
    code, out, err = cli(capsys, "train", *SMALL, "--iterations", "2", "--distributed", "--json")  # fmt: skip
    assert code == 0 and asked == ["cpu"]
    notes = ["gpucat: note: the device's fallback"]
    if size == 1:
        notes.append(
            "gpucat: note: --distributed, but this is the only process: run it as `mpiexec -n N "
            "gpucat train --distributed` (if you did, mpiexec and mpi4py belong to different MPI "
            "libraries); training as one process."
        )
    assert err.splitlines() == notes
    if rank:
        assert out == ""
        return
    where = backends.get_device("cpu").label if size == 1 else f"{size} processes (1 thread each)"
    assert out.startswith(f"Training 12288-3-1 on {where}, float64, 2 iterations, ")
    doc = last_json(out)
    assert (doc["processes"], doc["threads"]) == (size, "1 thread each")


def test_distributed_never_downloads(tmp_path, capsys, monkeypatch):
    """Ranks downloading at once would clash: under --distributed missing course files are an
    error, not a download."""
    import gpucat.training.distributed as distributed
    from gpucat.data import fetch

    monkeypatch.setattr(fetch, "fetch_data", lambda folder: pytest.fail("downloaded"))
    monkeypatch.setattr(distributed, "setup", lambda device, on_fallback: (Ranks(0, 2), backends.get_device("cpu"), "1 thread each"))  # fmt: skip
    code, out, err = cli(capsys, "train", *SMALL, "--distributed", "--data-dir", str(tmp_path))
    assert code == 2 and out == "" and str(tmp_path) in err and "downloading" not in err


def test_layers_take_spaces_around_their_commas_only():
    from gpucat.cli import build_parser

    def layers(text):
        return build_parser().parse_args(["train", "--layers", text]).layers

    assert layers("12288, 3 ,1") == (12288, 3, 1)
    with pytest.raises(SystemExit):  # not 122883,1
        layers("12288 3,1")


def test_each_progress_line_reaches_a_pipe_as_it_is_printed(capsys, monkeypatch):
    """The announcement and each cost line are flushed as they are printed, so that
    `gpucat train | tee log` shows a long run as it goes, not at its end."""
    flushed, stream = [], sys.stdout
    monkeypatch.setattr(stream, "flush", lambda: flushed.append(stream.getvalue()))
    argv = [*SMALL, "--iterations", "3", "--log-every", "1", "--validation", "0.2"]
    code, out, err = cli(capsys, "train", *argv, "--validate-every", "2")
    assert code == 0, err
    progress = [ln for ln in out.splitlines() if ln.startswith(("Training 12288", "Cost after", "Validation cost"))]  # fmt: skip
    assert [ln.split()[0] for ln in progress].count("Cost") == 3 and "Validation" in out
    for line in progress:
        assert any(snapshot.endswith(line + "\n") for snapshot in flushed), line

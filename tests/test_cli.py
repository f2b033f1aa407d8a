"""The command line: the JSON contract, the flags, and user errors as one message + exit 2."""

from __future__ import annotations

import json
import sys

import cupy_standin
import numpy as np
import pytest

from gpucat import backends
from gpucat.cli import main
from gpucat.training.loop import Interrupted

from conftest import data_file, run_gpucat


def test_train_json_contract_and_flags(tmp_path):
    out = run_gpucat(
        "train",
        "--device",
        "cpu",
        "--layers",
        "12288,4,1",
        "--iterations",
        "7",
        "--log-every",
        "3",
        "--learning-rate",
        "0.01",
        "--seed",
        "2",
        "--json",
        "--out",
        str(tmp_path / "m.safetensors"),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["device"].startswith("CPU") and doc["dtype"] == "float64"
    assert doc["layers"] == [12288, 4, 1] and doc["iterations"] == 7 and doc["seed"] == 2
    assert [i for i, _ in doc["costs"]] == [0, 3, 6]
    assert all(0 <= doc[k] <= 1 for k in ("train_accuracy", "test_accuracy"))
    assert doc["seconds"] > 0
    assert (tmp_path / "m.safetensors").stat().st_size > 12288 * 4 * 8
    assert doc["dead_layers"] == [] and "warning" not in out.stderr


def test_gpu_requested_without_gpu_is_one_clear_message():
    out = run_gpucat("train", "--device", "gpu", "--iterations", "1", hide_cupy=True)
    assert out.returncode == 2
    assert "no usable GPU: CuPy is not installed" in out.stderr
    assert "--device cpu" in out.stderr and "Traceback" not in out.stderr


def test_gpucat_device_env_sets_the_default(monkeypatch):
    monkeypatch.setenv("GPUCAT_DEVICE", "cpu")
    assert backends.get_device().name == "numpy"
    monkeypatch.setenv("GPUCAT_DEVICE", "tpu")
    with pytest.raises(backends.GpucatError, match="unknown device 'tpu'"):
        backends.get_device()


def test_auto_falls_back_to_numpy_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    backends.forget_gpus()
    try:
        assert not backends.gpu_available()
        assert backends.get_device("auto").name == "numpy"
    finally:
        backends.forget_gpus()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "12288,5,2"], "must end in 1"),
        (["--layers", "100,5,1"], "12288 features per example"),
        (["--iterations", "0"], "--iterations must be at least 1"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive number"),
        (["--solver", "gram", "--optimizer", "adam"], "--solver gram cannot run this recipe"),
        (["--solver", "gram", "--validation", "0.2"], "validation reads W1"),
    ],
)
def test_bad_train_settings_exit_2(args, message, capsys):
    """One message and exit 2, before any data is read or anything printed."""
    assert main(["train", "--device", "cpu", *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.startswith("gpucat: error:")
    assert "Training" not in out


@pytest.mark.parametrize(
    "fake, message",
    [
        (0, "CuPy found no CUDA device"),
        (
            RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient"),
            "the CUDA driver did not answer (RuntimeError: cudaErrorInsufficientDriver",
        ),
    ],
)
def test_gpu_unusable_says_why(monkeypatch, capsys, fake, message):
    cupy_standin.install(cupy_standin.make(fake), monkeypatch.setitem)
    backends.forget_gpus()
    try:
        assert main(["train", "--device", "gpu", "--iterations", "1"]) == 2
        assert not backends.gpu_available()
        assert backends.get_device("auto").name == "numpy"  # auto falls back quietly
    finally:
        backends.forget_gpus()
    err = capsys.readouterr().err
    assert (
        err.startswith("gpucat: error: no usable GPU") and message in err and "--device cpu" in err
    )


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--iterations", "1.5"], "argument --iterations: invalid int value: '1.5'"),
        (["train", "--learning-rate", "fast"], "argument --learning-rate: invalid float value"),
        (["train", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (
            ["train", "--layers", "12288,x,1"],
            "argument --layers: expected comma-separated sizes like 12288,20,7,5,1, got "
            "'12288,x,1'",
        ),
        (["compare", "--log-every", "ten"], "argument --log-every: invalid int value"),
        (["evaluate"], "the following arguments are required: --model"),
        (["trian"], "argument command: invalid choice: 'trian'"),
        (["train", "--out", "/no/such/folder/m.safetensors"], "the folder /no/such/folder does"),
        (["train", "--plot", "/no/such/place/c.png"], "/no/such/place/c.png: the folder"),
        (["train", "--iterations", "0"], "iterations"),
    ],
)
def test_every_bad_flag_value_is_one_error_line(argv, needle, capsys):
    """Ints, floats, choices, missing arguments, unknown commands and paths: one
    `gpucat: error:` line naming the problem, no usage text, exit code 2, nothing trained."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpucat: error: "), err
    assert needle in lines[0] and "usage:" not in err


def test_distributed_without_mpiexec_says_it_trains_as_one_process():
    out = run_gpucat("train", "--distributed", "--device", "cpu", "--iterations", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert "gpucat: note: --distributed, but this is the only process" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["processes"] == 1


def test_the_end_of_a_run_names_its_checkpoint(tmp_path):
    ck = tmp_path / "ck.safetensors"
    out = run_gpucat(*("train", "--device", "cpu", "--iterations", "3", "--checkpoint", str(ck)))
    assert out.returncode == 0, out.stderr
    assert f"Checkpoint: {ck} (continue with --resume {ck}" in out.stdout
    model = tmp_path / "m.safetensors"
    evaluate = run_gpucat(
        "evaluate", "--model", str(ck), "--data", str(data_file("catvnoncat/test_catvnoncat.h5"))
    )
    assert evaluate.returncode == 2 and "is a training checkpoint" in evaluate.stderr
    # what the message says to do: a finished run resumed with --out saves its model at once
    out = run_gpucat(*("train", "--resume", str(ck), "--out", str(model), "--json"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["iterations_done"] == 3
    assert (
        run_gpucat(
            "evaluate",
            "--model",
            str(model),
            "--data",
            str(data_file("catvnoncat/test_catvnoncat.h5")),
        ).returncode
        == 0
    )


def test_prepare_names_its_argument_for_both_kinds_of_source():
    out = run_gpucat("prepare", "--help")
    assert out.stdout.startswith("usage: gpucat prepare [-h] --out OUT [--jobs JOBS] FOLDER_OR_H5")


def test_an_unwritable_checkpoint_is_refused_before_training(tmp_path, capsys):
    """A --checkpoint in a folder that does not exist is one error line before the first
    iteration, not a failure when the first checkpoint is due, after the training time."""
    ck = tmp_path / "no such folder" / "ck.safetensors"
    argv = ["train", "--device", "cpu", "--iterations", "30", "--log-every", "1"]
    assert main([*argv, "--checkpoint", str(ck), "--checkpoint-every", "20"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("gpucat: error:") and "no such folder" in err
    assert "Cost after iteration" not in out + err


def test_evaluate_reports_what_the_reference_forward_pass_scores(
    trained_model, tmp_path, capsys, course_data
):
    """In this process (so that every line of the command is traced): the model's scores on
    the test file against the independent forward pass, the mislabeled pictures, the JSON."""
    from gpucat.modelfiles.model import load_model

    import reference_impl as ref

    _, test = course_data
    data = data_file("catvnoncat/test_catvnoncat.h5")
    params = load_model(trained_model).params
    p = {
        f"{k}{l}": a.astype(np.float64)
        for l, (W, b) in enumerate(params, 1)
        for k, a in (("W", W), ("b", b))
    }
    expected = ref.forward(test.X, p)[0].ravel()
    y = test.Y.ravel() > 0.5
    cat = expected > 0.5
    tp, tn, fp, fn = (int((cat & y).sum()), int((~cat & ~y).sum()), int((cat & ~y).sum()),
                      int((~cat & y).sum()))  # fmt: skip
    png = tmp_path / "wrong.png"
    args = ["evaluate", "--model", str(trained_model), "--data", str(data), "--device", "cpu"]
    assert main([*args, "--mislabeled", str(png), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Model: {trained_model} (12288-20-7-5-1)"
    assert out[1] == f"Data: {data} (50 examples), device: {backends.get_device('cpu').label}"
    assert out[2] == f"Accuracy: {(tp + tn) / 50:.4f} ({tp + tn}/50)"
    assert out[3] == f"Confusion (cat = positive): TP {tp}, TN {tn}, FP {fp}, FN {fn}"
    assert out[4] == f"Saved {fp + fn} mislabeled images to {png}" and png.stat().st_size > 0
    doc = json.loads(out[-1])
    assert (doc["model"], doc["data"], doc["n"]) == (str(trained_model), str(data), 50)
    assert doc["device"] == backends.get_device("cpu").label
    assert doc["labels"] == [int(v) for v in y] and doc["predicted"] == [int(v) for v in cat]
    assert np.abs(np.array(doc["probabilities"]) - expected).max() <= 1e-12
    assert main([*args, "--dtype", "float32", "--json"]) == 0
    p32 = np.array(json.loads(capsys.readouterr().out.splitlines()[-1])["probabilities"])
    assert 0 < np.abs(p32 - expected).max() <= 1e-5  # the arithmetic asked for


@pytest.mark.parametrize(
    "argv, missing",
    [
        (["evaluate", "--data", "d.h5"], "--model"),
        (["evaluate", "--model", "m.safetensors"], "--data"),
        (["predict", "a.png"], "--model"),
        (["predict", "--model", "m.safetensors"], "PATH"),
    ],
)
def test_what_a_command_cannot_do_without_is_required(argv, missing, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"the following arguments are required: {missing}" in capsys.readouterr().err


def test_an_unwritable_mislabeled_path_stops_evaluate_before_it_scores(trained_model, capsys):
    data = str(data_file("catvnoncat/test_catvnoncat.h5"))
    argv = ["evaluate", "--model", str(trained_model), "--data", data, "--device", "cpu"]
    assert main([*argv, "--mislabeled", "/no/such/folder/wrong.png"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == (
        "gpucat: error: /no/such/folder/wrong.png: the folder /no/such/folder does not exist; "
        "create it first.\n"
    )


def test_train_reports_its_run_in_this_process(tmp_path, capsys):
    """`gpucat train` in the test's own process (so that the mutation run traces it): each
    report line agrees with the JSON summary, and the files named are written."""
    from gpucat.training.checkpoint import load_checkpoint

    out, png, ck = tmp_path / "m.safetensors", tmp_path / "c.png", tmp_path / "ck.safetensors"
    argv = ["train", "--layers", "12288,3,1", "--iterations", "4", "--log-every", "2",
            "--validation", "0.2", "--device", "cpu", "--out", str(out), "--plot", str(png),
            "--checkpoint", str(ck), "--json"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    doc = json.loads(lines[-1])
    assert (doc["model"], doc["checkpoint"]) == (str(out), str(ck)) and "threads" in doc
    for name in ("train", "validation", "test"):
        shown = (
            f"{name.capitalize()} accuracy: {doc[name + '_accuracy']:.4f} "
            f"({doc[name + '_correct']}/{doc[name + '_examples']})"
        )
        assert shown in lines
    device = backends.get_device("cpu").label
    assert any(
        ln.startswith(f"Device: {device}, solver: {doc['solver']}, gradients: ") for ln in lines
    )
    assert any(
        ln.startswith("Training time: ") and "ms/iteration, device synchronized)" in ln
        for ln in lines
    )
    assert f"Saved model to {out}" in lines and f"Saved cost curve to {png}" in lines
    assert (
        f"Checkpoint: {ck} (continue with --resume {ck}; a checkpoint is not a model: --out "
        "saves one)"
    ) in lines
    assert (
        out.stat().st_size and png.stat().st_size and load_checkpoint(ck).state.next_iteration == 4
    )


class OutOfMemoryError(Exception):  # named as CuPy's is
    pass


@pytest.mark.parametrize(
    "raised, code, message",
    [
        (
            PermissionError(13, "Permission denied", "/data/x.h5"),
            2,
            "gpucat: error: /data/x.h5: Permission denied; check the path and its permissions.",
        ),
        (
            OSError("the disk went away"),
            2,
            "gpucat: error: the disk went away; check the path and its permissions.",
        ),
        (
            Interrupted(7, "ck.safetensors"),
            130,
            "gpucat: interrupted at iteration 7; checkpoint written to ck.safetensors (continue "
            "with --resume ck.safetensors).",
        ),
        (Interrupted(7, None), 130, "gpucat: interrupted at iteration 7; nothing was saved."),
        (KeyboardInterrupt(), 130, "gpucat: interrupted; nothing was saved."),
        *[
            (
                error("cannot allocate 8 GiB\nat line 2"),
                2,
                "gpucat: error: out of memory (cannot allocate 8 GiB). Train in smaller pieces: "
                "a smaller --batch-size (or one, for full-batch runs), --solver direct instead "
                "of gram, or --dtype float32.",
            )
            for error in (MemoryError, OutOfMemoryError)
        ],
    ],
)
def test_what_stops_a_command_is_one_line_and_its_exit_code(
    monkeypatch, capsys, raised, code, message
):
    """Whatever a command raises that a user can act on is caught once, in main: one line on
    stderr, exit code 2 (or 130 for an interruption), no traceback."""
    from gpucat.cli import info

    def run(args):
        raise raised

    monkeypatch.setattr(info, "run", run)
    assert main(["info"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == message + "\n"


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch):
    from gpucat.cli import info

    def run(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info, "run", run)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info"])


@pytest.mark.parametrize(
    "argv, line",
    [
        ([], "gpucat: error: the following arguments are required: command (see `gpucat --help`)"),
        (["--bogus"], "gpucat: error: the following arguments are required: command (see "
                      "`gpucat --help`)"),
        (["evaluate"], "gpucat: error: the following arguments are required: --model, --data "
                       "(see `gpucat evaluate --help`)"),
        (["train", "--lr", "0.1"], "gpucat: error: unrecognized arguments: --lr 0.1 (see "
                                   "`gpucat train --help`)"),
        (["info", "x"], "gpucat: error: unrecognized arguments: x (see `gpucat info --help`)"),
    ],
)  # fmt: skip
def test_a_bad_command_line_points_at_the_help_that_fits(argv, line, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and capsys.readouterr().err == line + "\n"


def test_help_opens_with_the_usage_and_what_gpucat_is(capsys):
    import gpucat

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert e.value.code == 0 and lines[0].startswith("usage: gpucat [-h] [--version]")
    assert gpucat.__doc__.splitlines()[0] in " ".join(lines)  # the description, wrapped

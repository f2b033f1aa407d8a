"""Honest runs: observing a run never changes it (log interval, checkpoints, resuming,
interruptions), every number printed is what it says, failures are one clear message."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from gpucat import backends
from gpucat.cli import main
from gpucat.config import TrainConfig
from gpucat.errors import TrainingDiverged
from gpucat.modelfiles.model import load_model
from gpucat.nn.network import params_to_host
from gpucat.training.checkpoint import load_checkpoint
from gpucat.training.loop import fit

from conftest import data_dir, data_file, run_gpucat

OBSERVED = dict(
    layers=(12288, 8, 1),
    optimizer="adam",
    learning_rate=0.005,
    validation=0.25,
    patience=2,
    validate_every=5,
    batch_size=50,
    keep_prob=0.8,
    iterations=200,
)


def same_params(device, a, b) -> None:
    for (W, b_), (W0, b0) in zip(params_to_host(device, a), params_to_host(device, b)):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b_, b0)


def test_the_log_interval_never_changes_the_run(device, course_data):
    """Validation, early stopping, Adam, mini-batches and dropout, read every 1, 7 and 100
    iterations: the same parameters bit for bit, the same validations, the same stop."""
    train, _ = course_data
    runs = [fit(device, TrainConfig(**OBSERVED, log_every=k), train) for k in (1, 7, 100)]
    first = runs[0]
    assert first.stopped_early and first.iterations_done < OBSERVED["iterations"]
    assert [i for i, _ in first.costs] == list(range(first.iterations_done))
    for r in runs[1:]:
        assert (r.iterations_done, r.stopped_early, r.best_iteration) == (
            first.iterations_done,
            first.stopped_early,
            first.best_iteration,
        )
        assert r.val_costs == first.val_costs
        same_params(device, r.params, first.params)


def test_an_extended_resume_is_the_uninterrupted_run(tmp_path, course_data):
    """Adam, 12288-8-1, validation every 5 with patience 1: 5 iterations, then resumed to 60,
    is the 60-iteration run (which does not stop early) bit for bit."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    recipe = dict(OBSERVED, patience=1, batch_size=None, keep_prob=1.0, log_every=5)
    whole = fit(cpu, TrainConfig(**{**recipe, "iterations": 60}), train)
    ck = str(tmp_path / "ck.safetensors")
    fit(cpu, TrainConfig(**{**recipe, "iterations": 5}), train, checkpoint=ck)
    resumed = fit(cpu, TrainConfig(**{**recipe, "iterations": 60}), train, resume=ck)
    assert not whole.stopped_early and whole.iterations_done == resumed.iterations_done == 60
    assert resumed.val_costs == whole.val_costs and resumed.costs == whole.costs
    assert resumed.best_iteration == whole.best_iteration
    same_params(cpu, resumed.params, whole.params)


@pytest.mark.parametrize("lr, layers", [(0.02, (12288, 8, 1)), (1e4, (12288, 20, 7, 5, 1))])
def test_divergence_does_not_depend_on_when_the_cost_is_read(course_data, lr, layers):
    """Adam at lr 0.02 (a loss jump that recovers) trains to the end whatever the log
    interval; lr 1e4 diverges, reported at the same iteration whatever the log interval."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    outcomes = []
    for log_every in (1, 10, 50):
        optimizer = "adam" if lr < 1 else "gd"
        config = TrainConfig(
            layers=layers, learning_rate=lr, iterations=60, log_every=log_every, optimizer=optimizer
        )
        try:
            outcomes.append(params_to_host(cpu, fit(cpu, config, train).params))
        except TrainingDiverged as e:
            outcomes.append(str(e))
    if lr < 1:
        for p in outcomes[1:]:
            for (W, b), (W0, b0) in zip(p, outcomes[0]):
                np.testing.assert_array_equal(W, W0)
                np.testing.assert_array_equal(b, b0)
    else:
        assert outcomes[0] == outcomes[1] == outcomes[2]
        assert "at iteration 1 " in outcomes[0] and "smaller --learning-rate" in outcomes[0]


def test_train_accuracy_counts_the_training_examples_only(tmp_path, course_data):
    """With 30 % held out, the training accuracy is over the 146 examples trained on, and the
    validation accuracy over the 63 held out, each equal to a count made from the model."""
    from gpucat.data.batches import stratified_split

    model = tmp_path / "m.safetensors"
    out = run_gpucat(
        "train", "--device", "cpu", "--iterations", "30", "--validation", "0.3", "--json",
        "--out", str(model),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    train, _ = course_data
    tr, va = stratified_split(train.Y, 0.3, seed=1)
    assert (doc["train_examples"], doc["validation_examples"]) == (146, 63) == (tr.size, va.size)
    params = load_model(model).params
    A = train.X
    for l, (W, b) in enumerate(params):
        Z = W @ A + b
        A = np.maximum(Z, 0) if l < len(params) - 1 else 1 / (1 + np.exp(-Z))
    hits = (A[0] > 0.5) == (train.Y[0] > 0.5)
    assert doc["train_correct"] == int(hits[tr].sum()) and doc["validation_correct"] == int(
        hits[va].sum()
    )
    assert "Validation accuracy" in out.stdout


def test_checkpoint_alone_writes_one_at_the_end_that_resumes(tmp_path):
    ck = tmp_path / "ck.safetensors"
    common = ["--device", "cpu", "--layers", "12288,4,1", "--batch-size", "64"]
    a = run_gpucat("train", *common, "--iterations", "9", "--checkpoint", str(ck))
    assert a.returncode == 0, a.stderr
    assert load_checkpoint(ck).state.next_iteration == 9
    b = run_gpucat("train", "--resume", str(ck), "--iterations", "20", "--out", str(tmp_path / "r"))
    c = run_gpucat("train", *common, "--iterations", "20", "--out", str(tmp_path / "w"))
    assert b.returncode == 0 and c.returncode == 0, b.stderr + c.stderr
    for (W, _), (W0, _) in zip(
        load_model(tmp_path / "r").params, load_model(tmp_path / "w").params
    ):
        np.testing.assert_array_equal(W, W0)
    assert load_checkpoint(ck).state.next_iteration == 20  # the resumed run kept writing it


DRIVER = """
import sys
from gpucat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_training(args, env_extra=None):
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir()), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_iteration(proc, k: int) -> None:
    """Read the child's log lines until it has logged iteration k."""
    for line in proc.stdout:
        if line.startswith(f"Cost after iteration {k}:"):
            return
    raise AssertionError(f"the run ended before iteration {k}: {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("device, sig", [("cpu", signal.SIGINT), ("strict", signal.SIGTERM)])
def test_an_interrupted_run_resumes_to_the_uninterrupted_one(tmp_path, device, sig):
    """SIGINT (or SIGTERM) at a random iteration: a checkpoint is written, exit code 130, and
    resuming it ends bit for bit where the uninterrupted run does (float64; NumPy and the
    strict stand-in device)."""
    rng = np.random.default_rng()
    stop = int(rng.integers(3, 60))
    env = {"GPUCAT_DEVICE": device}
    recipe = ["--layers", "12288,6,1", "--batch-size", "32", "--optimizer", "momentum"]
    recipe += ["--keep-prob", "0.9", "--log-every", "1", "--iterations", "90"]
    ck = tmp_path / "ck.safetensors"
    proc = start_training([*recipe, "--checkpoint", str(ck), "--out", str(tmp_path / "x")], env)
    wait_for_iteration(proc, stop)
    proc.send_signal(sig)
    proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    assert "interrupted at iteration" in err and f"--resume {ck}" in err
    assert not (tmp_path / "x").exists()  # no model from an interrupted run
    done = load_checkpoint(ck).state.next_iteration
    assert stop < done < 90, (stop, done)
    resumed = start_training(["--resume", str(ck), "--out", str(tmp_path / "r")], env)
    whole = start_training([*recipe, "--out", str(tmp_path / "w")], env)
    assert resumed.wait(timeout=300) == 0 and whole.wait(timeout=300) == 0
    for (W, b), (W0, b0) in zip(
        load_model(tmp_path / "r").params, load_model(tmp_path / "w").params
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


KILLED = """
import sys
from gpucat.backends import get_device
from gpucat.data.course import load_course_data
from gpucat.config import TrainConfig
from gpucat.training.loop import fit
train, _ = load_course_data()
config = TrainConfig(layers=(12288, 64, 1), iterations=100000, batch_size=16, log_every=10**6)
print("started", flush=True)
fit(get_device("cpu"), config, train, checkpoint=sys.argv[1], checkpoint_every=1)
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_readable(tmp_path):
    """A 6 MB checkpoint written every iteration, the writer killed (SIGKILL) at random
    moments: the file on disk is always a whole, loadable checkpoint."""
    ck = tmp_path / "ck.safetensors"
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir())}
    rng = np.random.default_rng()
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(ck)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "started"
        deadline = time.time() + 60
        while not ck.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.kill()
        proc.wait()
        progress = load_checkpoint(ck).state  # raises on a torn file
        assert progress.next_iteration >= 1


def test_out_of_memory_anywhere_is_one_message(monkeypatch, capsys):
    """NumPy's MemoryError or CuPy's OutOfMemoryError during training: one line naming what
    to change, exit code 2, no traceback."""
    import gpucat.frontends.report

    class OutOfMemoryError(Exception):  # CuPy's name for it
        pass

    for error in (MemoryError("Unable to allocate 107. GiB"), OutOfMemoryError("out of memory")):

        def failing(*a, error=error, **k):
            raise error

        monkeypatch.setattr(gpucat.frontends.report, "fit", failing)
        assert main(["train", "--device", "cpu", "--iterations", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("gpucat: error: out of memory")
        assert "--batch-size" in err and "--solver direct" in err and "--dtype float32" in err


def test_full_batch_training_holds_the_data_once(course_data):
    """Full-batch training holds X once: the products read the shard's rows where they lie."""
    from gpucat.training.loop import solver_for

    train, _ = course_data
    cpu = backends.get_device("cpu")
    x_bytes = train.rows.size * 8  # the float64 copy of the pixels
    tracemalloc.start()
    try:
        solver = solver_for(cpu, TrainConfig(solver="direct"), train)[0]
        solver.step(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # X, plus the pixels as read, W1 and its update buffer: a second X would be 2x
    assert peak < 1.5 * x_bytes, peak / x_bytes


def test_memory_is_checked_before_anything_is_made(monkeypatch, capsys):
    monkeypatch.setattr(backends.Device, "free_memory", lambda self: 10 * 2**20)
    assert main(["train", "--device", "cpu", "--solver", "direct"]) == 2
    err = capsys.readouterr().err
    assert "--solver direct needs" in err and "--batch-size" in err and "Traceback" not in err


def test_a_fresh_seed_is_drawn_and_recorded_for_random_state_none(course_data):
    """random_state=None: a new seed each fit, as scikit-learn does, kept in seed_ so the
    fit can be repeated exactly."""
    from gpucat import CatClassifier

    train, _ = course_data
    X, y = train.images[:60], train.Y.ravel()[:60]
    a = CatClassifier(hidden_layers=(4,), iterations=5, random_state=None).fit(X, y)
    b = CatClassifier(hidden_layers=(4,), iterations=5, random_state=None).fit(X, y)
    assert a.seed_ != b.seed_
    again = CatClassifier(hidden_layers=(4,), iterations=5, random_state=a.seed_).fit(X, y)
    for (W, _), (W0, _) in zip(again.params_, a.params_):
        np.testing.assert_array_equal(W, W0)
    with pytest.raises(ValueError, match="seed"):
        CatClassifier(random_state=-3).fit(X, y)


def test_string_labels_cat_is_the_positive_class(course_data):
    """y of "cat" / "non-cat": classes_ sorts to ['cat', 'non-cat'], the network's output is
    P(cat) (the same model as with 1 / 0 labels), and predict_proba's "cat" column holds it."""
    from gpucat import CatClassifier

    train, test = course_data
    words = np.where(train.Y.ravel() > 0.5, "cat", "non-cat")
    options = dict(hidden_layers=(5,), iterations=40, device="cpu")
    named = CatClassifier(**options).fit(train.images, words)
    numbered = CatClassifier(**options).fit(train.images, train.Y.ravel().astype(int))
    assert named.classes_.tolist() == ["cat", "non-cat"] and named.pos_label_ == "cat"
    assert numbered.pos_label_ == 1
    p_cat = numbered.predict_proba(test.images)[:, 1]
    np.testing.assert_array_equal(named.predict_proba(test.images)[:, 0], p_cat)
    np.testing.assert_array_equal(named.predict(test.images) == "cat", p_cat > 0.5)
    other = CatClassifier(**options, pos_label="non-cat").fit(train.images, words)
    proba = other.predict_proba(test.images)
    assert other.pos_label_ == "non-cat" and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(other.predict(test.images) == "non-cat", proba[:, 1] > 0.5)
    with pytest.raises(ValueError, match="pos_label='dog' is not one of the labels"):
        CatClassifier(**options, pos_label="dog").fit(train.images, words)


def test_an_interrupted_cli_run_saves_no_model_and_says_so(tmp_path, monkeypatch, capsys):
    """Without --checkpoint, an interruption saves nothing, and an existing --out file is
    left as it was."""
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"an earlier model")
    import gpucat.frontends.report

    real = gpucat.frontends.report.fit

    def interrupted_at_the_third(*a, on_step=None, **k):
        def step(i):
            if i == 2:
                os.kill(os.getpid(), signal.SIGINT)
            if on_step:
                on_step(i)

        return real(*a, on_step=step, **k)

    monkeypatch.setattr(gpucat.frontends.report, "fit", interrupted_at_the_third)
    args = ["train", "--device", "cpu", "--layers", "12288,3,1", "--out", str(out)]
    assert main(args) == 130
    assert "interrupted at iteration 3; nothing was saved" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier model"


def test_a_run_depends_on_its_arguments_alone_and_writes_nothing_under_home(
    tmp_path, trained_model
):
    """Two `gpucat train` runs, each with its own empty HOME (and no cache named), save
    bit-identical parameters; after training, CatClassifier.fit and `gpucat predict`, each
    HOME is still empty: no plan, cache or state is kept between runs."""
    from safetensors.numpy import load_file

    clean = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME" and "GPUCAT" not in k}
    saved = []
    for k in range(2):
        home = tmp_path / f"home{k}"
        home.mkdir()
        env = {**clean, "HOME": str(home), "GPUCAT_DATA_DIR": str(data_dir())}
        model = tmp_path / f"m{k}.safetensors"
        out = subprocess.run(
            [sys.executable, "-m", "gpucat", "train", "--device", "cpu", "--iterations", "40",
             "--solver", "direct", "--out", str(model)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        fit_code = (
            "import numpy as np; from gpucat import CatClassifier\n"
            "from gpucat.data.course import load_course_data\n"
            "train, _ = load_course_data()\n"
            "CatClassifier(iterations=5, device='cpu').fit(train.rows, train.Y.ravel())\n"
        )
        assert subprocess.run([sys.executable, "-c", fit_code], env=env).returncode == 0
        photo = str(data_file("photos/chelsea.png"))
        predict = [sys.executable, "-m", "gpucat", "predict", "--model", str(model), photo]
        assert subprocess.run(predict, capture_output=True, env=env).returncode == 0
        assert list(home.iterdir()) == [], list(home.rglob("*"))
        saved.append(load_file(str(model)))
    assert saved[0].keys() == saved[1].keys()
    for key in saved[0]:
        np.testing.assert_array_equal(saved[0][key], saved[1][key])


def test_a_resumed_run_judges_divergence_against_the_first_loss_of_the_run(tmp_path, course_data):
    """Logistic regression with momentum and learning rate 2: the loss swings up and past
    100 x the first (0.83) + 10 at iteration 12. Resumed from iteration 4 (loss 4.7 there)
    the run must stop at the same iteration, against the same first loss; against its own
    first loss it would train on."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    recipe = dict(layers=(12288, 1), learning_rate=2.0, optimizer="momentum", log_every=1)
    with pytest.raises(TrainingDiverged) as whole:
        fit(cpu, TrainConfig(iterations=30, **recipe), train)
    assert re.fullmatch(
        r"training diverged: the training loss reached [0-9.e+]+ at iteration 12 \(it started "
        r"at 0\.828879\) with learning rate 2; try a smaller --learning-rate \(e\.g\. 10x "
        r"smaller\)\. No model was saved\.",
        str(whole.value),
    ), whole.value
    ck = tmp_path / "ck.safetensors"
    fit(cpu, TrainConfig(iterations=4, **recipe), train, checkpoint=str(ck))
    with pytest.raises(TrainingDiverged) as resumed:
        fit(cpu, TrainConfig(iterations=30, **recipe), train, resume=str(ck))
    assert str(resumed.value) == str(whole.value)


def test_a_signal_stops_training_between_iterations_and_a_second_one_at_once(tmp_path, course_data):  # fmt: skip
    """In the test's own process: SIGTERM during iteration 4 lets it finish, writes the
    checkpoint at 5 and raises Interrupted saying so (which pickles, as exceptions crossing
    processes must); without a checkpoint it says that none was written; a second SIGINT
    interrupts at once; the handlers there were before are back after each run."""
    import pickle

    from gpucat.training.loop import Interrupted

    train, _ = course_data
    cpu, config = backends.get_device("cpu"), TrainConfig(layers=(12288, 3, 1), iterations=50)
    ck = tmp_path / "ck.safetensors"
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]

    def at(k, *signals):
        def step(i):
            if i == k:
                for s in signals:
                    os.kill(os.getpid(), s)

        return step

    for path in (str(ck), None):
        with pytest.raises(Interrupted) as caught:
            fit(cpu, config, train, on_step=at(4, signal.SIGTERM), checkpoint=path)
        assert (caught.value.iteration, caught.value.checkpoint) == (5, path)
        assert caught.value.args == (5, path)  # what a traceback shows
        again = pickle.loads(pickle.dumps(caught.value))
        assert (again.iteration, again.checkpoint) == (5, path)
        assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before
    assert load_checkpoint(ck).state.next_iteration == 5
    with pytest.raises(KeyboardInterrupt) as caught:
        fit(cpu, config, train, on_step=at(2, signal.SIGINT, signal.SIGINT), checkpoint=str(ck))
    assert not isinstance(caught.value, Interrupted)
    assert load_checkpoint(ck).state.next_iteration == 5  # interrupted at once: nothing saved
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before

"""Checkpoint files at their edges: what one records (the log points, the best parameters,
the version), every way a file can be wrong and the one message each gets, the resume check's
message, and the optimizer's state restored in the training dtype."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import gpucat
from gpucat.backends import get_device
from gpucat.config import TrainConfig
from gpucat.data.dataset import Dataset
from gpucat.errors import GpucatError
from gpucat.training.checkpoint import HINT, check_resume, load_checkpoint, restore_optimizer
from gpucat.training.loop import fit

CPU = get_device("cpu")


def pictures(n=24):
    rng = np.random.default_rng(7)
    return Dataset.from_arrays(rng.integers(1, 256, (n, 64, 64, 3), np.uint8), np.arange(n) % 2)


def recipe(**kw):
    base = dict(layers=(12288, 3, 1), learning_rate=0.01, iterations=5, log_every=2,
                optimizer="adam", validation=0.25, patience=50, dtype="float32")  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint written at the end of a 5-iteration Adam run with validation."""
    ck = tmp_path_factory.mktemp("ck") / "ck.safetensors"
    fit(CPU, recipe(), pictures(), checkpoint=str(ck))
    return ck


def rewrite(src, dst, meta=None, drop=(), change=None):
    """A copy of checkpoint src with its metadata changed by meta(dict) and tensors dropped or
    changed."""
    with safe_open(str(src), framework="np") as f:
        doc = json.loads(f.metadata()["gpucat_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    if meta:
        doc = meta(doc)
    tensors.update(change or {})
    save_file(tensors, str(dst), metadata={"gpucat_checkpoint": json.dumps(doc)})
    return dst


def test_a_checkpoint_records_the_run_and_its_best_parameters(written):
    saved = load_checkpoint(written)
    assert saved.state.next_iteration == 5
    assert [i for i, _ in saved.state.costs] == [0, 2, 4]  # the end's log point is a real one
    assert saved.best is not None and [W.shape for W, _ in saved.best] == [(3, 12288), (1, 3)]
    assert [W.shape for W, _ in saved.params] == [(3, 12288), (1, 3)]
    assert saved.config["optimizer"] == "adam" and saved.optimizer
    with safe_open(str(written), framework="np") as f:
        meta = json.loads(f.metadata()["gpucat_checkpoint"])
    assert meta["gpucat_version"] == gpucat.__version__


def test_a_checkpoint_leaves_out_only_the_ends_extra_log_point(tmp_path):
    """8 iterations logged every 2: the end (7) is logged only because the run ends there, so
    the file leaves it out (a longer run would not log there); a checkpoint written mid-run
    keeps every log point so far."""
    ck, mid = tmp_path / "ck.safetensors", tmp_path / "mid.safetensors"

    def copy_mid(i):
        if i == 5 and ck.exists() and not mid.exists():
            shutil.copy(ck, mid)

    fit(CPU, recipe(iterations=8), pictures(), checkpoint=str(ck), checkpoint_every=3,
        on_step=copy_mid)  # fmt: skip
    assert [i for i, _ in load_checkpoint(ck).state.costs] == [0, 2, 4, 6]
    early = load_checkpoint(mid).state
    assert [i for i, _ in early.costs] == [c for c in (0, 2, 4, 6) if c < early.next_iteration]
    assert early.costs and early.next_iteration < 8


def test_older_checkpoints_still_load(written, tmp_path):
    """Written before 0.1.0: the losses since the last log point as one number, no optimizer
    counters, and a checkpoint of iteration 0 is a start like any other."""

    def older(doc):
        doc["progress"]["since_log"] = [0.5, 3]
        doc["progress"]["next_iteration"] = 0
        doc.pop("optimizer_counters")
        return doc

    saved = load_checkpoint(rewrite(written, tmp_path / "old.safetensors", older))
    assert saved.state.since_log == [[0.5], 3] and saved.state.next_iteration == 0
    assert not {k for k, v in saved.optimizer.items() if not isinstance(v, np.ndarray)}


def bad(path, message):
    with pytest.raises(GpucatError) as e:
        load_checkpoint(path)
    assert str(e.value) == message.format(path=path, hint=HINT), str(e.value)


def test_each_way_a_checkpoint_can_be_wrong_is_one_message(written, tmp_path):
    bad(tmp_path / "none.safetensors", "{path}: no such checkpoint file.")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(GpucatError, match=re.escape(f"{junk}: not a gpucat checkpoint (")) as e:
        load_checkpoint(junk)
    assert str(e.value).endswith(f"); {HINT}") and "(SafetensorError: " in str(e.value)
    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2)}, str(other), metadata={"gpucat_checkpoint": '["a list"]'})
    bad(other, "{path}: unknown checkpoint format; {hint}")
    fmt = rewrite(written, tmp_path / "fmt.safetensors", lambda d: {**d, "format": "x"})
    bad(fmt, "{path}: unknown checkpoint format; {hint}")

    def invalid(doc):
        doc["config"]["learning_rate"] = -1.0
        return doc

    with pytest.raises(GpucatError, match=re.escape("the recorded recipe is invalid (")) as e:
        load_checkpoint(rewrite(written, tmp_path / "cfg.safetensors", invalid))
    assert str(e.value).startswith(str(tmp_path / "cfg.safetensors")) and str(e.value).endswith(
        HINT
    )
    for name, change in (("neg", {"next_iteration": -1}), ("cost", {"costs": [[0, 1.0, 2]]})):
        path = rewrite(written, tmp_path / f"{name}.safetensors",
                       lambda d, c=change: {**d, "progress": {**d["progress"], **c}})  # fmt: skip
        bad(path, "{path}: a damaged checkpoint (ValueError: the progress record is out of "
            "range); {hint}")  # fmt: skip


def test_tensors_that_do_not_fit_the_recipe_are_named(written, tmp_path):
    missing = rewrite(written, tmp_path / "m.safetensors", drop=("param.b2",))
    bad(missing, "{path}: tensor 'param.b2' is missing; {hint}")
    with safe_open(str(written), framework="np") as f:
        params = [k for k in f.keys() if k.startswith("param.")]
    empty = rewrite(written, tmp_path / "e.safetensors", drop=params)
    bad(empty, "{path}: the checkpoint holds no parameters; {hint}")

    def wider(doc):
        doc["config"]["layers"] = [12288, 4, 1]
        return doc

    sizes = rewrite(written, tmp_path / "s.safetensors", wider)
    bad(sizes, "{path}: its param tensors have layer sizes [12288, 3, 1], its recipe "
        "[12288, 4, 1]; {hint}")  # fmt: skip
    narrow = rewrite(written, tmp_path / "n.safetensors",
                     change={"param.W1": np.zeros((3, 100), np.float32)})  # fmt: skip
    with pytest.raises(GpucatError, match=re.escape(f"{narrow}: W1 has shape (3, 100)")):
        load_checkpoint(narrow)
    best = rewrite(written, tmp_path / "b.safetensors",
                   change={"best.W2": np.zeros((1, 5), np.float32)})  # fmt: skip
    with pytest.raises(GpucatError, match=re.escape(f"{best}: W2 has shape (1, 5)")):
        load_checkpoint(best)


def test_optimizer_state_must_fit_the_parameters(written, tmp_path):
    with safe_open(str(written), framework="np") as f:
        keys = [k for k in f.keys() if k.startswith("opt.")]
    late = max(keys)  # checked even after a solver's own state, which has shapes of its own
    odd = {"opt.solver.C": np.zeros((2, 2)), late: np.zeros((9, 9), np.float32)}
    path = rewrite(written, tmp_path / "o.safetensors", change=odd)
    bad(path, "{path}: optimizer state " + repr(late[4:]) + " does not fit the parameters; {hint}")
    stray = rewrite(written, tmp_path / "x.safetensors", change={"opt.m.W9": np.zeros(2)})
    bad(stray, "{path}: optimizer state 'm.W9' does not fit the parameters; {hint}")


def test_a_resume_with_another_recipe_says_what_differs():
    saved = recipe().to_dict()
    with pytest.raises(GpucatError) as e:
        check_resume(recipe(learning_rate=0.02, seed=2, iterations=9), saved, "ck.safetensors")
    assert str(e.value) == (
        "ck.safetensors: this checkpoint was made with a different recipe: learning_rate=0.01 "
        "(now 0.02), seed=1 (now 2); resume with the same settings, or start afresh without "
        "--resume."
    )


def test_optimizer_state_is_restored_in_the_training_dtype_and_the_solvers_own_as_saved():
    got = {}
    solver = SimpleNamespace(load_optimizer_state=got.update)
    state = {"m.W1": np.ones(3), "solver.C": np.ones(2), "t": 4}
    restore_optimizer(solver, CPU, "float32", state, "ck.safetensors")
    assert got["m.W1"].dtype == np.float32 and got["solver.C"].dtype == np.float64
    assert got["t"] == 4 and type(got["t"]) is int

    def refuse(state):
        raise KeyError("v.W1")

    with pytest.raises(GpucatError) as e:
        restore_optimizer(SimpleNamespace(load_optimizer_state=refuse), CPU, "float32", state, "ck")
    assert str(e.value) == (
        "ck: its optimizer state is incomplete (KeyError: 'v.W1'); pass a checkpoint written "
        "by `gpucat train --checkpoint FILE` with this recipe."
    )


def test_a_checkpoint_of_features_other_than_pictures_loads(tmp_path):
    rng = np.random.default_rng(2)
    data = Dataset.from_arrays(rng.normal(size=(16, 5)), np.arange(16) % 2)
    ck = tmp_path / "f.safetensors"
    fit(CPU, recipe(layers=(5, 3, 1), validation=0.0, patience=None), data, checkpoint=str(ck))
    saved = load_checkpoint(ck)
    assert [W.shape for W, _ in saved.params] == [(3, 5), (1, 3)] and saved.best is None


def test_resuming_from_incomplete_optimizer_state_names_the_file(written, tmp_path):
    with safe_open(str(written), framework="np") as f:
        moment = next(k for k in f.keys() if k.startswith("opt.v."))
    path = rewrite(written, tmp_path / "i.safetensors", drop=(moment,))
    with pytest.raises(GpucatError) as e:
        fit(CPU, recipe(iterations=7), pictures(), resume=str(path))
    assert str(e.value).startswith(f"{path}: its optimizer state is incomplete (KeyError: ")

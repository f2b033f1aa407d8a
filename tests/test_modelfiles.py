"""Model files at their edges: both formats written and read back for any layer stack, every
way a file can be wrong and the one message naming it, and what each format records."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from gpucat.errors import GpucatError
from gpucat.modelfiles.model import Model, load_model, save_model


def layers(*sizes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(b, a)).astype(dtype), rng.normal(size=(b, 1)).astype(dtype))
        for a, b in zip(sizes, sizes[1:])
    ]


def refusal(path, n_inputs=None) -> str:
    """The one message load_model refuses this file with."""
    with pytest.raises(GpucatError) as e:
        load_model(path, n_inputs)
    return str(e.value)


@pytest.mark.parametrize("name", ["m.safetensors", "m.json"])
def test_any_stack_down_to_one_layer_round_trips(tmp_path, name):
    for sizes in ((12288, 1), (5, 3, 1)):
        path = tmp_path / name
        save_model(path, Model(layers(*sizes)))
        n_inputs = None if sizes[0] != 12288 else 12288
        back = load_model(path, n_inputs)
        assert back.layer_sizes == list(sizes)
        for (W, b), (W0, b0) in zip(back.params, layers(*sizes)):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)
    assert load_model(tmp_path / name, None).metadata.get("format") == (
        "seed-json" if name.endswith(".json") else None
    )
    with pytest.raises(GpucatError, match=re.escape("W1 has shape (3, 5), expected (3, 12288)")):
        load_model(tmp_path / name)  # a 5-input model is not an image model


@pytest.mark.parametrize("name", ["m.safetensors", "m.json"])
def test_a_broken_model_is_refused_before_writing_and_named(tmp_path, name):
    params = layers(5, 1)
    params[0][0][0, 0] = np.nan
    path = tmp_path / name
    with pytest.raises(GpucatError) as e:
        save_model(path, Model(params))
    assert str(e.value) == f"{path}: layer 1 holds NaN or infinite values."
    assert not path.exists()


def test_safetensors_metadata_names_the_first_weights_dtype(tmp_path):
    (W1, b1), (W2, b2) = layers(5, 2, 1)
    model = Model([(W1.astype(np.float64), b1), (W2, b2)])
    save_model(tmp_path / "m.safetensors", model)
    meta = load_model(tmp_path / "m.safetensors", None).metadata
    assert meta["dtype"] == "float64" and meta["layer_sizes"] == [5, 2, 1]


def header_file(path, tensors, gpucat_meta):
    save_file(tensors, str(path), metadata=None if gpucat_meta is None else {"gpucat": gpucat_meta})
    return path


def test_safetensors_metadata_that_is_not_an_object_is_ignored(tmp_path):
    tensors = {
        k: v for l, (W, b) in enumerate(layers(5, 1), 1) for k, v in ((f"W{l}", W), (f"b{l}", b))
    }
    for meta in (None, "not json", "[1, 2]"):
        assert (
            load_model(header_file(tmp_path / "m.safetensors", tensors, meta), None).metadata == {}
        )
    wrong = json.dumps({"layer_sizes": [5, 9, 1]})
    path = header_file(tmp_path / "w.safetensors", tensors, wrong)
    assert refusal(path) == (
        f"{path}: its metadata says layer sizes [5, 9, 1] but its tensors are [5, 1]; the file "
        "is inconsistent."
    )


def test_missing_or_extra_tensors_list_the_keys_found(tmp_path):
    tensors = {f"W{l}": np.ones((1, 1), np.float32) for l in range(1, 6)}
    tensors.update({f"b{l}": np.ones((1, 1), np.float32) for l in range(1, 5)})
    path = header_file(tmp_path / "k.safetensors", tensors, None)
    assert refusal(path) == (
        f"{path}: expected keys W1, b1, ..., WL, bL; found ['W1', 'W2', 'W3', 'W4', 'W5', "
        "'b1', 'b2', 'b3']."
    )


def test_files_that_are_not_models_get_one_message_each(tmp_path):
    short = tmp_path / "s.safetensors"
    short.write_bytes(struct.pack("<Q", 2) + b"{")  # a header that says 2 bytes, cut short
    with pytest.raises(
        GpucatError, match=re.escape(f"{short}: not a readable safetensors model (")
    ):
        load_model(short)
    tiny = tmp_path / "tiny.json"
    tiny.write_bytes(b"{}")  # shorter than a safetensors header: JSON
    assert refusal(tiny, 12288) == (
        f"{tiny}: a JSON model must be an object with keys W1, b1, ...; this is not a model."
    )
    ck = header_file(tmp_path / "ck.safetensors", {"x": np.zeros(1)}, None)
    save_file({"x": np.zeros(1)}, str(ck), metadata={"gpucat_checkpoint": "{}"})
    assert refusal(ck, 12288) == (
        f"{ck} is a training checkpoint (written by --checkpoint), not a model; make a model of "
        f"it with `gpucat train --resume {ck} --out model.safetensors` (a finished run saves at "
        "once), and pass that."
    )


def seed_json(path, **entries):
    path.write_text(json.dumps(entries))
    return path


def test_the_original_formats_entries_are_checked_by_name(tmp_path):
    ok = {"dim": [1, 2], "data": [0.5, 1]}  # no "v": version 1
    assert load_model(
        seed_json(tmp_path / "a.json", W1=ok, b1={"v": 1, "dim": [1, 1], "data": [0]}), None
    ).layer_sizes == [2, 1]
    path = seed_json(tmp_path / "v.json", W1={**ok, "v": 2}, b1=ok)
    assert refusal(path) == f"{path}: entry 'W1' has format version 2; only 1 is known."
    path = seed_json(tmp_path / "d.json", W1={"dim": [1, 2]}, b1=ok)
    assert refusal(path) == (
        f'{path}: entry \'W1\' is not a serialized matrix {{"v": 1, "dim": [rows, cols], '
        '"data": [...]}; this is not a gpucat or original-program model.'
    )


def test_the_original_format_is_written_as_float32_in_shortest_form(tmp_path):
    W = np.array([[1 / 3, 0.1]])
    save_model(tmp_path / "m.json", Model([(W, np.zeros((1, 1)))]))
    text = (tmp_path / "m.json").read_text()
    assert '"data":[0.33333334,0.1]' in text
    back = load_model(tmp_path / "m.json", None).params[0][0]
    np.testing.assert_array_equal(back, W.astype(np.float32))


def test_each_shape_problem_has_its_own_message():
    from gpucat.modelfiles.model import check_shapes

    def refused(params, n_inputs=12288):
        with pytest.raises(GpucatError) as e:
            check_shapes(params, "m.safetensors", n_inputs)
        return str(e.value)

    assert refused([]) == "m.safetensors: the model has no layers."
    flat = [(np.ones(3, np.float32), np.ones((3, 1), np.float32))]
    assert refused(flat) == "m.safetensors: W1 has shape (3,); it must be a matrix of sizes >= 1."
    assert refused(layers(5, 1)) == (
        "m.safetensors: W1 has shape (1, 5), expected (1, 12288) to take the 12288 values of a "
        "64x64 RGB image."
    )
    (W1, b1), _ = layers(5, 3, 1)
    assert refused([(W1, b1), layers(4, 1)[0]], None) == (
        "m.safetensors: W2 has shape (1, 4), expected (1, 3) to follow the previous layer."
    )
    assert (
        refused(layers(5, 4, 2), None) == "m.safetensors: the last layer must have 1 output, has 2."
    )


def test_a_json_model_may_start_with_blank_lines_and_other_text_is_refused(tmp_path):
    path = tmp_path / "m.json"
    save_model(path, Model(layers(5, 1)))
    path.write_text("\n\n  " + path.read_text())
    assert load_model(path, None).layer_sizes == [5, 1]
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model")
    assert refusal(text, 12288) == (
        f"{text}: neither a safetensors nor a JSON model file; pass a file written by "
        "`gpucat train --out` or by the original program."
    )


@pytest.mark.parametrize(
    "length, told",
    [
        (0, "neither a safetensors nor a JSON model file"),
        (1, "not a readable safetensors model"),
        (99_999_999, "not a readable safetensors model"),
        (100_000_000, "neither a safetensors nor a JSON model file"),
    ],
)
def test_a_safetensors_header_length_is_believed_from_1_byte_to_under_100_mb(
    tmp_path, length, told
):
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<Q", length) + b"{...")
    with pytest.raises(GpucatError, match=re.escape(f"{path}: {told}")):
        load_model(path)


def test_a_json_model_whose_ninth_byte_is_a_brace_is_json(tmp_path):
    path = tmp_path / "spaced.json"
    path.write_text(
        '{ "W1": {"dim": [1, 2], "data": [0.5, 1]}, "b1": {"dim": [1, 1], "data": [0]}}'
    )
    assert path.read_bytes()[8:9] == b"{"
    assert load_model(path, None).layer_sizes == [2, 1]


def test_the_last_layers_outputs_are_counted_from_the_last_layer():
    from gpucat.modelfiles.model import check_shapes

    with pytest.raises(GpucatError) as e:
        check_shapes(layers(5, 4, 3, 2), "m", None)
    assert str(e.value) == "m: the last layer must have 1 output, has 2."

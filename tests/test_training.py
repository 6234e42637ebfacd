"""The training loop and callbacks: Keras semantics, reproducibility, and an accuracy gate."""

import pytest
import torch
from torch import nn

from cnnlab import (
    ArrayDataset, CnnlabError, EarlyStopping, ReduceLROnPlateau, build_model, evaluate, fit, load_dataset,
)
from cnnlab.training.devices import resolve_runtime
from cnnlab.training import CSVLogger, ModelCheckpoint, TrainState


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", download=False), load_dataset("digits", split="test", download=False)


def test_seed_mnist_cnn_learns_digits_to_95_percent(digits):
    train, test = digits
    torch.manual_seed(0)
    model = build_model("seed-mnist", train.input_shape, train.num_classes)
    history = fit(model, train, epochs=12, validation_split=0.1, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    metrics = evaluate(model, test)
    assert metrics["accuracy"] >= 0.95, metrics


def test_same_seed_gives_identical_weights(digits):
    train = digits[0].subset(range(200))
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("seed-mnist")
        fit(model, train, epochs=1, seed=3, verbose=0)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_validation_split_takes_the_end_of_the_data_before_shuffling(digits):
    data = digits[0].subset(range(200))
    model = build_model("seed-mnist")
    history = fit(model, data, epochs=2, validation_split=0.1, seed=0, verbose=0,
                  runtime=resolve_runtime(precision="fp32"))
    tail = evaluate(model, data.subset(range(180, 200)))  # Keras: int(200 * 0.9) = 180 onwards
    assert history.history["val_loss"][-1] == pytest.approx(tail["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == tail["accuracy"]
    head = evaluate(model, data.subset(range(20)))
    assert head["loss"] != pytest.approx(tail["loss"], rel=1e-6)


def test_early_stopping_stops_and_restores_best_weights():
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = nn.Linear(1, 1)
    state = TrainState(model=model, lr=1e-3)
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.8]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        es.on_epoch_end(epoch, {"val_loss": loss}, state)
    assert state.stop_training and es.stopped_epoch == 3 and es.best_epoch == 1
    es.on_train_end(state)
    assert model.weight.item() == 1.0


def test_reduce_lr_on_plateau_follows_keras_counting():
    r = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.1)
    state = TrainState(model=nn.Linear(1, 1), lr=1.0)
    lrs = []
    for epoch, loss in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]):
        r.on_epoch_end(epoch, {"val_loss": loss}, state)
        lrs.append(state.lr)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]


def test_the_loop_applies_the_new_learning_rate(digits):
    train = digits[0].subset(range(128))
    history = fit(build_model("seed-mnist"), train, epochs=4, validation_split=0.25, seed=0, verbose=0,
                  callbacks=[ReduceLROnPlateau(monitor="accuracy", mode="max", factor=0.5, patience=0,
                                               min_delta=10.0)])
    assert history.history["lr"] == [1e-3, 1e-3, 5e-4, 2.5e-4]  # each epoch logs the rate it trained with


def test_monitoring_a_missing_metric_names_what_exists(digits):
    with pytest.raises(CnnlabError, match="monitors 'val_loss'.*accuracy"):
        fit(build_model("seed-mnist"), digits[0].subset(range(64)), epochs=1, verbose=0,
            callbacks=[EarlyStopping()])


def test_csv_logger_and_checkpoint(digits, tmp_path):
    saved = []
    cb = ModelCheckpoint(tmp_path / "best", lambda m, p: saved.append(p), monitor="val_loss")
    fit(build_model("seed-mnist"), digits[0].subset(range(128)), epochs=2, validation_split=0.25, verbose=0,
        seed=1, callbacks=[CSVLogger(tmp_path / "h.csv"), cb])
    rows = (tmp_path / "h.csv").read_text().strip().splitlines()
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr" and len(rows) == 3
    assert saved and cb.saved_epoch >= 0


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": -1}, "batch_size must be a positive integer"),
    ({"validation_split": 1.0}, "validation_split"),
])
def test_bad_arguments(digits, kwargs, message):
    with pytest.raises(CnnlabError, match=message):
        fit(build_model("seed-mnist"), digits[0], verbose=0, **kwargs)


def test_wrong_channels_for_the_model_is_a_clear_error(digits):
    model = build_model("seed-cifar10")  # 32x32x3
    with pytest.raises(CnnlabError, match="takes 3 channel.*images have 1"):
        fit(model, digits[0], verbose=0)
    with pytest.raises(CnnlabError, match="num_classes=10"):
        fit(build_model("seed-mnist", num_classes=5), digits[0], verbose=0)


def test_a_nan_loss_stops_with_the_step():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.flatten(1)[:, :2] * self.scale * float("nan")

    data = ArrayDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1] * 4), ["a", "b"])
    with pytest.raises(CnnlabError, match="loss became nan at epoch 1, step 1"):
        fit(Broken(), data, epochs=1, verbose=0)


def test_augmentation_touches_training_batches_only(digits):
    train, test = digits[0].subset(range(100)), digits[1].subset(range(50))
    seen = []

    def augment(images):
        seen.append(len(images))
        return 255 - images  # drastic: would show in validation metrics if applied there

    model = build_model("seed-mnist")
    history = fit(model, train, epochs=2, validation_split=0.2, seed=0, verbose=0, augment=augment,
                  runtime=resolve_runtime(precision="fp32"))
    assert sum(seen) == 80 * 2  # exactly the training part, every epoch; never the 20 validation images
    tail = evaluate(model, train.subset(range(80, 100)))
    assert history.history["val_loss"][-1] == pytest.approx(tail["loss"], rel=1e-6)  # validation saw raw pixels
    before = len(seen)
    evaluate(model, test)
    assert len(seen) == before


def test_class_weights_weight_the_loss_like_keras():
    from cnnlab.data import class_weights
    from cnnlab.training.objectives import Objective

    labels = torch.tensor([0, 0, 0, 1])
    weights = class_weights(labels, 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 4 / 2]))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = weights[labels]
    # Keras reduces a weighted loss by the batch size ("sum_over_batch_size"), not by the sum of weights
    torch.testing.assert_close(Objective(from_logits=True).loss(logits, labels, w), (w * per_sample).sum() / 4)


def test_evaluate_averages_over_the_images_it_could_decode(tmp_path):
    from PIL import Image

    from cnnlab.data import FolderDataset

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (28, 28), 255 * (i % 2)).save(paths[-1])
    data = FolderDataset(paths, torch.tensor([0, 1, 0, 1]), ["black", "white"], 1, (28, 28))
    model = build_model("seed-mnist", num_classes=2)
    full = evaluate(model, data)
    paths[1].write_bytes(b"")  # breaks after the dataset was built: dropped while streaming
    paths[3].write_bytes(b"")
    blacks = evaluate(model, data.subset([0, 2]))
    partial = evaluate(model, data)
    assert partial == pytest.approx(blacks) and partial != pytest.approx(full)
    assert sorted(data.skipped_during_training) == sorted(str(p) for p in (paths[1], paths[3]))


# ---- the Python API as a new user tries it (issue 16's findings)
def test_data_sorted_by_class_validate_on_every_class(digits):
    train, _ = digits
    order = torch.argsort(train.labels, stable=True)
    sorted_train = train.subset(order[:400])  # as an image folder or the CIFAR archive loads: class by class
    with pytest.warns(UserWarning, match="sorted by class, so the last 10% would hold only class"):
        history = fit(build_model("seed-mnist"), sorted_train, epochs=3, validation_split=0.1, seed=0, verbose=0,
                      runtime=resolve_runtime(precision="fp32"))
    assert history.history["val_accuracy"][-1] > 0.5  # the tail alone (one class never trained on) scores 0


def test_unpacking_evaluate_as_the_tutorials_do_gives_the_numbers(digits):
    train, test = digits
    scores = evaluate(build_model("seed-mnist"), test)
    test_loss, test_acc = scores  # the tutorials' line; a dict would have given the key names
    assert (test_loss, test_acc) == (scores["loss"], scores["accuracy"]) and 0 <= test_acc <= 1 < test_loss
    assert dict(scores) == {"loss": test_loss, "accuracy": test_acc} == {**scores}


def test_a_softmax_appended_with_torch_append_is_trained_as_probabilities(digits):
    from cnnlab import Conv2D, Dense, Flatten, MaxPooling2D, Sequential

    train, test = digits
    model = Sequential([Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), MaxPooling2D(), Flatten()])
    model.append(Dense(10, activation="softmax"))
    assert model.output_kind == "probabilities"
    fit(model, train, epochs=3, seed=0, verbose=0, augment="rotate=10")  # the CLI's augment text works here too
    assert evaluate(model, test)["accuracy"] > 0.9


def test_binary_sigmoid_model_with_the_binary_loss(digits):
    from cnnlab import Conv2D, Dense, Flatten, Sequential
    from cnnlab.training.objectives import Objective

    train, test = digits
    zeros_ones, test_01 = train.subset(torch.nonzero(train.labels <= 1).flatten()), \
        test.subset(torch.nonzero(test.labels <= 1).flatten())
    model = Sequential([Conv2D(4, 3, activation="relu", input_shape=(28, 28, 1)), Flatten(),
                        Dense(1, activation="sigmoid")])
    with pytest.raises(CnnlabError, match="1 output .* use loss='binary_crossentropy'"):
        fit(model, zeros_ones, verbose=0)
    binary = Objective("binary_crossentropy")
    fit(model, zeros_ones, epochs=2, seed=0, verbose=0, objective=binary)
    assert evaluate(model, test_01, objective=binary)["accuracy"] > 0.95


def test_summary_of_a_torchvision_model_needs_no_input_shape():
    from cnnlab import model_summary

    assert model_summary(build_model("vgg16", (32, 32, 3))).total == 134_301_514  # torchvision VGG16, 10 classes

"""Contracts for the training hints: told once, only when the numbers say a run failed silently."""

from __future__ import annotations

import pytest
import torch

from cnnlab.training.callbacks import TrainingHints, TrainState


def epochs(hints: TrainingHints, *logs: dict[str, float]) -> None:
    state = TrainState(torch.nn.Linear(1, 1), 1e-3)
    hints.on_train_begin(state)
    for epoch, values in enumerate(logs):
        hints.on_epoch_end(epoch, values, state)


@pytest.mark.parametrize("classes, accuracy, told", [(10, 0.10, True), (10, 0.149, True), (10, 0.16, False),
                                                     (2, 0.52, True), (2, 0.60, False), (100, 0.02, True)])
def test_the_chance_hint_follows_the_class_count(classes: int, accuracy: float, told: bool) -> None:
    said: list[str] = []
    epochs(TrainingHints(classes, 1e-3, has_batchnorm=False, say=said.append), {"loss": 2.3, "accuracy": accuracy})
    assert bool(said) == told
    if told:
        assert said == [f"hint: accuracy {accuracy:.3f} after epoch 1 is chance for {classes} classes; if it stays "
                        f"there, the learning rate 0.001 is the usual cause: try --lr 0.0001 (too high stalls a "
                        f"network, as 1e-3 does AlexNet and VGG16) or --lr 0.01 (too low barely moves it)"]


def test_the_chance_hint_looks_at_the_first_epoch_only_and_a_new_fit_tells_again() -> None:
    said: list[str] = []
    hints = TrainingHints(10, 1e-3, has_batchnorm=False, say=said.append)
    epochs(hints, {"accuracy": 0.5}, {"accuracy": 0.1}, {"accuracy": 0.1})
    assert said == []
    epochs(hints, {"accuracy": 0.1}, {"accuracy": 0.1})
    assert len(said) == 1


@pytest.mark.parametrize("batchnorm, accuracy, val_accuracy, told", [
    (True, 0.82, 0.12, True),     # resnet-small after one epoch on a small set (the numbers)
    (False, 0.82, 0.12, False),   # without BatchNorm the cause is something else
    (True, 0.82, 0.60, False),    # validation learned: an ordinary gap
    (True, 0.35, 0.12, False),    # training barely above chance too
])
def test_the_batchnorm_hint_needs_batchnorm_a_gap_and_validation_at_chance(
        batchnorm: bool, accuracy: float, val_accuracy: float, told: bool) -> None:
    said: list[str] = []
    hints = TrainingHints(10, 1e-3, has_batchnorm=batchnorm, say=said.append)
    epochs(hints, *[{"accuracy": accuracy, "val_accuracy": val_accuracy}] * 3)
    assert len(said) == int(told)
    if told:
        assert "BatchNorm's moving statistics" in said[0] and "validation 0.120" in said[0]


@pytest.mark.parametrize("argv, rate", [
    (["--model", "alexnet"], 1e-4),                    # the registry's rate from scratch
    (["--model", "vgg16"], 1e-4),
    (["--model", "alexnet", "--lr", "1e-3"], 1e-3),    # the user's rate wins
    (["--model", "alexnet", "--pretrained"], 1e-3),    # transfer: the head trains at Keras's rate
    (["--model", "alexnet", "--recipe", "fast"], 4e-3),
    (["--model", "seed-mnist"], 1e-3),
    ([], 1e-3),
])
def test_the_seed_recipe_takes_the_registry_rate_unless_told_otherwise(argv: list[str], rate: float) -> None:
    from cnnlab.cli import build_parser
    from cnnlab.cli_checks import train_config

    args = build_parser().parse_args(["train", "--dataset", "digits", *argv])
    assert train_config(args).learning_rate == rate


def test_a_config_file_rate_wins_over_the_registry(tmp_path) -> None:
    from cnnlab.cli import build_parser
    from cnnlab.cli_checks import train_config

    (tmp_path / "c.json").write_text('{"learning_rate": 0.003}')
    args = build_parser().parse_args(["train", "--model", "alexnet", "--config", str(tmp_path / "c.json")])
    assert train_config(args).learning_rate == 0.003


def test_a_run_at_chance_prints_the_hint_once_from_the_cli(tmp_path, capsys) -> None:
    from cnnlab.cli import main

    # lr 1e-9: the weights do not move, the first epoch ends at chance, as AlexNet's did at 1e-3
    assert main(["train", "--dataset", "digits", "--lr", "1e-9", "--epochs", "2", "--quiet", "--seed", "0",
                 "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("hint: accuracy") == 1 and "try --lr 1e-10 (too high" in out and "--lr 1e-08 (too low" in out
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--quiet", "--seed", "0",
                 "--run-dir", str(tmp_path / "ok")]) == 0
    assert "hint:" not in capsys.readouterr().out


def test_a_model_written_in_python_trains_from_the_cli_under_its_own_name(tmp_path, capsys) -> None:
    # The issue: `--model custom.safetensors` was "unknown model", and --init-from runs were labelled seed-mnist.
    from cnnlab import Conv2D, Dense, Flatten, MaxPooling2D, Sequential, load_model, save_model
    from cnnlab.cli import main

    torch.manual_seed(0)
    custom = Sequential([Conv2D(8, 3, activation="relu", input_shape=(28, 28, 1)), MaxPooling2D(2), Flatten(),
                         Dense(10, activation="softmax")])
    path = save_model(custom, tmp_path / "custom.safetensors", [str(i) for i in range(10)], (28, 28, 1))
    assert main(["train", "--dataset", "digits", "--model", str(path), "--epochs", "3", "--quiet", "--seed", "0",
                 "--runs-root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    [run] = (tmp_path / "runs").iterdir()
    assert run.name.startswith("digits-custom-"), run.name
    trained, card = load_model(run)
    assert [type(m).__name__ for m in trained] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    assert float(out.split("test accuracy: ")[1].split()[0]) > 0.8  # it trained (chance is 0.1)
    from cnnlab.models.files import build_from_file

    saved, fresh = load_model(path)[0].state_dict(), build_from_file(path)[0].state_dict()
    kernels = [k for k in saved if saved[k].ndim > 1]  # (biases start at zero either way)
    assert saved.keys() == fresh.keys() and not any(torch.equal(saved[k], fresh[k]) for k in kernels)  # fresh
    assert main(["train", "--dataset", "digits", "--init-from", str(run), "--epochs", "1", "--quiet", "--seed", "0",
                 "--runs-root", str(tmp_path / "more")]) == 0
    [again] = (tmp_path / "more").iterdir()
    assert again.name.startswith(f"digits-{run.name}-"), again.name
    capsys.readouterr()
    three = save_model(Sequential([Flatten(input_shape=(28, 28, 1)), Dense(3, activation="softmax")]),
                       tmp_path / "three.safetensors", ["a", "b", "c"], (28, 28, 1))
    assert main(["train", "--dataset", "digits", "--model", str(three), "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "has 3 classes but the data has 10" in err and not (tmp_path / "x").exists()

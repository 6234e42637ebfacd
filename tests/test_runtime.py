"""Device, precision and recipes: the fast paths give the same answers as the plain one."""

import json

import pytest
import torch

from cnnlab import CnnlabError, build_model, evaluate, fit, load_dataset
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.models.files import load_model
from cnnlab.recipes import RECIPES
from cnnlab.training.devices import Runtime, resolve_device, resolve_precision, resolve_runtime
from cnnlab.training.objectives import Objective

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", download=False), load_dataset("digits", split="test", download=False)


def test_auto_device_is_the_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == CPU
    with pytest.raises(CnnlabError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("name, message", [("gpu", "not one of"), ("cuda:x", "not a device name|no CUDA GPU")])
def test_unknown_devices_fail_with_the_choices(name, message):
    with pytest.raises(CnnlabError, match=message):
        resolve_device(name)


def test_precision_choices():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", CPU) in ("fp32", "bf16")
    with pytest.raises(CnnlabError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(CnnlabError, match="not one of"):
        resolve_precision("fp64", CPU)
    with pytest.raises(CnnlabError, match="--compile"):
        resolve_runtime(compile="maybe")


def test_compile_is_off_on_the_cpu_unless_asked():
    assert not resolve_runtime("cpu", steps=10**6).compile
    assert resolve_runtime("cpu", compile="on").compile


def test_label_smoothing_matches_the_hand_computed_loss():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = torch.log_softmax(logits, 1)[0]
    smoothing = 0.3
    target = torch.tensor([(1 - smoothing) + smoothing / 3, smoothing / 3, smoothing / 3])
    expected = -(target * log_p).sum()
    smoothed_logits = Objective(from_logits=True, label_smoothing=smoothing)
    assert float(smoothed_logits.loss(logits, torch.tensor([0]))) == pytest.approx(float(expected), rel=1e-6)
    probabilities = torch.softmax(logits, 1)
    assert float(Objective(from_logits=False, label_smoothing=smoothing).loss(probabilities, torch.tensor([0]))) == \
        pytest.approx(float(expected), rel=1e-5)


def test_bf16_training_learns_as_well_as_fp32(digits):
    train, test = digits
    accuracies = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("seed-mnist")
        fit(model, train, epochs=4, seed=0, verbose=0, runtime=resolve_runtime("cpu", precision))
        accuracies[precision] = evaluate(model, test)["accuracy"]
    assert accuracies["fp32"] > 0.9
    assert abs(accuracies["bf16"] - accuracies["fp32"]) < 0.03, accuracies


def test_channels_last_model_saves_loads_and_predicts_the_same(digits, tmp_path):
    from cnnlab.models.files import save_model

    train, test = digits
    model = build_model("seed-mnist")
    fit(model, train.subset(range(128)), epochs=1, seed=0, verbose=0, runtime=Runtime(CPU, "fp32", False))
    conv_weight = next(p for p in model.parameters() if p.dim() == 4)
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    path = save_model(model, tmp_path / "m.safetensors", train.class_names, list(train.input_shape))
    loaded, _ = load_model(path)
    x = test.images[:8].float() / 255
    torch.testing.assert_close(loaded(x), model(x))


def test_onecycle_warms_up_then_anneals_to_almost_zero(digits):
    train, _ = digits
    history = fit(build_model("fast-cnn"), train.subset(range(320)), epochs=6, batch_size=32, learning_rate=4e-3,
                  schedule="onecycle", seed=0, verbose=0, runtime=Runtime(CPU, "fp32", False))
    lrs = history.history["lr"]
    assert max(lrs) == pytest.approx(4e-3, rel=0.2)  # reached near the peak after ~30% of the steps
    assert lrs[-1] < 4e-3 / 100
    assert lrs.index(max(lrs)) in (1, 2)


def test_onecycle_with_reduce_lr_on_plateau_is_refused():
    with pytest.raises(CnnlabError, match="onecycle"):
        TrainConfig(schedule="onecycle", reduce_lr_patience=2).validate()
    with pytest.raises(CnnlabError, match="schedule must be one of"):
        TrainConfig(schedule="cosine").validate()


def test_every_recipe_names_a_registered_model_or_none():
    from cnnlab.models.zoo import MODELS

    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        assert recipe.model is None or recipe.model in MODELS.names()


def test_fast_recipe_from_the_cli_and_flags_that_win(tmp_path, capsys):
    run = tmp_path / "fast"
    assert main(["train", "--dataset", "digits", "--recipe", "fast", "--epochs", "8", "--batch-size", "48",
                 "--run-dir", str(run), "--quiet", "--device", "cpu"]) in (0, None)
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["schedule"], config["batch_size"], config["epochs"]) == \
        ("fast-cnn", "onecycle", 48, 8)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.93  # 1437 digits, 8 epochs: 0.96-0.99 measured


def test_a_wrong_device_fails_before_the_run_directory_exists(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = tmp_path / "never"
    assert main(["train", "--dataset", "digits", "--device", "cuda", "--run-dir", str(run)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not run.exists()


def test_a_gpu_style_runtime_checks_the_loss_every_n_steps():
    """A GPU reads the loss back every `sync_every` steps; the same code runs here on the CPU."""
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.flatten(1)[:, :2] * self.scale * float("inf")

    from cnnlab import ArrayDataset

    data = ArrayDataset(torch.zeros(64, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1] * 32), ["a", "b"])
    with pytest.raises(CnnlabError, match=r"loss became (nan|inf) at epoch 1, step 1-5;"):
        fit(Broken(), data, epochs=1, batch_size=4, verbose=0, runtime=Runtime(CPU, "fp32", False, sync_every=5))


def test_compiled_training_matches_eager(digits):
    """torch.compile's path (on by default for long GPU runs) on a tiny model, on the CPU."""
    from cnnlab.models.layers import Dense, Flatten
    from cnnlab.models.sequential import Sequential

    train, _ = digits
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = Sequential([Flatten(input_shape=(28, 28, 1)), Dense(10)])
        history = fit(model, train.subset(range(256)), epochs=2, seed=0, verbose=0,
                      runtime=Runtime(CPU, "fp32", compiled))
        results.append((history.history["loss"], model[-1].weight.detach().clone()
                        if hasattr(model[-1], "weight") else next(model.parameters()).detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def test_speedrun_takes_flip_crop_and_cutout_from_augment(tmp_path):
    from cnnlab.config import TrainConfig
    from cnnlab.jobs import _prepare_data, _speedrun_config
    from cnnlab.models.speedrun import SpeedrunNet

    config = TrainConfig(dataset="digits", recipe="speedrun", augment="flip=h,crop=3,cutout=6",
                         run_dir=str(tmp_path / "r"))
    data = _prepare_data(config, 0)
    settings = _speedrun_config(config, data, SpeedrunNet(data.train.input_shape, 10, (8, 8, 8)))
    assert (settings.flip, settings.translate, settings.cutout) == (True, 3, 6)


def test_speedrun_recipe_from_the_cli_trains_saves_and_evaluates(tmp_path, capsys):
    run = tmp_path / "speedrun"
    assert main(["train", "--dataset", "digits", "--recipe", "speedrun", "--widths", "16", "32", "32",
                 "--epochs", "4", "--batch-size", "128", "--device", "cpu", "--precision", "fp32", "--run-dir",
                 str(run), "--quiet"]) in (0, None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9  # 0.99 measured over 5 seeds at these settings (TTA, no flip)
    model, card = load_model(run)
    assert card.architecture["options"] == {"widths": [16, 32, 32]}
    assert card.test_time_augmentation == {"level": 2, "flip": False}  # digits are never mirrored

    def evaluated(*flags):
        capsys.readouterr()
        assert main(["evaluate", str(run), "--json", *flags]) in (0, None)
        return json.loads(capsys.readouterr().out)

    # `evaluate` applies the run's own test-time augmentation: the number the run reported
    own = evaluated()
    assert own["tta"] == 2 and own["accuracy"] == metrics["test_accuracy"]
    assert own["loss"] == pytest.approx(metrics["test_loss"], abs=1e-5)
    assert evaluated("--report", str(tmp_path / "report"))["accuracy"] == metrics["test_accuracy"]
    plain = evaluated("--tta", "0")
    expected = evaluate(model, load_dataset("digits", split="test"))
    assert plain["tta"] == 0 and plain["accuracy"] == expected["accuracy"]
    capsys.readouterr()
    assert main(["evaluate", str(run)]) in (0, None)
    assert "test-time augmentation level 2" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--recipe", "speedrun", "--model", "seed-mnist"], "trains the speedrun model"),
    (["--recipe", "speedrun", "--augment", "rotate=10", "--widths", "8", "8", "8"], "flip, crop and cutout only"),
    (["--recipe", "speedrun", "--early-stopping", "3", "--widths", "8", "8", "8"], "drop --early-stopping"),
    (["--model", "seed-mnist", "--widths", "8", "8", "8"], "takes no options"),
])
def test_speedrun_misuse_fails_before_the_run_directory(tmp_path, capsys, flags, message):
    run = tmp_path / "never"
    assert main(["train", "--dataset", "digits", *flags, "--run-dir", str(run)]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()

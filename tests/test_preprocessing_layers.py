"""Contracts of the Keras preprocessing layers (models/preprocessing_layers.py).

Hand-computed values (exact quarter turns, whole-pixel shifts, a 2x zoom), Keras's documented meanings
(training-only randomness, the factor units) and outputs real tf.keras computed at degenerate random ranges
(tests/data/keras_image_data_reference.json, written by benchmarks/keras_image_data_reference.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import Dense, Flatten
from cnnlab.models.sequential import Sequential
from cnnlab.models.preprocessing_layers import (
    PREPROCESSING_LAYERS, CenterCrop, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation,
    RandomTranslation, RandomZoom, Rescaling, Resizing,
)

REFERENCE = json.loads((Path(__file__).parent / "data" / "keras_image_data_reference.json").read_text())


def images(n: int = 6, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 255  # (N, C, H, W) in 0..255


def test_rescaling_is_exact_scale_and_offset() -> None:
    x = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16)
    assert torch.equal(Rescaling(1 / 255)(x), x * (1 / 255))
    out = Rescaling(1 / 127.5, offset=-1)(x)
    assert out.min().item() == -1.0 and out.max().item() == 1.0
    per_channel = Rescaling([1.0, 2.0, 0.5])(torch.ones(1, 3, 2, 2))
    assert per_channel[0, :, 0, 0].tolist() == [1.0, 2.0, 0.5]


def test_rescaling_and_resizing_apply_at_inference_too() -> None:
    x = images()
    assert torch.equal(Rescaling(0.5).eval()(x), x * 0.5)
    assert Resizing(4, 6).eval()(x).shape == (6, 3, 4, 6)
    assert CenterCrop(4, 4).eval()(x).shape == (6, 3, 4, 4)


@pytest.mark.parametrize("layer", [RandomFlip(), RandomRotation(0.2), RandomZoom(0.3), RandomTranslation(0.2, 0.2),
                                   RandomContrast(0.5), RandomBrightness(0.3)], ids=lambda layer: type(layer).__name__)
def test_random_layers_are_the_identity_at_inference(layer: torch.nn.Module) -> None:
    x = images()
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(layer.train()(x, training=False), x)
    assert not torch.equal(layer.train()(x), x)  # and they do change images in training


def test_training_random_flip_mirrors_each_image_either_way() -> None:
    x = images(n=64)
    out = RandomFlip("horizontal")(x)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54  # each image flips with probability 0.5 on its own
    both = RandomFlip("horizontal_and_vertical")(x)
    kinds = [[torch.equal(b, v) for v in (a, a.flip(2), a.flip(1), a.flip(1).flip(2))]
             for a, b in zip(x, both, strict=True)]  # (C, H, W): flip(2) mirrors left-right, flip(1) up-down
    assert all(any(k) for k in kinds) and all(sum(k[i] for k in kinds) > 0 for i in range(4))


def test_rotation_factor_is_a_fraction_of_a_turn_counter_clockwise() -> None:
    x = images(h=8, w=8)
    quarter = RandomRotation((0.25, 0.25))(x)
    assert torch.allclose(quarter, torch.rot90(x, 1, dims=(2, 3)), atol=1e-3)  # rot90 turns counter-clockwise
    half = RandomRotation((-0.5, -0.5))(x)
    assert torch.allclose(half, x.flip(2).flip(3), atol=1e-3)


def test_zoom_out_by_two_shows_the_image_at_half_size_with_the_fill() -> None:
    x = torch.ones(1, 1, 8, 8)
    out = RandomZoom((1.0, 1.0), fill_mode="constant", fill_value=0.0)(x)[0, 0]  # zoom 1 + 1 = 2: zoom out
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1
    assert torch.allclose(out, expected, atol=1e-6)
    zoom_in = RandomZoom((-0.5, -0.5))(torch.arange(64.0).view(1, 1, 8, 8))  # 2x larger: the centre fills it
    assert zoom_in.min() > 8 and zoom_in.max() < 55


def test_translation_moves_whole_pixels_down_and_right_with_the_fill_value() -> None:
    x = images(n=2, c=1, h=8, w=10)
    out = RandomTranslation((0.25, 0.25), (-0.1, -0.1), fill_mode="constant", fill_value=7.0)(x)
    assert torch.allclose(out[:, :, 2:, :9], x[:, :, :6, 1:], atol=1e-4)  # 2 rows down, 1 column left
    assert torch.allclose(out[:, :, :2], torch.full_like(out[:, :, :2], 7.0))


@pytest.mark.parametrize("name, layer", [
    ("rotation_0.1_reflect", RandomRotation((0.1, 0.1), fill_mode="reflect")),
    ("rotation_-0.05_constant", RandomRotation((-0.05, -0.05), fill_mode="constant", fill_value=3.0)),
    ("zoom_0.3_reflect", RandomZoom((0.3, 0.3), fill_mode="reflect")),
    ("zoom_-0.2_0.25_nearest", RandomZoom((-0.2, -0.2), (0.25, 0.25), fill_mode="nearest")),
    ("translation_0.2_-0.1_constant", RandomTranslation((0.2, 0.2), (-0.1, -0.1), fill_mode="constant",
                                                         fill_value=5.0)),
    ("resizing_4x5", Resizing(4, 5)),
    ("resizing_4x4_crop", Resizing(4, 4, crop_to_aspect_ratio=True)),
    ("center_crop_3x5", CenterCrop(3, 5)),
])
def test_layers_match_keras_3_at_fixed_ranges(name: str, layer: torch.nn.Module) -> None:
    x = np.asarray(REFERENCE["layers"]["input"], dtype=np.float32)  # (1, 7, 9, 2) channels-last, as Keras ran it
    expected = np.asarray(REFERENCE["layers"][name], dtype=np.float32)
    out = layer(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert out.shape == expected.shape
    # measured 2026-12-06: at most 2e-4 apart (float32 rounding of the sampling grid), fill modes included
    assert np.abs(out - expected).max() < 1e-3, np.abs(out - expected).max()


def test_contrast_scales_each_image_about_its_channel_means_by_one_factor_in_range() -> None:
    x = images(n=16, c=3) * 0.5 + 60  # 60..187: no clipping
    out = RandomContrast(0.4)(x)
    mean = x.mean((2, 3), keepdim=True)
    factor = (out - mean) / (x - mean)  # (N, C, H, W): one value per image
    per_image = factor.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-3)
    assert bool(((per_image[:, 0] >= 0.6 - 1e-4) & (per_image[:, 0] <= 1.4 + 1e-4)).all())
    assert RandomContrast(1.0)(torch.full((4, 3, 2, 2), 255.0) * torch.rand(4, 1, 1, 1)).max() <= 255


def test_brightness_adds_one_delta_per_image_within_factor_times_the_value_range() -> None:
    x = images(n=16) * 0.2 + 100  # 100..151
    out = RandomBrightness((-0.1, 0.2))(x)
    delta = (out - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-3)
    assert bool(((delta[:, 0] >= -25.5 - 1e-3) & (delta[:, 0] <= 51 + 1e-3)).all())
    unit = RandomBrightness(0.5, value_range=(0, 1))(torch.full((8, 1, 2, 2), 0.9))
    assert unit.max() <= 1.0 and unit.min() >= 0.4 - 1e-6


def test_random_crop_takes_a_window_in_training_and_resizes_at_inference() -> None:
    x = torch.arange(32 * 6 * 8, dtype=torch.float32).view(32, 1, 6, 8)
    out = RandomCrop(3, 4)(x)
    corners = [(t, s) for t in range(4) for s in range(5)]
    found = [next((t, s) for t, s in corners if torch.equal(o, x[i, :, t:t + 3, s:s + 4])) for i, o in enumerate(out)]
    assert len({t for t, _ in found}) > 1 and len({s for _, s in found}) > 1  # each image its own window
    x = x[:2]
    # Keras's documented inference: the largest centred window of the target aspect ratio, resized to it (here the
    # whole image, a 2x downscale: bilinear gives 2x2 block means). Keras 3.15 itself returns the input unchanged
    # at inference (its code crops only when training), against its docs and its own compute_output_shape.
    blocks = RandomCrop(3, 4).eval()(x)
    assert torch.allclose(blocks, torch.nn.functional.avg_pool2d(x, 2))


def test_seeded_layers_repeat_their_draws() -> None:
    x = images(n=8)
    assert torch.equal(RandomRotation(0.2, seed=5)(x), RandomRotation(0.2, seed=5)(x))
    assert torch.equal(RandomFlip(seed=3)(x), RandomFlip(seed=3)(x))


@pytest.mark.parametrize("cls", PREPROCESSING_LAYERS, ids=lambda cls: cls.__name__)
def test_every_layer_rebuilds_from_its_config(cls: type) -> None:
    examples = {"Rescaling": {"scale": 1 / 255, "offset": 0.5}, "Resizing": {"height": 4, "width": 5},
                "CenterCrop": {"height": 4, "width": 4}, "RandomFlip": {"mode": "vertical", "seed": 2},
                "RandomRotation": {"factor": (-0.1, 0.2), "fill_mode": "constant", "fill_value": 1.0, "seed": 2},
                "RandomZoom": {"height_factor": 0.2, "width_factor": (-0.1, 0.1), "fill_mode": "nearest", "seed": 2},
                "RandomTranslation": {"height_factor": 0.1, "width_factor": 0.2, "interpolation": "nearest",
                                      "seed": 2},
                "RandomContrast": {"factor": 0.3, "value_range": (0, 200), "seed": 2},
                "RandomBrightness": {"factor": (0.0, 0.2), "value_range": (0, 100), "seed": 2},
                "RandomCrop": {"height": 4, "width": 4, "seed": 2}}
    layer = cls(**examples[cls.__name__], name="pre")
    config = layer.get_config()
    rebuilt = cls(**json.loads(json.dumps(config)))  # as a model file stores it: JSON
    assert rebuilt.get_config() == json.loads(json.dumps(config))
    x = images()
    assert torch.equal(rebuilt.eval()(x), layer.eval()(x))
    assert torch.equal(rebuilt.train()(x), layer.train()(x))  # same seed, same settings: the same draws


def test_layers_build_inside_a_sequential_with_their_output_shapes() -> None:
    model = Sequential([Resizing(6, 6, input_shape=(8, 10, 3)), Rescaling(1 / 255), RandomFlip("horizontal"),
                        RandomRotation(0.1), RandomCrop(4, 4), Flatten(), Dense(2)])
    assert model.layer_output_shapes()[:5] == [(6, 6, 3), (6, 6, 3), (6, 6, 3), (6, 6, 3), (4, 4, 3)]
    x = images(n=3, h=8, w=10)
    model.eval()
    assert torch.equal(model(x), model(x))  # inference: deterministic
    assert model(x).shape == (3, 2)


def test_a_model_file_keeps_the_layers_so_inference_rescales_and_resizes(tmp_path: Path) -> None:
    from cnnlab.models.files import load_model, save_model

    model = Sequential([Resizing(6, 6, input_shape=(8, 10, 3)), Rescaling(1 / 255, offset=-0.5),
                        RandomRotation((-0.1, 0.2), fill_mode="constant", fill_value=2.0), RandomFlip("horizontal"),
                        Flatten(), Dense(2)]).eval()
    path = save_model(model, tmp_path / "augmented", ["a", "b"], (8, 10, 3))
    loaded, _ = load_model(path)
    kinds = [type(layer).__name__ for layer in loaded]
    assert kinds == ["Resizing", "Rescaling", "RandomRotation", "RandomFlip", "Flatten", "Dense"]
    assert loaded[2].get_config() == model[2].get_config()
    x = images(n=3, h=8, w=10)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # a fresh process that never imports this module by name still knows the layers (cnnlab.models registers them)
    fresh = subprocess.run([sys.executable, "-c", "import sys; from cnnlab.models.files import load_model; "
                            "print(type(load_model(sys.argv[1])[0][2]).__name__)", str(path)],
                           capture_output=True, text=True, timeout=300)
    assert fresh.stdout.strip() == "RandomRotation", fresh.stderr[-500:]


def test_a_keras_model_called_directly_augments_but_predict_does_not() -> None:
    from cnnlab import keras

    augmentation = keras.Sequential([RandomFlip("horizontal", input_shape=(5, 6, 3)), RandomRotation(0.2)])
    x = np.random.default_rng(1).uniform(0, 255, (8, 5, 6, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "raw 0..255 pixels" warning for a model without weights
        assert not np.allclose(augmentation(x).numpy(), x)  # the tutorials' preview: data_augmentation(images)
    assert np.array_equal(augmentation.predict(x, verbose=0), x)
    assert not any(layer.training for layer in augmentation.modules())
    scaled = keras.Sequential([Rescaling(1 / 255, input_shape=(5, 6, 3)), Flatten(), Dense(2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raw 0..255 pixels are right for a model that rescales them
        scaled.predict(x, verbose=0)


def test_the_layers_work_in_a_functional_model_as_the_transfer_tutorial_builds_one() -> None:
    from cnnlab import keras

    inputs = keras.Input(shape=(8, 8, 3))
    x = RandomRotation(0.1)(RandomFlip("horizontal")(inputs))  # data_augmentation(inputs)
    outputs = Rescaling(1 / 127.5, offset=-1)(Resizing(4, 4)(x))  # preprocess_input, as MobileNetV2 wants
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 4, 4, 3)
    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    resized = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(4, 4), mode="bilinear",
                                              align_corners=False).permute(0, 2, 3, 1).numpy()
    assert np.allclose(model.predict(x, verbose=0), resized / 127.5 - 1, atol=1e-6)  # inference: no randomness
    assert not np.allclose(model(x).numpy(), resized / 127.5 - 1, atol=1e-2)  # a direct call augments


def test_a_numpy_call_takes_channels_last_images_and_augments_as_keras_does() -> None:
    x = np.random.default_rng(0).uniform(0, 255, (4, 5, 6, 3)).astype(np.float32)
    out = RandomFlip("horizontal", seed=0)(x)
    assert tuple(out.shape) == (4, 5, 6, 3)
    arr = out.numpy()
    assert all(np.array_equal(a, b) or np.array_equal(a, b[:, ::-1]) for a, b in zip(arr, x, strict=True))
    assert not np.array_equal(arr, x)  # a direct call trains (Keras's default training=True)
    assert np.allclose(Rescaling(1 / 255)(x[0]).numpy(), x[0] / 255)  # one image (H, W, C)


def test_arguments_fail_with_one_line_naming_them() -> None:
    for make, words in [(lambda: RandomFlip("diagonal"), "mode"), (lambda: RandomRotation(0.1, fill_mode="wrap"),
                                                                   "wrap"),
                        (lambda: RandomZoom((0.3, 0.1)), "height_factor"), (lambda: Resizing(0, 4), "height"),
                        (lambda: RandomContrast(1.5), "factor")]:
        with pytest.raises(CnnlabError, match=words) as info:
            make()
        assert "\n" not in str(info.value)

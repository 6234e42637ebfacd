"""Contracts of cnnlab.data.augment and cnnlab.viz.grids: exact pixels where the result is known, ranges otherwise.

Shifts and crops are checked against numpy's own padding (np.pad 'constant', 'edge', 'symmetric' are
Keras's 'constant', 'nearest', 'reflect') and torch.roll, the affine warp against scipy.ndimage (the warp
Keras itself uses), flips against exact mirrors, colour changes against the stated factor ranges, and
randomness against the per-sample and reproducibility promises. Speed is a contract without a clock:
the work done per batch (calls into torch, grid_sample calls) must not grow with the batch size.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch.overrides import TorchFunctionMode

from cnnlab.data.augment import (
    FILLS, PRESETS, Augmenter, AugmentSpec, _warp, parse_augment, random_crop, random_cutout, random_flip,
)
from cnnlab.errors import CnnlabError
from cnnlab.viz import augment_preview, plot_image_grid


def random_images(n: int, channels: int, height: int, width: int, seed: int = 0, low: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, 256, (n, channels, height, width), dtype=torch.uint8, generator=generator)


def shifted_copies(image: torch.Tensor, reach: int, mode: str) -> dict[tuple[int, int], torch.Tensor]:
    """Every (dy, dx) shift of a (C, H, W) image by at most `reach` pixels, new pixels filled by np.pad `mode`."""
    _, height, width = image.shape
    padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (reach, reach), (reach, reach)), mode=mode))  # type: ignore[call-overload]
    return {(dy, dx): padded[:, reach + dy:reach + dy + height, reach + dx:reach + dx + width]
            for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)}


def find_shift(output: torch.Tensor, candidates: dict[tuple[int, int], torch.Tensor]) -> tuple[int, int] | None:
    return next((shift for shift, candidate in candidates.items() if torch.equal(output, candidate)), None)


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize(("text", "field", "value"), [
    ("rotate=20", "rotate", 20.0), ("shift=0.2", "shift", 0.2), ("flip=h", "flip", "h"), ("flip=v", "flip", "v"),
    ("flip=hv", "flip", "hv"), ("zoom=0.2", "zoom", 0.2), ("shear=15", "shear", 15.0),
    ("brightness=0.3", "brightness", 0.3), ("contrast=0.4", "contrast", 0.4), ("crop=4", "crop", 4),
    ("cutout=8", "cutout", 8),
    ("fill=constant", "fill", "constant"), ("fill=reflect", "fill", "reflect"), ("fill=nearest", "fill", "nearest"),
    (" Rotate = 7.5 , ", "rotate", 7.5), ("FLIP=H", "flip", "h"),
])
def test_parse_sets_exactly_one_field(text: str, field: str, value: object) -> None:
    spec = parse_augment(text)
    assert getattr(spec, field) == value and type(getattr(spec, field)) is type(value)
    assert spec == AugmentSpec(**{field: value})  # type: ignore[arg-type]  # nothing else changed


def test_parse_presets_and_overrides() -> None:
    for name, preset in PRESETS.items():
        assert parse_augment(name) == preset and parse_augment(name.upper()) == preset
    assert parse_augment("") == parse_augment("none") == parse_augment(" , ") == AugmentSpec()
    assert parse_augment("") .is_off and not PRESETS["light"].is_off
    # seed 003's ImageDataGenerator: rotation_range=20, shifts 0.2, horizontal_flip, zoom_range=0.2, 'nearest'
    assert PRESETS["standard"] == AugmentSpec(rotate=20, shift=0.2, flip="h", zoom=0.2, shear=15, fill="nearest")
    assert PRESETS["light"].flip == "h" and PRESETS["light"].crop > 0
    assert "h" not in PRESETS["digits"].flip  # mirrored digits are different digits
    assert parse_augment("light,rotate=5,fill=reflect") == AugmentSpec(flip="h", crop=4, rotate=5, fill="reflect")


def test_spec_round_trips_through_text_and_json() -> None:
    specs = [*PRESETS.values(), AugmentSpec(rotate=12.5, shift=0.05, flip="v", brightness=0.1, contrast=0.3, crop=2)]
    for spec in specs:
        assert parse_augment(spec.to_text()) == spec
        assert AugmentSpec(**json.loads(json.dumps(asdict(spec)))) == spec


@pytest.mark.parametrize(("text", "fragments"), [
    ("rotat=20", ["unknown augmentation 'rotat'", "Did you mean 'rotate'", "Valid: rotate, shift, flip",
                  "presets: none, light, standard"]),
    ("colour=0.2", ["unknown augmentation 'colour'", "Valid: rotate"]),
    ("flip=x", ["flip='x'", "'h', 'v', 'hv'", "e.g. flip=h"]),
    ("fill=nearst", ["fill='nearst'", "Did you mean 'nearest'"]),
    ("rotate=abc", ["rotate='abc' is not a number", "0..180", "e.g. rotate=20"]),
    ("rotate=-5", ["rotate=-5.0", "0..180"]),
    ("rotate=nan", ["rotate=nan"]),
    ("zoom=0.6", ["zoom=0.6", "0..0.5"]),
    ("shift=1.5", ["shift=1.5", "[0, 1)"]),
    ("shear=60", ["shear=60.0", "0..45"]),
    ("brightness=2", ["brightness=2.0", "0..1"]),
    ("crop=2.5", ["crop='2.5' is not a whole number"]),
    ("crop=-1", ["crop=-1", "in 0..4096"]),
    ("cutout=2.5", ["cutout='2.5' is not a whole number", "e.g. cutout=8"]),
    ("cutout=-3", ["cutout=-3", "side of the square"]),
    ("strandard", ["unknown augmentation preset 'strandard'", "Did you mean 'standard'", "rotate=20"]),
    ("rotate", ["'rotate' needs a value", "rotate=20"]),
    ("rotate=10,rotate=20", ["'rotate' is given twice"]),
    ("rotate=10,light", ["'light' has no value", "preset name only first"]),
])
def test_parse_errors_name_the_value_and_the_fix(text: str, fragments: list[str]) -> None:
    with pytest.raises(CnnlabError) as error:
        parse_augment(text)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_spec_validates_direct_construction() -> None:
    for bad in ({"rotate": -1}, {"crop": True}, {"crop": 2.0}, {"cutout": 1.5}, {"flip": "x"}, {"fill": "wrap"},
                {"zoom": "0.2"}):
        with pytest.raises(CnnlabError):
            AugmentSpec(**bad)  # type: ignore[arg-type]
    with pytest.raises(CnnlabError, match="parse_augment"):
        Augmenter("rotate=20")  # type: ignore[arg-type]


# ---------------------------------------------------------------- randomness

def test_each_image_gets_its_own_transform_and_seeds_repeat() -> None:
    images = random_images(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()  # 8 identical images
    augment = Augmenter(AugmentSpec(rotate=30))
    torch.manual_seed(5)
    first = augment(images)
    distinct = {tuple(out.flatten().tolist()) for out in first}
    assert len(distinct) == 8  # a batch-wide draw would give 1
    torch.manual_seed(5)
    assert torch.equal(augment(images), first)
    copy = pickle.loads(pickle.dumps(augment))  # data-loader workers receive a pickled copy
    torch.manual_seed(5)
    assert torch.equal(copy(images), first)


# ---------------------------------------------------------------- shapes, dtypes, identity

def test_all_off_is_the_identity() -> None:
    images = random_images(4, 3, 8, 8)
    for spec in (AugmentSpec(), AugmentSpec(fill="constant"), parse_augment("none")):
        assert Augmenter(spec)(images) is images


KNOBS = ["rotate=30", "shift=0.3", "flip=h", "flip=v", "flip=hv", "zoom=0.3", "shear=30", "brightness=0.5",
         "contrast=0.5", "crop=3", "rotate=30,fill=constant", "rotate=30,fill=reflect", "crop=3,fill=reflect",
         "crop=3,fill=nearest", "cutout=5", "light,cutout=30", "standard", "light", "digits"]


@pytest.mark.parametrize("text", KNOBS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_knob_keeps_shape_and_dtype(text: str, channels: int) -> None:
    images = random_images(3, channels, 12, 20)  # not square, to catch height/width mix-ups
    for batch in (images, images.float() / 255):
        out = Augmenter(parse_augment(text))(batch)
        assert out.shape == batch.shape and out.dtype == batch.dtype
        assert 0 <= float(out.min()) and float(out.max()) <= (255 if batch.dtype == torch.uint8 else 1)


def test_bad_batches_are_rejected() -> None:
    augment = Augmenter(AugmentSpec(rotate=10))
    with pytest.raises(CnnlabError, match=r"\(N, C, H, W\).*image\[None\]"):
        augment(random_images(1, 3, 8, 8)[0])
    with pytest.raises(CnnlabError, match="int32"):
        augment(torch.zeros((1, 1, 8, 8), dtype=torch.int32))
    with pytest.raises(CnnlabError, match="brightness/contrast need 1 .* or 3"):
        Augmenter(AugmentSpec(contrast=0.2))(random_images(1, 4, 8, 8))


@pytest.mark.parametrize(("call", "fragment"), [
    (lambda x: random_flip(x, p=1.5), "p must be a probability in 0..1, got 1.5"),
    (lambda x: random_flip(x[0]), r"random_flip: images must be a \(N, C, H, W\) tensor"),
    (lambda x: random_crop(x, -1, "constant"), "pad must be a whole number of pixels >= 0, got -1"),
    (lambda x: random_crop(x, 2.5, "constant"), "got 2.5"),
    (lambda x: random_crop(x, 2, "reflct"), "mode='reflct' is invalid. Did you mean 'reflect'"),
    (lambda x: random_cutout(x, -2), "size must be a whole number of pixels >= 0, got -2"),
    (lambda x: random_cutout(x, True), "got True"),
])
def test_batched_helpers_reject_bad_arguments(call: Callable[[torch.Tensor], object], fragment: str) -> None:
    with pytest.raises(CnnlabError, match=fragment) as error:
        call(random_images(2, 1, 8, 8))
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- exact geometry

@pytest.mark.parametrize("flip", ["h", "v"])
def test_flip_mirrors_about_half_the_images(flip: str) -> None:
    image = torch.zeros((1, 1, 6, 6), dtype=torch.uint8)
    image[..., :, :3] = 255  # bright left half
    image[..., :3, :] //= 2  # and a darker top, so up-down flips are visible too
    mirror = image.flip(-1 if flip == "h" else -2)
    torch.manual_seed(0)
    outputs = Augmenter(AugmentSpec(flip=flip))(image.expand(200, -1, -1, -1).contiguous())
    flipped = [torch.equal(out, mirror[0]) for out in outputs]
    assert all(f or torch.equal(out, image[0]) for f, out in zip(flipped, outputs, strict=True))
    assert 0.3 <= sum(flipped) / 200 <= 0.7


def test_flip_hv_gives_all_four_mirror_images() -> None:
    image = random_images(1, 1, 5, 5)
    variants = [image[0], image[0].flip(-1), image[0].flip(-2), image[0].flip(-1, -2)]
    torch.manual_seed(0)
    outputs = Augmenter(AugmentSpec(flip="hv"))(image.expand(64, -1, -1, -1).contiguous())
    seen = [next(i for i, v in enumerate(variants) if torch.equal(out, v)) for out in outputs]
    assert set(seen) == {0, 1, 2, 3}


@pytest.mark.parametrize(("fill", "numpy_mode"),
                         [("constant", "constant"), ("nearest", "edge"), ("reflect", "symmetric")])
def test_crop_is_a_shift_of_at_most_crop_pixels(fill: str, numpy_mode: str) -> None:
    image = random_images(1, 3, 10, 12, low=1)  # no zeros in the image, so zero fill is visible
    candidates = shifted_copies(image[0], 4, numpy_mode)
    torch.manual_seed(0)
    outputs = Augmenter(AugmentSpec(crop=4, fill=fill))(image.expand(40, -1, -1, -1).contiguous())
    shifts = [find_shift(out, candidates) for out in outputs]
    assert None not in shifts
    assert len(set(shifts)) > 10  # many different shifts, not always the same crop


def test_shift_with_nearest_fill_is_a_whole_pixel_shift_of_the_original_size() -> None:
    # 0.25 of 16 pixels: at most 4. Shifts drawn relative to the padded image would reach further.
    image = random_images(1, 1, 16, 16)
    candidates = shifted_copies(image[0], 4, "edge")
    torch.manual_seed(0)
    outputs = Augmenter(AugmentSpec(shift=0.25, fill="nearest"))(image.expand(40, -1, -1, -1).contiguous())
    shifts = [find_shift(out, candidates) for out in outputs]
    found = [shift for shift in shifts if shift is not None]
    assert len(found) == len(shifts)
    assert max(abs(dx) for _, dx in found) >= 3 and max(abs(dy) for dy, _ in found) >= 3


def test_nearest_and_reflect_fill_leave_no_empty_pixels_but_constant_does() -> None:
    white = torch.full((16, 3, 20, 20), 255, dtype=torch.uint8)
    torch.manual_seed(0)
    assert int(Augmenter(AugmentSpec(rotate=45, fill="constant"))(white).min()) == 0
    # the strongest settings allowed together: the padding must cover every pixel the affine can reach
    extreme = "rotate=45,shift=0.3,zoom=0.5,shear=45"
    for fill in ("nearest", "reflect"):
        out = Augmenter(parse_augment(f"{extreme},fill={fill}"))(white)
        assert int(out.min()) == 255


def keras_warp(channel: np.ndarray, angle: float, shift: tuple[float, float], scale: float, shear: float,
               mode: str) -> np.ndarray:
    """Keras's own warp (scipy.ndimage.affine_transform, bilinear) of one (H, W) channel by the transform `_warp`
    documents: shear along x, scale, clockwise turn, then a (dx, dy) shift, about the image centre."""
    height, width = channel.shape
    turn, slant = np.deg2rad(angle), np.tan(np.deg2rad(shear))
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    forward_xy = rotation @ np.array([[1, slant], [0, 1]])
    forward = forward_xy[::-1, ::-1] * scale  # scipy indexes (row, column) = (y, x)
    inverse = np.linalg.inv(forward)
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    offset = centre - inverse @ (centre + np.array(shift[::-1]))  # input = inverse (output - centre - shift) + centre
    return ndimage.affine_transform(channel, inverse, offset, order=1, mode=mode, cval=0.0)


# scipy's 'grid-constant' is zero padding with interpolation up to the edge; Keras's 'constant' (scipy 'constant')
# differs on a one-pixel rim, as augment.py's _GRID_PADDING comment says.
@pytest.mark.parametrize(("fill", "scipy_mode"), [("nearest", "nearest"), ("reflect", "reflect"),
                                                   ("constant", "grid-constant")])
def test_affine_warp_matches_the_warp_keras_uses(fill: str, scipy_mode: str) -> None:
    images = torch.rand((4, 2, 12, 17), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # (degrees, (dx, dy) pixels, scale, shear degrees); the third samples more than an image width away
    params = [(30.0, (2.0, -3.0), 0.7, 20.0), (-170.0, (0.0, 0.0), 1.3, -40.0), (45.0, (-9.0, 6.0), 0.5, 45.0),
              (0.0, (5.0, 1.0), 1.0, 0.0)]
    angle, shift, scale, shear = (torch.tensor(column, dtype=torch.float64) for column in zip(*params, strict=True))
    out = _warp(images, angle, shift, scale, shear, fill)
    for i, (degrees, pixels, zoom, slant) in enumerate(params):
        for c in range(2):
            expected = keras_warp(images[i, c].numpy(), degrees, pixels, zoom, slant, scipy_mode)
            np.testing.assert_allclose(out[i, c].numpy(), expected, atol=1e-10)


def test_warp_turns_clockwise_and_shifts_whole_pixels_exactly() -> None:
    image = random_images(1, 1, 9, 9).float()
    zero, one, still = torch.zeros(1), torch.ones(1), torch.zeros(1, 2)
    turned = _warp(image, torch.tensor([90.0]), still, one, zero, "constant")
    assert torch.equal(turned.round(), torch.rot90(image, -1, dims=(2, 3)))  # k=-1: clockwise as displayed
    moved = _warp(image, zero, torch.tensor([[2.0, -1.0]]), one, zero, "constant")  # 2 right, 1 up
    assert torch.equal(moved.round()[..., :-1, 2:], image[..., 1:, :-2])


def test_zero_draws_leave_images_unchanged() -> None:
    images = random_images(8, 3, 16, 16)
    # 0.01 of 16 pixels rounds to a 0-pixel shift for every image: the whole affine path with identity matrices
    torch.manual_seed(0)
    assert torch.equal(Augmenter(AugmentSpec(shift=0.01))(images), images)
    floats = images.float() / 255
    zero, still, one = torch.zeros(8), torch.zeros(8, 2), torch.ones(8)
    for fill in FILLS:
        assert torch.allclose(_warp(floats, zero, still, one, zero, fill), floats, atol=1e-6)
    for images_ in (images, floats):
        assert torch.equal(random_crop(images_, 0, "reflect"), images_)
        assert torch.equal(random_flip(images_, p=0.0), images_)


def test_random_flip_mirrors_exactly_the_images_it_selects() -> None:
    images = random_images(400, 2, 5, 7)  # all different and none its own mirror image
    torch.manual_seed(0)
    out = random_flip(images, p=0.3)
    flipped = torch.tensor([torch.equal(result, image.flip(-1)) for image, result in zip(images, out, strict=True)])
    kept = torch.tensor([torch.equal(result, image) for image, result in zip(images, out, strict=True)])
    assert bool((flipped ^ kept).all())  # every image is exactly itself or exactly its mirror
    assert 0.24 <= float(flipped.float().mean()) <= 0.36  # p = 0.3, +-3 standard deviations of 400 draws


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_cutout_zeroes_one_square_per_image_and_keeps_the_rest(dtype: torch.dtype) -> None:
    size, height, width = 4, 9, 11
    images = random_images(500, 3, height, width).clamp(min=1).to(dtype)  # no pixel is 0 before
    torch.manual_seed(0)
    out = random_cutout(images, size)
    assert out.dtype == dtype and torch.equal(random_cutout(images, 0), images)
    corners = set()
    for image, result in zip(images, out, strict=True):
        erased = result == 0
        assert torch.equal(erased[0], erased[1]) and torch.equal(erased[0], erased[2])  # all channels alike
        assert torch.equal(result[~erased], image[~erased])  # everything else untouched
        ys, xs = erased[0].nonzero(as_tuple=True)
        assert len(ys) > 0  # the centre is always inside the image, so something is erased
        # a solid rectangle, the size x size square clipped by the image edges
        top, left, bottom, right = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
        assert int(erased[0].sum()) == (bottom - top) * (right - left)
        assert bottom - top == size or top == 0 or bottom == height
        assert right - left == size or left == 0 or right == width
        corners.add((top, left))
    # centre row c uniform in 0..H-1 puts the square's first row at c - size // 2, clipped at 0: all occur
    assert {t for t, _ in corners} == {max(c - size // 2, 0) for c in range(height)}
    assert {x for _, x in corners} == {max(c - size // 2, 0) for c in range(width)}


@pytest.mark.parametrize("mode", FILLS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_is_an_exact_whole_pixel_shift_within_pad(mode: str, dtype: torch.dtype) -> None:
    pad = 3
    images = random_images(64, 2, 10, 12).to(dtype)
    torch.manual_seed(0)
    out = random_crop(images, pad, mode)
    assert out.dtype == dtype
    inner = (slice(None), slice(pad, -pad), slice(pad, -pad))  # pixels that no offset of <= pad brings in from outside
    offsets = []
    for image, result in zip(images, out, strict=True):
        # output pixel (y, x) is input pixel (y + dy, x + dx): torch.roll by (-dy, -dx), exact on the interior
        matches = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   if torch.equal(result[inner], torch.roll(image, (-dy, -dx), dims=(1, 2))[inner])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 20  # of the 49 possible offsets
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(-pad, pad + 1))


def test_crop_with_reflect_fill_tiles_mirror_images_beyond_the_image_side() -> None:
    image = random_images(1, 1, 8, 8)
    candidates = shifted_copies(image[0], 9, "symmetric")  # 9 pixels of padding on an 8x8 image: two mirror images
    torch.manual_seed(0)
    outputs = Augmenter(parse_augment("crop=9,fill=reflect"))(image.expand(40, -1, -1, -1).contiguous())
    shifts = [find_shift(out, candidates) for out in outputs]
    found = [shift for shift in shifts if shift is not None]
    assert len(found) == len(shifts)
    assert max(max(abs(dy), abs(dx)) for dy, dx in found) == 9  # further than one image side


# ---------------------------------------------------------------- batched: independence, devices, work per batch

@pytest.mark.parametrize(("text", "at_least"), [
    ("shift=0.3", 16), ("crop=3", 16), ("flip=h", 2), ("flip=hv", 4), ("zoom=0.3", 30), ("shear=30", 30),
    ("brightness=0.5", 30), ("contrast=0.5", 30),
])
def test_identical_images_get_their_own_random_changes(text: str, at_least: int) -> None:
    images = random_images(1, 3, 16, 16).expand(32, -1, -1, -1).contiguous()  # 32 identical images
    torch.manual_seed(1)
    distinct = {tuple(out.flatten().tolist()) for out in Augmenter(parse_augment(text))(images)}
    assert len(distinct) >= at_least  # one draw for the whole batch would give 1


def test_uint8_is_computed_in_float_and_rounded() -> None:
    images = random_images(16, 3, 12, 12)
    augment = Augmenter(parse_augment("standard,brightness=0.3,contrast=0.3"))
    torch.manual_seed(3)
    as_uint8 = augment(images)
    torch.manual_seed(3)
    as_float = augment(images.float() / 255)  # the same draws on [0, 1] images
    assert as_uint8.dtype == torch.uint8 and as_float.dtype == torch.float32
    assert 0 <= float(as_float.min()) and float(as_float.max()) <= 1
    assert float((as_uint8.float() - as_float * 255).abs().max()) <= 0.5 + 1e-3  # rounded, not truncated


# 'meta' tensors have no data and refuse to mix with CPU tensors: a step that made its random numbers or
# constants on the CPU instead of the batch's device fails there, even on a machine without a GPU.
DEVICES = ["cpu", "meta", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("text", ["standard,brightness=0.2,contrast=0.2", "light", "crop=3,fill=reflect,flip=hv",
                                  "digits", "crop=2,fill=nearest,contrast=0.5"])
def test_runs_on_the_batch_device(device: str, text: str) -> None:
    images = torch.zeros((4, 3, 12, 12), dtype=torch.uint8, device=device)
    for batch in (images, images.float()):
        out = Augmenter(parse_augment(text))(batch)
        assert out.device == batch.device and out.dtype == batch.dtype and out.shape == batch.shape
    assert random_flip(images).device == random_crop(images, 2, "reflect").device == images.device


class TorchCallCounter(TorchFunctionMode):
    """Counts the calls into torch (functions and tensor methods) made inside its `with` block."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Callable[..., Any], types: object, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("text", KNOBS)
def test_work_per_batch_does_not_grow_with_the_batch(text: str) -> None:
    # No Python loop over images: a batch of 64 makes exactly as many calls into torch as a batch of 2.
    augment = Augmenter(parse_augment(text))
    calls = []
    for n in (2, 64):
        with TorchCallCounter() as counter:
            augment(random_images(n, 3, 12, 20))
        calls.append(counter.calls)
    assert calls[0] == calls[1] > 0


def test_one_grid_sample_call_warps_the_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.nn.functional.grid_sample
    shapes = []

    def counting(images: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        shapes.append(tuple(images.shape))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", counting)
    images = random_images(256, 1, 28, 28)
    Augmenter(PRESETS["standard"])(images)
    assert shapes == [(256, 1, 28, 28)]
    shapes.clear()
    Augmenter(parse_augment("light,brightness=0.2"))(images)
    assert shapes == []  # whole-pixel crops and flips never interpolate


# ---------------------------------------------------------------- colour

def test_brightness_scales_each_image_by_one_factor_in_range() -> None:
    grey = torch.full((64, 3, 6, 6), 100, dtype=torch.uint8)
    torch.manual_seed(0)
    out = Augmenter(AugmentSpec(brightness=0.3))(grey).float()
    per_image = out.flatten(1)
    assert torch.equal(per_image.min(1).values, per_image.max(1).values)  # one factor for the whole image
    values = per_image[:, 0]
    assert 70 <= float(values.min()) and float(values.max()) <= 130
    assert float(values.min()) < 85 and float(values.max()) > 115  # the range is actually used


def test_contrast_scales_spread_about_the_mean_in_range_for_one_channel() -> None:
    image = torch.full((1, 1, 8, 8), 50, dtype=torch.uint8)
    image[..., 4:, :] = 150  # mean 100, std 50
    torch.manual_seed(0)
    out = Augmenter(AugmentSpec(contrast=0.5))(image.expand(64, -1, -1, -1).contiguous()).float()
    ratio = out.flatten(1).std(1, unbiased=False) / 50
    assert float(ratio.min()) >= 0.5 - 0.02 and float(ratio.max()) <= 1.5 + 0.02
    assert float(ratio.min()) < 0.8 and float(ratio.max()) > 1.2
    assert torch.allclose(out.flatten(1).mean(1), torch.full((64,), 100.0), atol=1.0)


# ---------------------------------------------------------------- pictures

def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_image_grid_size_colours_and_grey_colormap(tmp_path: Path) -> None:
    colour = plot_image_grid(random_images(7, 3, 28, 28), [f"#{i}" for i in range(7)], tmp_path / "c.png", columns=4)
    pixels = read_png(colour)
    assert pixels.shape == (460, 800, 3)  # 2 rows x 4 columns of 200-pixel (2-inch) cells, 30 pixels for titles
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
    grey = read_png(plot_image_grid(random_images(3, 1, 28, 28), None, tmp_path / "g.png"))
    assert grey.shape == (200, 600, 3)  # 3 images: 3 columns, not 5
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()  # no colour: grey cmap
    assert len(np.unique(grey)) > 50
    wide = read_png(plot_image_grid(random_images(2, 3, 10, 40), None, tmp_path / "w.png"))
    assert wide.shape == (50, 400, 3)  # cells follow the images' 1:4 shape


def test_image_grid_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="one string per image"):
        plot_image_grid(random_images(3, 1, 8, 8), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(CnnlabError, match="columns"):
        plot_image_grid(random_images(3, 1, 8, 8), None, tmp_path / "x.png", columns=0)
    with pytest.raises(CnnlabError, match=r"\(N, C, H, W\)"):
        plot_image_grid(random_images(1, 1, 8, 8)[0], None, tmp_path / "x.png")


def test_augment_preview_draws_original_plus_n_and_is_seeded(tmp_path: Path) -> None:
    image = random_images(1, 3, 24, 24)[0]
    augment = Augmenter(PRESETS["standard"])
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = augment_preview(image, augment, 9, tmp_path / "a.png", seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is untouched
    assert read_png(first).shape == (460, 1000, 3)  # 1 + 9 panels in 5 columns: 2 rows
    assert read_png(augment_preview(image, augment, 3, tmp_path / "b.png")).shape == (230, 800, 3)  # 4 panels
    again = augment_preview(image, augment, 9, tmp_path / "c.png", seed=1)
    other = augment_preview(image, augment, 9, tmp_path / "d.png", seed=2)
    assert np.array_equal(read_png(first), read_png(again))
    assert not np.array_equal(read_png(first), read_png(other))


@pytest.mark.parametrize("text", ["crop=100000", "cutout=100000", "crop=4097"])
def test_pixel_counts_are_bounded_by_the_largest_image_side(text):
    # crop=100000 padded every image by 100000 pixels a side before cropping: gigabytes per image
    with pytest.raises(CnnlabError, match=r"in 0\.\.4096"):
        parse_augment(text)
    assert parse_augment(text.split("=")[0] + "=4096").to_text() == text.split("=")[0] + "=4096"

"""Contracts of cnnlab.data.augment and cnnlab.viz.grids: exact pixels where the result is known, ranges otherwise.

Shifts and crops are checked against numpy's own padding (np.pad 'constant', 'edge', 'symmetric' are
Keras's 'constant', 'nearest', 'reflect'), flips against exact mirrors, colour changes against the
stated factor ranges, and randomness against the per-sample and reproducibility promises.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.augment import PRESETS, Augmenter, AugmentSpec, parse_augment
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
    ("crop=-1", ["crop=-1", ">= 0"]),
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
    for bad in ({"rotate": -1}, {"crop": True}, {"crop": 2.0}, {"flip": "x"}, {"fill": "wrap"}, {"zoom": "0.2"}):
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
         "crop=3,fill=nearest", "standard", "light", "digits"]


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
    with pytest.raises(CnnlabError, match="crop=9 with fill=reflect"):
        Augmenter(parse_augment("crop=9,fill=reflect"))(random_images(1, 1, 8, 8))


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


@pytest.mark.parametrize(("text", "height", "width"), [
    ("rotate=45,shift=0.3,zoom=0.5,shear=45", 20, 20), ("standard", 28, 28), ("standard", 12, 40),
    ("rotate=180,fill=reflect", 10, 30), ("shear=45,zoom=0.5", 16, 16),
])
def test_fill_padding_covers_every_pixel_the_affine_can_reach(text: str, height: int, width: int) -> None:
    # Random draws rarely hit the extremes together, so check them all: for every extreme angle, scale,
    # shear and shift, the corners of the output must sample inside the padded image. torchvision's own
    # inverse matrix is the ground truth of where RandomAffine samples (coordinates about the centre).
    from torchvision.transforms import v2
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    from cnnlab.data.augment import _affine_steps

    spec = parse_augment(text)
    padded_h, padded_w = v2.Compose(_affine_steps(spec, height, width)[:-2])(torch.zeros(1, height, width)).shape[1:]
    shift_x, shift_y = -(-spec.shift * width // 1), -(-spec.shift * height // 1)  # ceil: shifts are whole pixels
    corners = np.array([[x, y, 1.0] for x in (-(width - 1) / 2, (width - 1) / 2)
                        for y in (-(height - 1) / 2, (height - 1) / 2)])
    reach_x = reach_y = 0.0
    for angle in np.linspace(-spec.rotate, spec.rotate, 73):
        for scale in (1 - spec.zoom, 1 + spec.zoom):
            for shear in (-spec.shear, 0.0, spec.shear):
                for dx in (-shift_x, 0, shift_x):
                    for dy in (-shift_y, 0, shift_y):
                        inverse = _get_inverse_affine_matrix([0.0, 0.0], float(angle), [dx, dy], scale, [shear, 0.0])
                        sampled = corners @ np.array(inverse).reshape(2, 3).T  # (4, 2) input points
                        reach_x = max(reach_x, float(np.abs(sampled[:, 0]).max()))
                        reach_y = max(reach_y, float(np.abs(sampled[:, 1]).max()))
    assert reach_x <= (padded_w - 1) / 2 and reach_y <= (padded_h - 1) / 2


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

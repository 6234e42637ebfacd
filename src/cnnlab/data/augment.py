"""Data augmentation: random flips, shifts, rotations, zooms, shears, crops and colour changes per image.

The knobs are those of Keras's `ImageDataGenerator` (seed 003), in the same units, so
`rotation_range=20, width_shift_range=0.2, zoom_range=0.2` becomes `rotate=20,shift=0.2,zoom=0.2`.
Every image in a batch gets its own random transform, drawn from torch's global RNG, so
`torch.manual_seed` makes a run repeatable. uint8 (N, C, H, W) batches stay uint8.

>>> augment = Augmenter(parse_augment("rotate=20,shift=0.1,flip=h"))
>>> augment(torch.zeros((8, 1, 28, 28), dtype=torch.uint8)).shape
torch.Size([8, 1, 28, 28])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torchvision.transforms import v2

from cnnlab.errors import CnnlabError, did_you_mean

__all__ = ["AugmentSpec", "PRESETS", "parse_augment", "Augmenter", "FLIPS", "FILLS"]

FLIPS = ("", "h", "v", "hv")
FILLS = ("nearest", "constant", "reflect")

# Keras's fill modes as torchvision padding modes. Keras 'reflect' is abcddcba|abcd|dcbaabcd (the
# edge pixel repeats), which torchvision calls "symmetric"; torchvision's "reflect" skips the edge.
_PAD_MODES = {"nearest": "edge", "constant": "constant", "reflect": "symmetric"}

# knob: (largest value, whether that value itself is allowed, what the number means)
_RANGES: dict[str, tuple[float, bool, str]] = {
    "rotate": (180.0, True, "max degrees in 0..180"),
    "shift": (1.0, False, "a fraction of width and height in [0, 1)"),
    # Scale 0.5 already halves the image; nearest/reflect fills pad by a factor 1 / (1 - zoom), which explodes near 1.
    "zoom": (0.5, True, "a fraction in 0..0.5 (scale drawn from [1 - zoom, 1 + zoom])"),
    # 45 degrees already slants a square into a rhombus; more destroys the image and needs huge padding.
    "shear": (45.0, True, "max degrees in 0..45"),
    # Up to 1 so that the factor range [1 - b, 1 + b] never goes below 0.
    "brightness": (1.0, True, "a fraction in 0..1 (factor drawn from [1 - b, 1 + b])"),
    "contrast": (1.0, True, "a fraction in 0..1 (factor drawn from [1 - c, 1 + c])"),
    "crop": (math.inf, False, "a whole number of padding pixels >= 0"),
}
_EXAMPLES = {"rotate": "20", "shift": "0.1", "zoom": "0.2", "shear": "15", "brightness": "0.2",
             "contrast": "0.2", "crop": "4", "flip": "h", "fill": "nearest"}


def _check_number(name: str, value: object) -> None:
    highest, inclusive, meaning = _RANGES[name]
    wanted = int if name == "crop" else (int, float)
    in_range = (isinstance(value, wanted) and not isinstance(value, bool)
                and 0 <= value and (value <= highest if inclusive else value < highest))  # type: ignore[operator]
    if not in_range:
        raise CnnlabError(f"augmentation {name}={value!r} is invalid; expected {meaning}, "
                          f"e.g. {name}={_EXAMPLES[name]}")


@dataclass(frozen=True)
class AugmentSpec:
    """What random changes to make to each training image; every default is off.

    Saved in a run's config.json with `dataclasses.asdict(spec)`, restored with `AugmentSpec(**d)`.

    >>> from dataclasses import asdict
    >>> spec = AugmentSpec(rotate=20, flip="h")
    >>> AugmentSpec(**asdict(spec)) == spec, spec.to_text(), AugmentSpec().is_off
    (True, 'rotate=20,flip=h', True)
    """

    rotate: float = 0.0      # max degrees; angle uniform in [-rotate, rotate] (Keras rotation_range)
    shift: float = 0.0       # max fraction of width (x) and of height (y) (Keras width/height_shift_range)
    flip: str = ""           # "", "h" (left-right), "v" (up-down) or "hv"; each with probability 0.5
    zoom: float = 0.0        # scale uniform in [1 - zoom, 1 + zoom], same on both axes (Keras zoom_range)
    shear: float = 0.0       # max degrees of shear along x (Keras shear_range, also in degrees)
    brightness: float = 0.0  # pixel factor uniform in [1 - b, 1 + b] (Keras brightness_range=[1-b, 1+b])
    contrast: float = 0.0    # factor uniform in [1 - c, 1 + c]: pixels move away from / towards the mean grey
    crop: int = 0            # pad this many pixels per side, crop back to H x W at random (CIFAR recipe: 4)
    fill: str = "nearest"    # new pixels: "nearest" edge pixel (Keras default), "constant" 0, "reflect"

    def __post_init__(self) -> None:
        for name in _RANGES:
            _check_number(name, getattr(self, name))
        for name, choices in (("flip", FLIPS), ("fill", FILLS)):
            value = getattr(self, name)
            if value not in choices:
                close = did_you_mean(value, choices) if isinstance(value, str) else ""
                raise CnnlabError(f"augmentation {name}={value!r} is invalid.{close} Expected one of "
                                  f"{', '.join(map(repr, choices))}, e.g. {name}={_EXAMPLES[name]}")

    @property
    def is_off(self) -> bool:
        """True when no knob is set (`fill` alone changes nothing), so augmenting is the identity."""
        return replace(self, fill="nearest") == AugmentSpec()

    def to_text(self) -> str:
        """The settings that differ from the defaults in `parse_augment`'s syntax; 'none' when all are off.

        >>> PRESETS["standard"].to_text()
        'rotate=20,shift=0.2,flip=h,zoom=0.2,shear=15'
        """
        if self.is_off:
            return "none"
        parts = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value != field.default:
                parts.append(f"{field.name}={value:g}" if field.name in _RANGES else f"{field.name}={value}")
        return ",".join(parts)


PRESETS: dict[str, AugmentSpec] = {
    "none": AugmentSpec(),
    # The CIFAR-10 recipe of the ResNet paper (He et al. 2015, sec. 4.2): 4 zero pixels of padding per
    # side, a random crop back to 32x32, and a horizontal flip half the time.
    "light": AugmentSpec(flip="h", crop=4, fill="constant"),
    # Seed 003's ImageDataGenerator (rotation 20, shifts 0.2, horizontal flip, zoom 0.2, fill 'nearest').
    # Its shear_range=0.15 is in degrees in tf.keras (keras_preprocessing 1.1 docs), i.e. invisible; 15 was meant.
    "standard": AugmentSpec(rotate=20, shift=0.2, flip="h", zoom=0.2, shear=15, fill="nearest"),
    # Digits must not be flipped (a mirrored 2 is no 2); small rotations, shifts and zooms are the usual
    # MNIST choice. Zero fill matches the black background exactly.
    "digits": AugmentSpec(rotate=10, shift=0.1, zoom=0.1, fill="constant"),
}


def parse_augment(text: str) -> AugmentSpec:
    """Read 'rotate=20,shift=0.2,flip=h', a preset name, or a preset followed by changes ('light,rotate=5').

    '' and 'none' turn everything off. Unknown keys, bad values and unknown presets raise CnnlabError.

    >>> spec = parse_augment("rotate=20,flip=h,zoom=0.2")
    >>> spec.rotate, spec.flip, spec.zoom, spec.fill
    (20.0, 'h', 0.2, 'nearest')
    >>> parse_augment("light,fill=reflect").to_text()
    'flip=h,crop=4,fill=reflect'
    >>> parse_augment("rotat=20")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: unknown augmentation 'rotat'. Did you mean 'rotate'... Valid: rotate, shift, ...
    """
    if not isinstance(text, str):
        raise CnnlabError(f"augmentation must be text like 'rotate=20,flip=h' or a preset name, "
                          f"got {type(text).__name__} {text!r}")
    items = [item.strip() for item in text.split(",") if item.strip()]
    base = AugmentSpec()
    if items and "=" not in items[0]:
        base = _preset(items.pop(0))
    changes: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise CnnlabError(f"augmentation item {item!r} has no value; write key=value (e.g. "
                              f"rotate=20), with a preset name only first (e.g. 'light,rotate=5')")
        key, _, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if key not in _EXAMPLES:
            valid = ", ".join(f.name for f in fields(AugmentSpec))
            raise CnnlabError(f"unknown augmentation {key!r}.{did_you_mean(key, _EXAMPLES)} "
                              f"Valid: {valid}; presets: {', '.join(PRESETS)}")
        if key in changes:
            raise CnnlabError(f"augmentation {key!r} is given twice in {text!r}; give each setting once")
        changes[key] = _parse_value(key, value)
    return replace(base, **changes)  # type: ignore[arg-type]  # values were converted per field above


class Augmenter:
    """Applies an `AugmentSpec` to (N, C, H, W) batches, with an independent random transform per image.

    uint8 stays uint8; float images are taken to be in [0, 1] (torchvision's convention). The
    transforms run on the batch's device, one image at a time: torchvision's v2 transforms draw
    ONE set of random parameters per call, so calling them on the whole batch would move every
    image the same way.

    >>> images = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    >>> _ = torch.manual_seed(0)
    >>> out = Augmenter(PRESETS["light"])(images)
    >>> out.shape, out.dtype, int(out.max())
    (torch.Size([4, 3, 32, 32]), torch.uint8, 200)
    >>> Augmenter(AugmentSpec())(images) is images   # all off: the very same tensor, no work
    True
    """

    def __init__(self, spec: AugmentSpec) -> None:
        if not isinstance(spec, AugmentSpec):
            raise CnnlabError(f"Augmenter needs an AugmentSpec, got {type(spec).__name__} {spec!r}; "
                              f"build one with parse_augment('rotate=20,flip=h') or AugmentSpec(...)")
        self.spec = spec
        self._pipelines: dict[tuple[int, int], v2.Compose] = {}  # one per image size (H, W)

    def __repr__(self) -> str:
        return f"Augmenter({self.spec.to_text()!r})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        _check_batch(images, self.spec)
        if self.spec.is_off:
            return images
        height, width = int(images.shape[2]), int(images.shape[3])
        pipeline = self._pipelines.get((height, width))
        if pipeline is None:
            pipeline = self._pipelines[(height, width)] = _build_pipeline(self.spec, height, width)
        out = torch.empty_like(images)
        for i in range(images.shape[0]):
            out[i] = pipeline(images[i])  # (C, H, W) -> (C, H, W), fresh random parameters each time
        return out


def _preset(name: str) -> AugmentSpec:
    key = name.lower()
    if key in PRESETS:
        return PRESETS[key]
    if key in _EXAMPLES:
        raise CnnlabError(f"augmentation {key!r} needs a value: write {key}={_EXAMPLES[key]}")
    raise CnnlabError(f"unknown augmentation preset {name!r}.{did_you_mean(key, PRESETS)} Presets: "
                      f"{', '.join(PRESETS)}; or give settings such as 'rotate=20,shift=0.1,flip=h'")


def _parse_value(key: str, text: str) -> object:
    if key in ("flip", "fill"):
        return text.lower()  # AugmentSpec checks the choice
    kind, example = ("whole number", "4") if key == "crop" else ("number", _EXAMPLES[key])
    try:
        return int(text) if key == "crop" else float(text)
    except ValueError:
        raise CnnlabError(f"augmentation {key}={text!r} is not a {kind}; expected {_RANGES[key][2]}, "
                          f"e.g. {key}={example}") from None


def _check_batch(images: torch.Tensor, spec: AugmentSpec) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"Augmenter: images must be a (N, C, H, W) tensor, got {shape}; "
                          f"add a batch dimension with image[None]")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise CnnlabError(f"Augmenter: images must be uint8 (0..255) or float (0..1), got {images.dtype}; "
                          f"build datasets with ArrayDataset.from_arrays, which converts other dtypes")
    channels, height, width = images.shape[1:]
    if (spec.brightness or spec.contrast) and channels not in (1, 3):
        raise CnnlabError(f"Augmenter: brightness/contrast need 1 (gray) or 3 (RGB) channels, got {channels}; "
                          f"drop the alpha channel first")
    if spec.crop and spec.fill == "reflect" and spec.crop > min(height, width):
        raise CnnlabError(f"augmentation crop={spec.crop} with fill=reflect needs crop <= the image side "
                          f"({height}x{width}); use a smaller crop or fill=nearest")


def _build_pipeline(spec: AugmentSpec, height: int, width: int) -> v2.Compose:
    steps: list[v2.Transform] = []
    if spec.rotate or spec.shift or spec.zoom or spec.shear:
        steps += _affine_steps(spec, height, width)
    if spec.crop:
        steps.append(v2.RandomCrop((height, width), padding=spec.crop, fill=0, padding_mode=_PAD_MODES[spec.fill]))
    if "h" in spec.flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if "v" in spec.flip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    if spec.brightness or spec.contrast:
        steps.append(v2.ColorJitter(brightness=spec.brightness, contrast=spec.contrast))
    return v2.Compose(steps)


def _affine_steps(spec: AugmentSpec, height: int, width: int) -> list[v2.Transform]:
    # RandomAffine fills the pixels that come from outside the image with a constant. Keras's
    # 'nearest' and 'reflect' fills are made by padding first (edge copies or mirror images) by
    # enough pixels that no output pixel can map outside the padded image, transforming, and
    # cutting the centre H x W back out: inside the padding, "outside" already has the right values.
    # Bilinear, like Keras (scipy order=1); torchvision's default, nearest, makes rotated edges jagged.
    if spec.fill == "constant":
        return [v2.RandomAffine(degrees=spec.rotate, translate=(spec.shift, spec.shift) if spec.shift else None,
                                scale=(1 - spec.zoom, 1 + spec.zoom) if spec.zoom else None,
                                shear=spec.shear or None, interpolation=v2.InterpolationMode.BILINEAR, fill=0)]
    reach = _affine_reach(spec, height, width)
    pad_y, pad_x = math.ceil(reach - height / 2) + 1, math.ceil(reach - width / 2) + 1
    padded_h, padded_w = height + 2 * pad_y, width + 2 * pad_x
    # RandomAffine draws shifts as a fraction of the size it sees: rescale so they stay a fraction of H x W.
    translate = (spec.shift * width / padded_w, spec.shift * height / padded_h) if spec.shift else None
    return [*_pad_steps(pad_y, pad_x, height, width, _PAD_MODES[spec.fill]),
            v2.RandomAffine(degrees=spec.rotate, translate=translate,
                            scale=(1 - spec.zoom, 1 + spec.zoom) if spec.zoom else None,
                            shear=spec.shear or None, interpolation=v2.InterpolationMode.BILINEAR),
            v2.CenterCrop((height, width))]


def _affine_reach(spec: AugmentSpec, height: int, width: int) -> float:
    """Largest distance from the centre at which any output pixel samples the input, over all parameters.

    An output pixel p samples the input at A^-1 (p - t) about the centre, with A = rotation @ shear @ scale
    and t the shift, so its distance is at most |A^-1| (|p| + |t|): rotation keeps lengths, 1 / scale is
    at most 1 / (1 - zoom), and the x-shear matrix [[1, tan s], [0, 1]] stretches by (tan s + sqrt(tan s^2 + 4)) / 2.
    """
    tan_shear = math.tan(math.radians(spec.shear))
    stretch = (tan_shear + math.sqrt(tan_shear ** 2 + 4)) / 2 / (1 - spec.zoom)
    corner = math.hypot(height, width) / 2
    shift = math.hypot(math.ceil(spec.shift * width), math.ceil(spec.shift * height))  # shifts are whole pixels
    return stretch * (corner + shift)


def _pad_steps(pad_y: int, pad_x: int, height: int, width: int, mode: str) -> list[v2.Transform]:
    """v2.Pad steps adding pad_y / pad_x pixels per side: mirror modes can add at most the image's size per step.

    Each full step ends on a mirror line, so the steps together tile the plane with mirror images as
    one large mirror padding would.
    """
    if mode in ("edge", "constant"):
        return [v2.Pad([pad_x, pad_y], padding_mode=mode)]
    steps: list[v2.Transform] = []
    while pad_y > 0 or pad_x > 0:
        step_y, step_x = min(pad_y, height), min(pad_x, width)
        steps.append(v2.Pad([step_x, step_y], padding_mode=mode))
        pad_y, pad_x = pad_y - step_y, pad_x - step_x
        height, width = height + 2 * step_y, width + 2 * step_x
    return steps

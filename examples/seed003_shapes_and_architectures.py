"""Seed 003: trace shapes through a CNN layer by layer, then compare the famous architectures.

Part 1 builds the seed's shape-tracing CNN with cnnlab's Keras-style layers, prints the seed's table
(layer, output shape, parameters) and checks every shape against the seed's hand-worked comments
((28-3+1) = 26, 26 // 2 = 13, ...), then trains it on real Fashion-MNIST and checks the test accuracy.

Part 2 is the seed's "compare three popular pre-trained models" table: VGG16, ResNet50 and MobileNetV2
without their classification heads at 224x224x3 (Keras's include_top=False), with layer counts,
parameter counts and output shapes, and the feature shape each gives for one image. The parameter
counts are checked against the numbers Keras prints for the same networks:
  VGG16 14,714,688 (equal); MobileNetV2 2,257,984 (equal once BatchNorm's moving mean and variance,
  which Keras counts as non-trainable parameters and PyTorch keeps as buffers, are added);
  ResNet50 23,587,712 = ours + BatchNorm statistics + 26,560 convolution biases (Keras's ResNet50
  gives every convolution a bias that the BatchNorm after it cancels; torchvision's has none).
LeNet-5 and AlexNet from cnnlab's registry are listed with them.

    CNNLAB_DATA=../shared/datasets python examples/seed003_shapes_and_architectures.py [--epochs 5] [--small]

The same with the CLI:
    cnnlab summary seed-shapes
    cnnlab summary vgg16 --input-shape 224 224 3
    cnnlab train --dataset fashion-mnist --model seed-shapes --epochs 5 --data-dir ../shared/datasets

`--small` trains on 600 images and tests on 600 (seconds, for CI). Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import cnnlab
from cnnlab import Conv2D, Dense, Flatten, MaxPooling2D, Sequential
from cnnlab.models.summary import count_parameters
from cnnlab.models.transfer import transfer_model

# The seed's comments, one per layer: (28-3+1) x (28-3+1) x 16 = 26x26x16, then 26//2 = 13, ...
SEED_SHAPES = [(26, 26, 16), (13, 13, 16), (11, 11, 32), (5, 5, 32), (3, 3, 64), (576,), (128,), (10,)]
SEED_PARAMETERS = 98_442
# Keras's model.count_params() for include_top=False at 224x224x3 (tf.keras.applications), and
# what differs in torchvision's definitions of the same networks (see the module docstring).
KERAS_NO_TOP = {"vgg16": 14_714_688, "resnet50": 23_587_712, "mobilenet_v2": 2_257_984}
KERAS_EXTRA_BIASES = {"vgg16": 0, "resnet50": 26_560, "mobilenet_v2": 0}
FULL_MIN_ACCURACY = 0.88   # Fashion-MNIST test accuracy of this CNN after 5 epochs (0.89-0.90 measured)
SMALL_MIN_ACCURACY = 0.50  # 600 images, 1 epoch: well above chance (0.10)


def shape_tracing_cnn() -> Sequential:
    """The seed's model, written the way the seed writes it."""
    return Sequential([
        Conv2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D((2, 2)),
        Conv2D(32, (3, 3), activation="relu"),
        MaxPooling2D((2, 2)),
        Conv2D(64, (3, 3), activation="relu"),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(10, activation="softmax"),
    ])


def part1(epochs: int, small: bool, seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    model = shape_tracing_cnn()
    summary = cnnlab.model_summary(model)
    print(f"{'Layer':<25} {'Output Shape':<20} {'Params':>10}")
    print("-" * 57)
    for row in summary.rows:
        print(f"{row.name:<25} {str((None, *row.output_shape)):<20} {row.params:>10,}")
    print(f"\nTotal parameters: {summary.total:,}")
    shapes = [tuple(row.output_shape) for row in summary.rows]
    if shapes != SEED_SHAPES or summary.total != SEED_PARAMETERS:
        raise SystemExit(f"shapes {shapes} / {summary.total:,} parameters differ from the seed's "
                         f"{SEED_SHAPES} / {SEED_PARAMETERS:,}")
    train = cnnlab.load_dataset("fashion-mnist", download=False)
    test = cnnlab.load_dataset("fashion-mnist", split="test", download=False)
    if small:
        train, test = train.subset(range(600)), test.subset(range(600))
    start = time.perf_counter()
    cnnlab.fit(model, train, epochs=epochs, batch_size=32, validation_split=0.1, seed=seed, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = cnnlab.evaluate(model, test)["accuracy"]
    gate = SMALL_MIN_ACCURACY if small else FULL_MIN_ACCURACY
    if accuracy < gate:
        raise SystemExit(f"test accuracy {accuracy:.4f} is below this example's gate {gate}")
    return {"part": "shape-tracing CNN", "data": "fashion-mnist", "seed": seed, "epochs": epochs,
            "train_images": len(train), "test_images": len(test), "parameters": summary.total,
            "fit_seconds": round(seconds, 2), "test_accuracy": round(accuracy, 4)}


def part2() -> dict[str, object]:
    print(f"\n{'Model':<15} {'Layers':>8} {'Params':>15} {'Keras params':>15} {'Output Shape':<20}")
    print("-" * 76)
    image = torch.rand(1, 3, 224, 224)  # the seed's "quick test" input, channels first
    features: dict[str, list[int]] = {}
    for name, keras_params in KERAS_NO_TOP.items():
        backbone = transfer_model(name, num_classes=10, input_shape=(224, 224, 3), pretrained=False).features
        params = sum(p.numel() for p in backbone.parameters())
        statistics = sum(b.numel() for key, b in backbone.named_buffers() if key.endswith(("running_mean",
                                                                                          "running_var")))
        with torch.no_grad():
            out = backbone.eval()(image)                       # (1, C, 7, 7)
        features[name] = [1, *out.shape[2:], out.shape[1]]     # Keras order (1, 7, 7, C)
        layers = sum(1 for m in backbone.modules() if not list(m.children()))
        print(f"{name:<15} {layers:>8} {params:>15,} {keras_params:>15,} {str((None, *features[name][1:])):<20}")
        if params + statistics + KERAS_EXTRA_BIASES[name] != keras_params:
            raise SystemExit(f"{name}: {params:,} parameters + {statistics:,} BatchNorm statistics do not add "
                             f"up to Keras's {keras_params:,}")
    for name in ("lenet5", "alexnet"):
        model = cnnlab.build_model(name)
        total, _, _ = count_parameters(model)
        layers = sum(1 for m in model.modules() if not list(m.children()))
        print(f"{name:<15} {layers:>8} {total:>15,} {'':>15} (with its classifier)")
    for name, shape in features.items():
        print(f"\n{name} feature shape: {tuple(shape)}")
    return {"part": "famous architectures", "feature_shapes": features, "keras_parameters_match": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="600 training images, 1 epoch (for CI)")
    args = parser.parse_args()
    print(json.dumps(part1(1 if args.small else args.epochs, args.small, args.seed)), flush=True)
    print(json.dumps(part2()), flush=True)


if __name__ == "__main__":
    main()

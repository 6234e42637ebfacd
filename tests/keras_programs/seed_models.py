"""The seed tutorials' models in Keras code, built on tf.keras by benchmarks/keras_reference.py and on
cnnlab.keras by tests/test_keras_api.py: one definition, two implementations, compared number by number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def seed_models(layers: Any, models: Any) -> dict[str, Callable[[], Any]]:
    """The seed tutorials' Sequential models, written as the tutorials write them (input_shape=).

    `layers` and `models` are tf.keras's (benchmarks/keras_reference.py) or cnnlab.keras's (the tests).
    """
    C, P, F, D = layers.Conv2D, layers.MaxPooling2D, layers.Flatten, layers.Dense
    return {
        "seed000_mnist": lambda: models.Sequential([
            C(32, (3, 3), activation="relu", input_shape=(28, 28, 1)), P((2, 2)),
            C(64, (3, 3), activation="relu"), P((2, 2)),
            F(), D(64, activation="relu"), D(10, activation="softmax")]),
        "seed003_dense_vs_cnn": lambda: models.Sequential([
            C(32, (3, 3), activation="relu", input_shape=(28, 28, 1)), P((2, 2)),
            F(), D(64, activation="relu"), D(10, activation="softmax")]),
        "seed003_standard_cifar": lambda: models.Sequential([
            C(32, (3, 3), activation="relu", padding="same", input_shape=(32, 32, 3)),
            C(32, (3, 3), activation="relu", padding="same"), P((2, 2)),
            C(64, (3, 3), activation="relu", padding="same"),
            C(64, (3, 3), activation="relu", padding="same"), P((2, 2)),
            C(128, (3, 3), activation="relu", padding="same"),
            C(128, (3, 3), activation="relu", padding="same"), P((2, 2)),
            F(), D(256, activation="relu"), layers.Dropout(0.5), D(10, activation="softmax")]),
        "seed003_bn_cifar": lambda: models.Sequential([
            C(32, (3, 3), activation="relu", padding="same", input_shape=(32, 32, 3)),
            layers.BatchNormalization(),
            C(32, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
            P((2, 2)), layers.Dropout(0.25),
            C(64, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
            C(64, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
            P((2, 2)), layers.Dropout(0.25),
            C(128, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
            C(128, (3, 3), activation="relu", padding="same"), layers.BatchNormalization(),
            P((2, 2)), layers.Dropout(0.25),
            F(), D(256, activation="relu"), layers.BatchNormalization(), layers.Dropout(0.5),
            D(10, activation="softmax")]),
        "seed003_shape_tracing": lambda: models.Sequential([
            C(16, (3, 3), activation="relu", input_shape=(28, 28, 1)), P((2, 2)),
            C(32, (3, 3), activation="relu"), P((2, 2)),
            C(64, (3, 3), activation="relu"),
            F(), D(128, activation="relu"), D(10, activation="softmax")]),
        "seed004_cifar": lambda: models.Sequential([
            C(32, (3, 3), activation="relu", input_shape=(32, 32, 3)), P((2, 2)),
            C(64, (3, 3), activation="relu"), P((2, 2)),
            F(), D(64, activation="relu"), D(10)]),
        "strides_same": lambda: models.Sequential([
            C(8, 3, strides=2, padding="same", input_shape=(27, 27, 3)),
            layers.AveragePooling2D(2, padding="same"),
            C(4, (5, 3), strides=(2, 1), padding="valid"),
            layers.GlobalAveragePooling2D(), D(3)]),
    }


def synthetic_weights(paths: list[str], shapes: list[tuple[int, ...]], seed: int) -> list[Any]:
    """Weights for a large network, made by a rule instead of stored (a file of EfficientNet's 4M random
    floats would not compress): the reference script and the test draw the same arrays from the weight
    paths and shapes. Kernels ~ N(0, 1/fan_in) so the signal survives depth; BatchNorm scales and
    variances in [0.5, 1.5] and shifts near 0 so that epsilon, momentum and order matter."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for path, shape in zip(paths, shapes, strict=True):
        if path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif path.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0.0, 0.01, shape)
        elif path.endswith("normalization/mean"):
            value = np.array([0.485, 0.456, 0.406])
        elif path.endswith("normalization/variance"):
            value = np.array([0.229, 0.224, 0.225]) ** 2
        elif path.endswith("normalization/count"):
            value = np.zeros(shape)
        else:  # a kernel: fan-in is the product of all but the last axis (a depthwise kernel's: its window)
            fan_in = shape[0] * shape[1] if "dwconv" in path or "depthwise" in path else int(np.prod(shape[:-1]))
            value = rng.normal(0.0, (1.0 / max(fan_in, 1)) ** 0.5, shape)
        out.append(np.asarray(value, dtype=np.float32).reshape(shape))
    return out


def residual_model(keras: Any, layers: Any) -> Any:
    """Seed 003's skip connection as a functional model (Add of a Conv2D-BatchNorm branch and its input)."""
    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    shortcut = x
    x = layers.Conv2D(16, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([x, shortcut])
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def every_layer_model(keras: Any, layers: Any) -> Any:
    """A graph of every layer type cnnlab.keras adds for the functional API (weights compared with tf.keras's)."""
    inputs = keras.Input(shape=(12, 10, 3), name="image")
    a = layers.ZeroPadding2D(((1, 2), (0, 1)))(inputs)
    a = layers.Conv2D(6, 3, strides=2, padding="same", name="conv_s2")(a)
    b = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="depthwise")(inputs)
    b = layers.ReLU(6.0)(b)
    b = layers.ZeroPadding2D(((1, 1), (0, 1)))(b)
    b = layers.Conv2D(6, 1, use_bias=False)(b)
    m = layers.Add()([a, b])
    s = layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, activation="relu", name="separable")(m)
    t = layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="transpose")(s)
    t2 = layers.Conv2DTranspose(3, 2, strides=2, padding="valid", name="transpose_valid")(s)
    u = layers.UpSampling2D(2)(s)
    c = layers.Concatenate()([t, u, t2])
    c = layers.BatchNormalization(name="bn")(c)
    p = layers.GlobalMaxPooling2D()(c)
    q = layers.GlobalAveragePooling2D()(c)
    mul = layers.Multiply()([p, q])
    avg = layers.Average()([p, q])
    sub = layers.Subtract()([mul, avg])
    f = layers.Flatten()(c)
    r = layers.Reshape((8, 8, -1))(layers.Dense(128, name="dense_r")(f))
    r = layers.LeakyReLU(negative_slope=0.2)(r)
    r = layers.AveragePooling2D(4)(r)
    r = layers.Flatten()(r)
    merged = layers.Concatenate()([sub, r, layers.Maximum()([p, q]), layers.Minimum()([p, q])])
    outputs = layers.Dense(5, activation="softmax", name="head")(merged)
    return keras.Model(inputs, outputs, name="every_layer")

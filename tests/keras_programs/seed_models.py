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

"""Keras's own numbers for functional models and keras.applications, computed by real tf.keras.

Runs only in the TensorFlow benchmark environment (benchmarks/setup_tf.sh) and imports nothing from
cnnlab. It writes:

    tests/data/keras_graph_reference.json  per application: layer names, classes, output shapes and
                                           parameter counts, totals; summary() texts of graph models;
                                           shapes of the tutorials' feature-map sub-models
    tests/data/keras_graph_reference.npz   random weights, an input batch and Keras's output for a
                                           small graph of every new layer type ("graph_*") and for
                                           MobileNetV2 alpha 0.35 at 64x64 ("mnv2_*")
    tests/data/keras_graph_legacy.h5       the small graph's weights in Keras's legacy HDF5 layout
                                           (what keras.applications' ImageNet files use)

    benchmarks/.venv-tf/bin/python benchmarks/keras_graph_reference.py
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["COLUMNS"] = "80"  # summary() sizes itself from the terminal; 80 is what a pipe or notebook gets
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "keras_programs"))
from seed_models import every_layer_model, residual_model, synthetic_weights  # noqa: E402  (plain Python)
OUT_JSON = ROOT / "tests" / "data" / "keras_graph_reference.json"
OUT_NPZ = ROOT / "tests" / "data" / "keras_graph_reference.npz"
OUT_H5 = ROOT / "tests" / "data" / "keras_graph_legacy.h5"
SEED = 7
# MobileNetV2 layers whose outputs the reference keeps: after each kind of padding, depthwise, residual add
MNV2_PROBES = ("Conv1_relu", "block_1_pad", "block_1_depthwise_relu", "block_2_add", "block_6_project_BN",
               "block_13_depthwise_relu", "out_relu")
EFFNET_PROBES = ("normalization", "stem_activation", "block1a_se_excite", "block2a_dwconv_pad", "block2b_add",
                 "block4a_project_bn", "top_activation")

APPLICATIONS = {
    "VGG16": lambda top: keras.applications.VGG16(weights=None, include_top=top),
    "ResNet50": lambda top: keras.applications.ResNet50(weights=None, include_top=top),
    "MobileNetV2": lambda top: keras.applications.MobileNetV2(weights=None, include_top=top),
    "EfficientNetB0": lambda top: keras.applications.EfficientNetB0(weights=None, include_top=top),
}


def describe(model: keras.Model) -> dict[str, Any]:
    rows = []
    for layer in model.layers:
        shape = layer.output.shape if not isinstance(layer.output, list) else [t.shape for t in layer.output]
        rows.append({"name": layer.name, "class": type(layer).__name__, "output_shape": _shape(shape),
                     "params": int(layer.count_params()) if layer.built else 0})
    return {"name": model.name, "layers": rows, "total": int(model.count_params()),
            "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "non_trainable": int(sum(np.prod(w.shape) for w in model.non_trainable_weights))}


def _shape(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_shape(s) for s in shape]
    return [None if d is None else int(d) for d in shape]


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line))
    return "\n".join(lines)


def applications() -> dict[str, Any]:
    out = {}
    for name, build in APPLICATIONS.items():
        for top in (True, False):
            keras.backend.clear_session()
            out[f"{name}{'' if top else '_notop'}"] = describe(build(top))
    keras.backend.clear_session()
    mnv2 = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35, input_shape=(64, 64, 3))
    out["MobileNetV2_a035_64"] = describe(mnv2)
    keras.backend.clear_session()
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    out["VGG16_notop_summary"] = summary_text(vgg)
    vgg_pooled = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3), pooling="avg")
    out["VGG16_notop_avg_64"] = describe(vgg_pooled)
    return out


def graph_models() -> tuple[dict[str, Any], dict[str, np.ndarray], keras.Model]:
    """Seed 003's residual block, a linear functional model, a transfer model, and every new layer type."""
    texts: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    keras.backend.clear_session()
    residual = residual_model(keras, layers)
    texts["residual_summary"] = summary_text(residual)
    texts["residual"] = describe(residual)

    keras.backend.clear_session()
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(8, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10)(x)
    linear = keras.Model(inputs, outputs)
    texts["linear_summary"] = summary_text(linear)

    keras.backend.clear_session()
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    base.trainable = False
    inputs = keras.Input(shape=(96, 96, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1)(x)
    transfer = keras.Model(inputs, outputs)
    texts["transfer_summary"] = summary_text(transfer)
    texts["transfer"] = describe(transfer)

    # the tutorials' feature maps: a sub-model of a Sequential's first layers
    keras.backend.clear_session()
    seq = keras.Sequential([keras.Input(shape=(28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                            layers.MaxPooling2D(), layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                            layers.Dense(10, activation="softmax")])
    maps = keras.Model(inputs=seq.inputs, outputs=[layer.output for layer in seq.layers[:3]])
    texts["feature_maps"] = {"output_shapes": [_shape(t.shape) for t in maps.outputs],
                             "layers": [layer.name for layer in maps.layers], "summary": summary_text(maps)}

    # every new layer type, random weights, compared output to output
    keras.backend.clear_session()
    rng = np.random.default_rng(SEED)
    graph = every_layer_model(keras, layers)
    weights = [rng.normal(0, 0.3, w.shape).astype(np.float32) for w in graph.get_weights()]
    for i, w in enumerate(graph.weights):
        if "moving_variance" in w.path:
            weights[i] = rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
    graph.set_weights(weights)
    x = rng.uniform(0, 1, (3, 12, 10, 3)).astype(np.float32)
    arrays["graph_x"] = x
    arrays["graph_y"] = graph.predict(x, verbose=0)
    for i, w in enumerate(weights):
        arrays[f"graph_w{i}"] = w
    texts["every_layer"] = describe(graph)
    texts["every_layer_summary"] = summary_text(graph)
    texts["every_layer_weight_paths"] = [w.path for w in graph.weights]

    keras.backend.clear_session()
    mnv2 = keras.applications.MobileNetV2(weights=None, include_top=True, alpha=0.35, input_shape=(64, 64, 3),
                                          classes=10, classifier_activation=None)
    # Keras's own initial kernels (variance-preserving, so the logits still depend on the image), and
    # BatchNorm statistics and scales drawn away from 0/1 so that epsilon and momentum matter
    weights = mnv2.get_weights()
    for i, w in enumerate(mnv2.weights):
        if w.path.endswith(("gamma", "moving_variance")):
            weights[i] = rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
        elif w.path.endswith(("beta", "moving_mean")):
            weights[i] = rng.normal(0, 0.01, w.shape).astype(np.float32)
    mnv2.set_weights(weights)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    arrays["mnv2_x"] = x
    arrays["mnv2_y"] = mnv2.predict(x, verbose=0)
    probe = keras.Model(mnv2.input, [mnv2.get_layer(n).output for n in MNV2_PROBES])
    for name, value in zip(MNV2_PROBES, probe.predict(x, verbose=0), strict=True):
        arrays[f"mnv2_at_{name}"] = value
    for i, w in enumerate(weights):
        arrays[f"mnv2_w{i}"] = w
    texts["mnv2_a035_64_top10"] = describe(mnv2)

    keras.backend.clear_session()  # EfficientNetB0: Normalization, swish, squeeze-excite broadcasting
    effnet = keras.applications.EfficientNetB0(weights=None, include_top=True, input_shape=(64, 64, 3), classes=10,
                                               classifier_activation=None)
    weights = synthetic_weights([w.path for w in effnet.weights], [tuple(w.shape) for w in effnet.weights], SEED)
    effnet.set_weights(weights)  # a rule the test repeats: 4M stored random floats would not compress
    effnet.get_layer("normalization").finalize_state()  # Keras applies set mean/variance only after this
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    arrays["effnet_x"] = x
    arrays["effnet_y"] = effnet.predict(x, verbose=0)
    probe = keras.Model(effnet.input, [effnet.get_layer(n).output for n in EFFNET_PROBES])
    for name, value in zip(EFFNET_PROBES, probe.predict(x, verbose=0), strict=True):
        arrays[f"effnet_at_{name}"] = value
    return texts, arrays, graph


def write_legacy_h5(model: keras.Model) -> None:
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    with h5py.File(OUT_H5, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def main() -> None:
    tf.random.set_seed(SEED)
    graphs, arrays, graph = graph_models()
    write_legacy_h5(graph)
    reference = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                              "python": sys.version.split()[0], "platform": platform.platform()},
                 "date": datetime.date.today().isoformat(), "applications": applications(), "graphs": graphs}
    OUT_JSON.write_text(json.dumps(reference, indent=1) + "\n")
    np.savez_compressed(OUT_NPZ, **arrays)
    print(f"wrote {OUT_JSON}, {OUT_NPZ} ({OUT_NPZ.stat().st_size / 1e6:.1f} MB), {OUT_H5}")


if __name__ == "__main__":
    main()

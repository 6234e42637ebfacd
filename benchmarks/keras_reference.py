"""Keras's own reference numbers, computed by real tf.keras, for testing `cnnlab.keras` against them.

Runs only in the TensorFlow benchmark environment (benchmarks/setup_tf.sh) and imports nothing from
cnnlab. It writes two files:

    tests/data/keras_reference.json   the numbers: per-layer shapes and parameter counts and the exact
                                      summary() text of the seed models, loss and accuracy values,
                                      fit/train_on_batch/test_on_batch semantics, versions
    tests/data/keras_reference.npz    the arrays those numbers were computed from: loss inputs, the
                                      64 fit images and labels, every initial weight of the fit model
                                      (fit_w0, fit_w1, ... in model.get_weights() order), predict output

Run it from the repository root:

    benchmarks/.venv-tf/bin/python benchmarks/keras_reference.py

Values are float32 computations on CPU with oneDNN on; compare with rtol ~1e-5 (losses, predict)
and ~1e-4 (anything after an optimizer step).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet
# summary() sizes its table from the terminal width (min(88, columns - 4) for a Sequential). Pin the
# width to 80, what a non-terminal gets (Jupyter, Colab, piped output), so the text is reproducible.
os.environ["COLUMNS"] = "80"
import tensorflow as tf  # noqa: E402  (the environment variables must be set first)
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers, models  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "keras_programs"))
from seed_models import seed_models as shared_seed_models  # noqa: E402  (plain Python, imports nothing)

tf.get_logger().setLevel("ERROR")  # fresh models per experiment retrace on purpose; no warnings about it
# The tutorials pass input_shape=; Keras 3 warns about it once per model (describe() records the text).
warnings.filterwarnings("ignore", message="Do not pass an `input_shape`")

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "tests" / "data" / "keras_reference.json"
OUT_NPZ = ROOT / "tests" / "data" / "keras_reference.npz"
WEIGHT_SEED = 1234  # numpy seed for the fit model's initial weights (stored in the npz anyway)
DATA_SEED = 42  # numpy seed for the 64 fit images and labels


# --------------------------------------------------------------------------------------------------
# a) models: shapes, parameter counts, summary text

def seed_models() -> dict[str, Callable[[], keras.Model]]:
    """The seed tutorials' Sequential models (tests/keras_programs/seed_models.py, shared with cnnlab's tests)."""
    return shared_seed_models(layers, models)


def n_params(weights: list) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def describe(name: str, build: Callable[[], keras.Model]) -> dict[str, Any]:
    """One model's per-layer table, totals and summary text, built in a fresh session."""
    keras.backend.clear_session()  # layer names restart at conv2d, conv2d_1, ...
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build()
    chunks: list[str] = []
    model.summary(print_fn=chunks.append)
    return {
        "name": name,
        "model_name": model.name,
        "built_with": "input_shape= on the first layer",
        "input_shape_warning": [str(w.message) for w in caught if "input_shape" in str(w.message)],
        "layers": [{
            "name": layer.name,
            "class_name": type(layer).__name__,
            "output_shape": list(layer.output.shape),
            "count_params": int(layer.count_params()),
            "trainable": n_params(layer.trainable_weights),
            "non_trainable": n_params(layer.non_trainable_weights),
        } for layer in model.layers],
        "count_params": int(model.count_params()),
        "trainable": n_params(model.trainable_weights),
        "non_trainable": n_params(model.non_trainable_weights),
        # print_fn is called once with the whole table (it already ends in "\n"), not once per line
        "summary_print_fn_calls": len(chunks),
        "summary": "\n".join(c.rstrip("\n") for c in chunks),
    }


# --------------------------------------------------------------------------------------------------
# b) losses and accuracy on fixed arrays

LOGITS = np.array([  # (6, 4): confident right and wrong rows, a near-uniform row, one exact tie
    [2.0, 0.5, -1.0, 0.0],
    [0.1, 0.2, 0.3, 0.4],
    [-1.5, 3.0, 0.5, 0.25],
    [1.0, 1.0, 0.9, -2.0],
    [0.0, -0.5, 4.0, 1.5],
    [-0.75, 0.25, 0.5, 2.5],
], dtype=np.float32)
# Rows 2, 3 and 5 are predicted wrong; row 3 ties classes 0 and 1 and is labelled 1, so accuracy 0.5
# (not 4/6) pins argmax taking the first of tied classes.
LABELS = np.array([0, 3, 2, 1, 2, 0], dtype=np.int64)
SAMPLE_WEIGHT = np.array([1.0, 2.0, 0.5, 0.0, 3.0, 1.5], dtype=np.float32)  # sum 8 != N 6
BIN_LOGITS = np.array([[2.0], [-1.0], [0.0], [0.5], [-3.0], [8.0]], dtype=np.float32)  # 0.0 -> p=0.5
BIN_LABELS = np.array([[1], [0], [1], [0], [0], [1]], dtype=np.float32)


def scalar(x: Any) -> float:
    return float(np.asarray(x))


def losses_reference(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Loss values and accuracy metrics for the fixed arrays; numpy cross-checks beside them."""
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(LOGITS, axis=-1)).astype(np.float32)
    onehot = np.eye(4, dtype=np.float32)[LABELS]
    bin_probs = keras.ops.convert_to_numpy(keras.ops.sigmoid(BIN_LOGITS)).astype(np.float32)
    arrays.update(loss_logits=LOGITS, loss_probs=probs, loss_labels=LABELS, loss_onehot=onehot,
                  loss_sample_weight=SAMPLE_WEIGHT, loss_bin_logits=BIN_LOGITS,
                  loss_bin_probs=bin_probs, loss_bin_labels=BIN_LABELS)
    L = keras.losses
    v: dict[str, Any] = {
        "sparse_cce_probs": scalar(L.SparseCategoricalCrossentropy()(LABELS, probs)),
        "sparse_cce_logits": scalar(L.SparseCategoricalCrossentropy(from_logits=True)(LABELS, LOGITS)),
        "cce_probs": scalar(L.CategoricalCrossentropy()(onehot, probs)),
        "cce_logits": scalar(L.CategoricalCrossentropy(from_logits=True)(onehot, LOGITS)),
        "cce_probs_ls0.1": scalar(L.CategoricalCrossentropy(label_smoothing=0.1)(onehot, probs)),
        "cce_logits_ls0.1": scalar(
            L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(onehot, LOGITS)),
        "bce_probs": scalar(L.BinaryCrossentropy()(BIN_LABELS, bin_probs)),
        "bce_logits": scalar(L.BinaryCrossentropy(from_logits=True)(BIN_LABELS, BIN_LOGITS)),
        "mse_onehot_vs_probs": scalar(L.MeanSquaredError()(onehot, probs)),
        "sparse_cce_probs_weighted": scalar(
            L.SparseCategoricalCrossentropy()(LABELS, probs, sample_weight=SAMPLE_WEIGHT)),
        "sparse_cce_logits_weighted": scalar(L.SparseCategoricalCrossentropy(from_logits=True)(
            LABELS, LOGITS, sample_weight=SAMPLE_WEIGHT)),
        "sparse_cce_probs_weighted_sum": scalar(L.SparseCategoricalCrossentropy(reduction="sum")(
            LABELS, probs, sample_weight=SAMPLE_WEIGHT)),
    }
    per_sample = keras.ops.convert_to_numpy(
        L.sparse_categorical_crossentropy(LABELS, LOGITS, from_logits=True)).astype(np.float64)
    arrays["loss_sparse_per_sample"] = per_sample.astype(np.float32)
    wl = float((SAMPLE_WEIGHT * per_sample).sum())
    v["weighted_candidates"] = {"sum(w*l)/N": wl / len(LABELS), "sum(w*l)/sum(w)": wl / float(SAMPLE_WEIGHT.sum())}
    got = v["sparse_cce_logits_weighted"]
    v["weighted_reduction"] = min(v["weighted_candidates"], key=lambda k: abs(v["weighted_candidates"][k] - got))
    try:  # a newer reduction some Keras 3 versions offer
        v["sparse_cce_logits_weighted_mean_with_sample_weight"] = scalar(L.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight")(LABELS, LOGITS, sample_weight=SAMPLE_WEIGHT))
    except (ValueError, TypeError) as e:
        v["sparse_cce_logits_weighted_mean_with_sample_weight"] = f"refused: {e}"[:300]

    # numpy cross-checks, to catch a typo in the arrays rather than to replace Keras's numbers
    logp = LOGITS - np.log(np.exp(LOGITS.astype(np.float64)).sum(1, keepdims=True))
    smooth = onehot * 0.9 + 0.1 / 4
    bl = BIN_LOGITS.astype(np.float64)
    v["numpy_check"] = {
        "sparse_cce": float(-logp[np.arange(6), LABELS].mean()),
        "cce_ls0.1": float(-(smooth * logp).sum(1).mean()),
        "bce": float((np.maximum(bl, 0) - bl * BIN_LABELS + np.log1p(np.exp(-np.abs(bl)))).mean()),
        "mse": float(((onehot - probs.astype(np.float64)) ** 2).mean()),
    }

    M = keras.metrics
    def metric(m: keras.metrics.Metric, y: np.ndarray, p: np.ndarray) -> float:
        m.update_state(y, p)
        return scalar(m.result())
    v["accuracy"] = {
        "sparse_categorical_accuracy": metric(M.SparseCategoricalAccuracy(), LABELS, probs),
        "categorical_accuracy": metric(M.CategoricalAccuracy(), onehot, probs),
        "binary_accuracy_t0.5": metric(M.BinaryAccuracy(threshold=0.5), BIN_LABELS, bin_probs),
        "note": "binary row 2 has p = sigmoid(0) = 0.5 exactly with label 1: counted right only if "
                "Keras thresholds with >= (it uses >, so 4/6 means p > 0.5)",
    }
    v["accuracy"]["compile_resolved"] = compile_accuracy(probs, onehot, bin_probs)
    return v


def compile_accuracy(probs: np.ndarray, onehot: np.ndarray, bin_probs: np.ndarray) -> dict[str, Any]:
    """What metrics=['accuracy'] reports under evaluate(), for each kind of loss (identity model)."""
    out = {}
    for key, loss, y, p in [("sparse_categorical_crossentropy", "sparse_categorical_crossentropy", LABELS, probs),
                            ("categorical_crossentropy", "categorical_crossentropy", onehot, probs),
                            ("binary_crossentropy", "binary_crossentropy", BIN_LABELS, bin_probs)]:
        keras.backend.clear_session()
        model = models.Sequential([keras.Input(shape=p.shape[1:]), layers.Activation("linear")])
        model.compile(loss=loss, metrics=["accuracy"])
        res = model.evaluate(p, y, verbose=0, return_dict=True)
        out[key] = {k: float(val) for k, val in res.items()}
    return out


# --------------------------------------------------------------------------------------------------
# c) fit semantics on a small seed000-like model

def fit_model() -> keras.Model:
    """Seed 000's layer sequence, narrower so every weight fits in a small npz (14,410 params)."""
    return models.Sequential([
        layers.Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(10, activation="softmax")])


def seeded_weights(model: keras.Model) -> list[np.ndarray]:
    """Glorot-uniform kernels and nonzero biases from numpy (nonzero so bias handling is tested)."""
    rng = np.random.default_rng(WEIGHT_SEED)
    out = []
    for w in model.get_weights():
        if w.ndim == 1:
            out.append(rng.uniform(-0.1, 0.1, w.shape).astype(np.float32))
            continue
        receptive = int(np.prod(w.shape[:-2]))  # kh*kw for Conv2D, 1 for Dense
        fan_in, fan_out = w.shape[-2] * receptive, w.shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        out.append(rng.uniform(-limit, limit, w.shape).astype(np.float32))
    return out


class StepCounter(keras.callbacks.Callback):
    """Counts train and validation batches and their sizes, to see how validation_split split x."""

    def __init__(self) -> None:
        super().__init__()
        self.train_steps, self.val_steps = 0, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.train_steps += 1

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.val_steps += 1


def fresh(init: list[np.ndarray], metrics: list[str] | None = None, optimizer: Any = "adam") -> keras.Model:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = fit_model()
    model.set_weights(init)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=metrics if metrics is not None else ["accuracy"])
    return model


def fit_semantics(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    rng = np.random.default_rng(DATA_SEED)
    x = (rng.integers(0, 256, (64, 28, 28, 1)).astype(np.float32) / np.float32(255.0))  # (N, H, W, C)
    y = rng.integers(0, 10, 64).astype(np.int64)
    class_weight = {0: 2.0, 1: 0.5, 2: 1.0, 3: 1.5, 4: 0.25, 5: 3.0, 6: 1.0, 7: 0.75, 8: 2.5, 9: 0.1}
    keras.backend.clear_session()
    init = seeded_weights(fit_model())
    arrays.update(fit_x=x, fit_y=y, fit_class_weight=np.array([class_weight[c] for c in range(10)], np.float32))
    arrays.update({f"fit_w{i}": w for i, w in enumerate(init)})
    r: dict[str, Any] = {"n_samples": 64, "class_weight": {str(k): v for k, v in class_weight.items()}}

    model = fresh(init)
    r["weights"] = [{"npz_key": f"fit_w{i}", "name": w.path, "shape": list(w.shape)}
                    for i, w in enumerate(model.weights)]
    r["count_params"] = int(model.count_params())
    pred_all = model.predict(x, verbose=0)
    arrays["fit_predict_x4"] = model.predict(x[:4], verbose=0)
    r["predict_x4"] = arrays["fit_predict_x4"].tolist()
    per_sample = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, pred_all)).astype(np.float64)
    r["test_on_batch"] = [float(v) for v in np.atleast_1d(model.test_on_batch(x, y))]
    r["test_on_batch_names"] = list(model.metrics_names)  # Keras 3 says "compile_metrics", not "accuracy"
    r["test_on_batch_dict"] = {k: float(v) for k, v in model.test_on_batch(x, y, return_dict=True).items()}
    r["numpy_mean_loss_from_predict"] = float(per_sample.mean())

    model = fresh(init)
    r["train_on_batch_no_class_weight"] = [float(v) for v in np.atleast_1d(model.train_on_batch(x, y))]
    model = fresh(init)
    r["train_on_batch_class_weight"] = [float(v) for v in np.atleast_1d(
        model.train_on_batch(x, y, class_weight=class_weight))]
    cw = np.array([class_weight[c] for c in y])
    r["class_weight_candidates"] = {"sum(cw*l)/N": float((cw * per_sample).sum() / 64),
                                    "sum(cw*l)/sum(cw)": float((cw * per_sample).sum() / cw.sum())}
    got = r["train_on_batch_class_weight"][0]
    r["class_weight_reduction"] = min(r["class_weight_candidates"],
                                      key=lambda k: abs(r["class_weight_candidates"][k] - got))

    r["history_keys"] = {}
    for label, metrics, callbacks in [
            ("accuracy", ["accuracy"], []),
            ("accuracy+ReduceLROnPlateau", ["accuracy"], [keras.callbacks.ReduceLROnPlateau()]),
            ("acc", ["acc"], [])]:
        model = fresh(init, metrics)
        hist = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=callbacks)
        r["history_keys"][label] = list(hist.history.keys())  # in Keras's insertion order

    # Same fit without shuffling: a deterministic 2-epoch Adam trajectory (batch 32: steps of 32 + 16).
    model = fresh(init)
    hist = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0, shuffle=False)
    r["history_shuffle_false"] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}

    # Which samples validation_split took: with a learning rate of 0 the weights never move, so the
    # epoch's val_loss is the loss on exactly the held-out samples, and loss is the train part's.
    model = fresh(init, optimizer=keras.optimizers.SGD(learning_rate=0.0))
    counter = StepCounter()
    hist = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0, callbacks=[counter])
    val_loss, loss = hist.history["val_loss"][0], hist.history["loss"][0]
    r["validation_split"] = {
        "train_steps_per_epoch": counter.train_steps, "val_steps": counter.val_steps,
        "val_loss_lr0": float(val_loss), "loss_lr0": float(loss),
        "mean_loss_last_16": float(per_sample[48:].mean()), "mean_loss_first_16": float(per_sample[:16].mean()),
        "mean_loss_first_48": float(per_sample[:48].mean()),
        "mean_of_batch_means_first_48": float((per_sample[:32].mean() + per_sample[32:48].mean()) / 2),
        "val_is_last_25pct": bool(abs(val_loss - per_sample[48:].mean()) < 1e-5),
        "epoch_loss_is_sample_weighted_mean": bool(abs(loss - per_sample[:48].mean()) < 1e-5),
    }
    r["layout_notes"] = {
        "images": "NHWC: x is (N, 28, 28, 1) float32 = uint8 / 255",
        "Conv2D.kernel": "(kh, kw, in, out); torch Conv2d.weight is (out, in, kh, kw) = kernel.transpose(3, 2, 0, 1)",
        "Dense.kernel": "(in, out); torch Linear.weight is (out, in) = kernel.T",
        "Flatten->Dense": "Keras flattens (H, W, C) in that order: Dense kernel row index = (h*W + w)*C + c. "
                          "A torch model flattening NCHW needs rows reordered: "
                          "kernel.reshape(H, W, C, out).transpose(2, 0, 1, 3).reshape(-1, out)",
        "bias": "(out,)",
        "weights_order": "model.get_weights(): per layer, kernel then bias",
    }
    return r


# --------------------------------------------------------------------------------------------------
# d) versions, and the run

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    keras.utils.set_random_seed(0)
    arrays: dict[str, np.ndarray] = {}
    ref: dict[str, Any] = {
        "versions": {
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "platform_processor": platform.processor(), "cpu_model": cpu_model(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on)"),
            "summary_columns": os.environ["COLUMNS"],
        },
        "models": {name: describe(name, build) for name, build in seed_models().items()},
        "losses": losses_reference(arrays),
        "fit_semantics": fit_semantics(arrays),
    }
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    np.savez_compressed(OUT_NPZ, **arrays)
    print(f"wrote {OUT_JSON.relative_to(ROOT)} ({OUT_JSON.stat().st_size:,} B) and "
          f"{OUT_NPZ.relative_to(ROOT)} ({OUT_NPZ.stat().st_size:,} B, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()

"""Keras's model methods (compile, fit, evaluate, predict, summary, weights, save) on cnnlab's engine.

`KerasModel` translates and validates; the engine trains: `fit` is `cnnlab.training.fit` with the
compiled loss and optimizer, so the tutorials' code trains at cnnlab's speed and the model stays an
`nn.Module` every cnnlab tool takes. Arrays cross the boundary in Keras's layout (NHWC NumPy) and
the model computes in torch's (NCHW tensors).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.keras import callbacks as kcallbacks
from cnnlab.keras import mixed_precision
from cnnlab.keras.h5 import load_h5_weights, save_h5_weights
from cnnlab.keras.arrays import images_nchw, keras_layout, labels_vector, to_dataset, warn_unscaled
from cnnlab.keras.losses import resolve_loss, resolve_metrics
from cnnlab.keras.optimizers import resolve_optimizer
from cnnlab.keras.sources import (
    check_not_generator, is_keras_source, loader_workers, source_dataset, source_feed, source_predict,
)
from cnnlab.keras.summary import keras_summary
from cnnlab.models.files import save_model
from cnnlab.models.preprocessing_layers import augmenting, rescales_inputs
from cnnlab.models.graph import Functional
from cnnlab.models.layers import any_trainable, set_trainable, set_weights_in_order
from cnnlab.models.summary import count_parameters, layer_modules
from cnnlab.models.symbolic import KerasArray, is_symbolic
from cnnlab.training import evaluate as engine_evaluate
from cnnlab.training import fit as engine_fit
from cnnlab.training.devices import resolve_runtime
from cnnlab.training.loop import NonFiniteLoss, model_device, optimizer_step, per_sample_weights
from cnnlab.training.objectives import Objective
from cnnlab.training.optimizers import OptimizerSpec
from cnnlab.training.progress import KerasProgbar

__all__ = ["KerasModel", "Variable"]

EVAL_BATCH = 256  # evaluate/predict batch on the engine (Keras's 32 gives the same numbers, more slowly)


class Variable:
    """A weight as Keras shows it: `.numpy()` and `.shape` in Keras's layout, `.name`, `.trainable`."""

    def __init__(self, name: str, value: torch.Tensor, trainable: bool) -> None:
        self.name, self.value, self.trainable = name, value, trainable

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def numpy(self) -> np.ndarray:
        return self.value.detach().cpu().numpy().copy()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def __repr__(self) -> str:
        return f"<Variable path={self.name}, shape={self.shape}, dtype=float32>"


WEIGHT_NAMES = {"Conv2D": ("kernel", "bias"), "Dense": ("kernel", "bias"), "DepthwiseConv2D": ("kernel", "bias"),
                "Conv2DTranspose": ("kernel", "bias"),
                "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"),
                "Normalization": ("mean", "variance", "count"),
                "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance")}
MOVING = ("moving_mean", "moving_variance", "mean", "variance", "count")  # never trainable


class KerasModel(nn.Module):
    """The Keras model API, mixed into an `nn.Module` whose children are cnnlab layers."""

    compiled: dict[str, Any] | None = None
    stop_training = False

    # ------------------------------------------------------------------ structure
    @property
    def layers(self) -> list[nn.Module]:
        return list(self.children())

    def get_layer(self, name: str | None = None, index: int | None = None) -> nn.Module:
        """The layer called `name`, or at position `index` (Keras's get_layer)."""
        if (name is None) == (index is None):
            raise CnnlabError("get_layer: give a name or an index, e.g. get_layer('conv2d') or get_layer(index=0)")
        layers = self.layers
        if index is not None:
            if not isinstance(index, int) or not -len(layers) <= index < len(layers):
                raise CnnlabError(f"get_layer: index {index!r} is out of range; the model has {len(layers)} layers")
            return layers[index]
        for layer in layers:
            if getattr(layer, "name", None) == name:
                return layer
        names = [getattr(layer, "name", "?") for layer in layers]
        raise CnnlabError(f"get_layer: no layer named {name!r}; the layers are {', '.join(names)}")

    @property
    def trainable(self) -> bool:
        return any_trainable(self)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        set_trainable(self, value)

    def _variables(self) -> list[Variable]:
        out = []
        for row, module in layer_modules(self):
            layer: Any = module
            weights = layer.keras_weights() if hasattr(layer, "keras_weights") else []
            names = WEIGHT_NAMES.get(type(layer).__name__, tuple(f"weight_{i}" for i in range(len(weights))))
            trainable = bool(getattr(layer, "trainable", True))
            out += [Variable(f"{row}/{n}", w, trainable and n not in MOVING)
                    for n, w in zip(names, weights, strict=False)]
        return out

    @property
    def weights(self) -> list[Variable]:
        return self._variables()

    @property
    def trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables() if v.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [v for v in self._variables() if not v.trainable]

    variables = weights  # Keras 3's names for the same lists
    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    def get_weights(self) -> list[np.ndarray]:
        """Every weight as a NumPy array in Keras's order and layouts (a Conv2D kernel is (kh, kw, in, out))."""
        return [v.numpy() for v in self._variables()]

    def set_weights(self, weights: list[Any]) -> None:
        """Take `get_weights()`-style arrays (e.g. from a Keras model of the same layers)."""
        layers = [layer for _, layer in layer_modules(self) if hasattr(layer, "keras_weights")]
        set_weights_in_order(layers, weights, f"set_weights: {self.name}")

    def count_params(self) -> int:
        """All weights, as Keras counts them (BatchNorm's moving statistics included)."""
        return count_parameters(self)[0]

    def summary(self, line_length: int | None = None, positions: Any = None, print_fn: Any = None,
                expand_nested: bool = False, show_trainable: bool = False, layer_range: Any = None) -> None:
        """Keras's table: each layer's name (type), output shape and parameter count, then the totals."""
        if not isinstance(self, Functional):
            self.require_built("summary")  # type: ignore[operator]
        (print_fn or print)(keras_summary(self, self.name))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ compile and train
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None, loss_weights: Any = None,
                weighted_metrics: Any = None, run_eagerly: bool = False, steps_per_execution: int = 1,
                jit_compile: Any = "auto", **ignored: Any) -> None:  # type: ignore[override]
        """Keras's compile: the optimizer, loss and metrics `fit` and `evaluate` use."""
        if loss is None:
            raise CnnlabError("compile: give a loss, e.g. loss='sparse_categorical_crossentropy'")
        objective = resolve_loss(loss)
        self._check_loss_against_model(objective)
        names = resolve_metrics(metrics)
        self.compiled = {"optimizer": resolve_optimizer(optimizer), "objective": objective, "metrics": names,
                         "compile": jit_compile is True, "config": {"loss": _describe(loss),
                                                                   "optimizer": _describe(optimizer),
                                                                   "metrics": names}}
        self._optimizer_state: Any = None  # train_on_batch's optimizer, made on first use

    def _check_loss_against_model(self, objective: Objective) -> None:
        activation = getattr(self._output_layer(), "activation", None)
        if objective.from_logits and activation in ("softmax", "sigmoid"):
            raise CnnlabError(f"compile: the loss has from_logits=True but the last layer already applies "
                              f"{activation}; drop activation='{activation}' from the last layer or use "
                              f"from_logits=False")

    def _output_layer(self) -> nn.Module | None:
        """The layer whose output the model returns (the first output's, for several)."""
        if isinstance(self, Functional):
            node = self.output_tensors[0].node
            return node.layer if node is not None else None
        return self.layers[-1] if self.layers else None

    def _require_compiled(self, where: str) -> dict[str, Any]:
        if self.compiled is None:
            raise CnnlabError(f"{where}: compile the model first, e.g. model.compile(optimizer='adam', "
                              f"loss='sparse_categorical_crossentropy', metrics=['accuracy'])")
        return self.compiled

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: list[Any] | None = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, class_weight: dict[int, float] | None = None,
            sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1, seed: int | None = None) -> kcallbacks.History:
        """Keras's fit on NumPy arrays, an image_dataset_from_directory dataset or an ImageDataGenerator
        iterator (its batch size, order and labels; `steps_per_epoch`/`validation_steps` cap the batches);
        returns a History whose `.history` has Keras's keys."""
        compiled = self._require_compiled("fit")
        source = is_keras_source(x)
        if validation_freq != 1 or (validation_steps is not None and not is_keras_source(validation_data)):
            raise CnnlabError("fit: validation_freq, and validation_steps with arrays, are not supported yet; "
                              "validation runs on all of the validation data after every epoch")
        objective: Objective = compiled["objective"]
        if source:
            if validation_split or sample_weight is not None:
                raise CnnlabError("fit: validation_split and sample_weight are for arrays; a dataset or generator "
                                  "brings its own (use validation_data=, or ImageDataGenerator(validation_split=))")
            feed = source_feed(x, y, "fit")
            train = source_dataset(self, feed, objective, "fit")
            batch_size, shuffle, sample_weight = feed.batch_size, feed.shuffle, feed.sample_weights
            seed = seed if seed is not None else feed.seed
        else:
            check_not_generator(x, "fit")
            train = self._dataset(x, y, "fit", objective)
        validation = None
        if is_keras_source(validation_data):
            validation = source_dataset(self, source_feed(validation_data, None, "fit validation_data"), objective,
                                        "fit validation_data", validation_steps)
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise CnnlabError("fit: validation_data must be a tuple (x_val, y_val) or (x_val, y_val, weights), "
                                  "a dataset or an ImageDataGenerator iterator")
            validation = self._dataset(validation_data[0], validation_data[1], "fit validation_data", objective)
        verbose = 1 if verbose == "auto" else int(verbose)
        items = list(callbacks or [])
        backup = next((cb for cb in items if isinstance(cb, kcallbacks.BackupAndRestore)), None)
        lr_changes = any(isinstance(cb, (kcallbacks.ReduceLROnPlateau, kcallbacks.LearningRateScheduler))
                         for cb in items)
        metric = compiled["metrics"][0] if compiled["metrics"] else None
        rename = _renamer(metric, keep_lr=lr_changes)
        params = {"epochs": epochs, "verbose": verbose, "steps": None}
        bridges = [kcallbacks.Bridge(cb, self, rename, params) for cb in items]
        runtime = resolve_runtime(precision=mixed_precision.precision(), compile="on" if compiled["compile"] else "off")
        stopped_on_nan = False
        history: Any = None
        try:
            history = engine_fit(self, train, epochs=epochs, batch_size=batch_size or 32,
                                 optimizer=compiled["optimizer"], objective=objective,
                                 validation_split=validation_split, validation_data=validation, callbacks=bridges,
                                 seed=seed, verbose=verbose, shuffle=shuffle, initial_epoch=initial_epoch,
                                 steps_per_epoch=steps_per_epoch, runtime=runtime,
                                 class_weights=_class_weights(class_weight, train),
                                 sample_weights=_weights_tensor(sample_weight),
                                 checkpoint=_backup(backup), progress=KerasProgbar(verbose, names=rename),
                                 workers=loader_workers(train))
        except NonFiniteLoss as exc:
            if not any(isinstance(cb, kcallbacks.TerminateOnNaN) for cb in items):
                raise
            print(f"Invalid loss, terminating training ({exc})")
            history, stopped_on_nan = None, True
        if backup is not None and backup.delete_checkpoint and not stopped_on_nan:
            from cnnlab.training.checkpoint import remove_checkpoint

            remove_checkpoint(backup.backup_dir)
        logs: dict[str, list[float]] = history.history if history is not None else {}
        keras_history = {rename(k): [float(v) for v in vals] for k, vals in logs.items() if rename(k)}
        count = len(next(iter(logs.values()), []))
        return kcallbacks.History(keras_history, list(range(initial_epoch, initial_epoch + count)), params, self)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: Any = "auto",
                 sample_weight: Any = None, steps: int | None = None, callbacks: Any = None,
                 return_dict: bool = False) -> Any:
        """Keras's evaluate: [loss, accuracy] (a bare loss without metrics; a dict with return_dict)."""
        compiled = self._require_compiled("evaluate")
        if is_keras_source(x):  # a dataset or generator iterator: its batches, `steps` of them at most
            feed = source_feed(x, y, "evaluate")
            data = source_dataset(self, feed, compiled["objective"], "evaluate", steps)
            batch_size = feed.batch_size
        else:
            check_not_generator(x, "evaluate")
            data = self._dataset(x, y, "evaluate", compiled["objective"])
        start = time.perf_counter()
        scores = engine_evaluate(self, data, batch_size=EVAL_BATCH, objective=compiled["objective"])
        result = _results(scores.loss, scores.accuracy, compiled["metrics"])
        if verbose in (1, "auto"):
            _print_done(len(data), batch_size or 32, time.perf_counter() - start, result)
        return _as_returned(result, return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: Any = "auto", steps: int | None = None,
                callbacks: Any = None) -> np.ndarray:
        """What the last layer outputs for images `x` (N, H, W, C), as a NumPy array (Keras's predict).

        A dataset or generator iterator is predicted in its stored order (`.classes`, `file_paths`),
        even a shuffled one (Keras follows the shuffle, so its predictions do not line up with
        `.classes` unless shuffle=False: a classic confusion-matrix trap); `steps` caps the batches.
        """
        start = time.perf_counter()
        if is_keras_source(x):
            feed = source_feed(x, None, "predict")
            batch_size = feed.batch_size
            out = source_predict(self, feed, steps)
        else:
            check_not_generator(x, "predict")
            out = self._forward_arrays(x, "predict")
        if verbose in (1, "auto"):
            _print_done(len(out), batch_size or 32, time.perf_counter() - start, {})
        return out

    def predict_on_batch(self, x: Any) -> np.ndarray:
        return self._forward_arrays(x, "predict_on_batch")

    def test_on_batch(self, x: Any, y: Any, sample_weight: Any = None, return_dict: bool = False) -> Any:
        return self.evaluate(x, y, verbose=0, return_dict=return_dict)

    def train_on_batch(self, x: Any, y: Any, sample_weight: Any = None, class_weight: dict[int, float] | None = None,
                       return_dict: bool = False) -> Any:
        """One optimizer step on this batch; returns the batch's loss (and accuracy) before the step."""
        compiled = self._require_compiled("train_on_batch")
        data = self._dataset(x, y, "train_on_batch", compiled["objective"])
        objective = compiled["objective"].resolve(self)
        if self._optimizer_state is None:
            trainable = [p for p in self.parameters() if p.requires_grad]
            spec: OptimizerSpec = compiled["optimizer"]
            self._optimizer_state = spec.build(trainable, model_device(self))
        device = model_device(self)
        weights = per_sample_weights(_weights_tensor(sample_weight), _class_weights(class_weight, data), data)
        self.train()
        out = nn.Module.__call__(self, data.images.to(device)).float()
        labels = data.labels.to(device)
        loss = objective.loss(out, labels, None if weights is None else weights.to(device))
        optimizer_step(loss, self._optimizer_state, None, None, compiled["optimizer"])
        self.eval()
        accuracy = int(objective.correct(out.detach(), labels)) / len(labels)
        return _as_returned(_results(float(loss.detach()), accuracy, compiled["metrics"]), return_dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Tensors (N, C, H, W) go through as in any nn.Module; NumPy images (N, H, W, C) as in Keras."""
        if args and is_symbolic(args[0]):  # the functional API: this model as a layer of another
            return super().__call__(*args, **kwargs)
        if args and not isinstance(args[0], torch.Tensor):
            kwargs.pop("training", None)
            if not getattr(self, "built", True):  # Keras builds a model on its first call with data
                self.build(tuple(int(d) for d in np.shape(args[0])[1:]))  # type: ignore[operator]
            out = self._forward_arrays(args[0], "model(x)")  # channels last, as Keras returns it
            return [o.view(KerasArray) for o in out] if isinstance(out, list) else out.view(KerasArray)
        return super().__call__(*args, **kwargs)

    # ------------------------------------------------------------------ saving
    def save(self, filepath: str | Path, overwrite: bool = True, **ignored: Any) -> None:
        """A cnnlab model file at `filepath` (safetensors + JSON, never pickle), which every cnnlab command reads."""
        path = Path(filepath)
        if path.exists() and not overwrite:
            raise CnnlabError(f"save: {path} exists; pass overwrite=True or choose another name")
        hwc = self.require_built("save")  # type: ignore[operator]
        if any(d is None for d in hwc):
            raise CnnlabError(f"save: {self.name} takes images of any size {tuple(hwc)}; a model file records one "
                              f"input size: build the model with input_shape=(H, W, C) to save it")
        outputs = self._num_outputs()
        config = self.compiled["config"] if self.compiled else {}
        save_model(self, path, [str(i) for i in range(max(outputs, 2))], hwc, training_config=config,
                   keep_suffix=True)

    def save_weights(self, filepath: str | Path, overwrite: bool = True) -> None:
        """The weights alone: a safetensors file, or Keras's legacy .h5 layout for a name ending in .h5
        (load them into the same architecture with load_weights)."""
        from safetensors.torch import save_file

        path = Path(filepath)
        if path.exists() and not overwrite:
            raise CnnlabError(f"save_weights: {path} exists; pass overwrite=True or choose another name")
        if path.suffix == ".h5":
            save_h5_weights(self, path)
            return
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))

    def load_weights(self, filepath: str | Path) -> None:
        """Weights written by save_weights (or a cnnlab model file of the same architecture), or Keras's .h5."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if Path(filepath).suffix == ".h5":
            load_h5_weights(self, Path(filepath), "load_weights")
            return

        try:
            self.load_state_dict(load_file(str(filepath)))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CnnlabError(f"load_weights: {filepath} does not hold this model's weights "
                              f"({str(exc).splitlines()[0][:200]})") from None

    # ------------------------------------------------------------------ helpers
    def _num_outputs(self) -> int:
        """Units of the (first) output when it is a vector, else 0."""
        shape = self.outputs[0].shape[1:]  # type: ignore[attr-defined,index]
        return int(shape[0]) if len(shape) == 1 and shape[0] is not None else 0

    def _dataset(self, x: Any, y: Any, where: str, objective: Objective) -> Any:
        if x is None or y is None:
            raise CnnlabError(f"{where}: give images x and labels y as NumPy arrays, or x as a dataset "
                              f"(image_dataset_from_directory) or ImageDataGenerator iterator without y")
        built = getattr(self, "image_shape", None)
        images = images_nchw(x, built, where)
        if built is None:
            self.build(tuple(int(v) for v in np.shape(x)[1:]))  # type: ignore[operator]
        if not rescales_inputs(self):  # a Rescaling layer makes raw 0..255 inputs the right ones
            warn_unscaled(images, self)
        outputs = self._num_outputs() or None
        labels = labels_vector(y, objective.name, outputs, len(images), where)
        return to_dataset(images, labels, outputs, where)

    def _forward_arrays(self, x: Any, where: str) -> np.ndarray:
        hwc = self.require_built(where)  # type: ignore[operator]
        images = images_nchw(x, hwc, where)
        if not rescales_inputs(self) and any(True for _ in self.parameters()):  # a pure preprocessing pipeline
            warn_unscaled(images, self)                                         # takes any pixels
        device, outs = model_device(self), []
        self.eval()
        # Keras's direct call model(x) runs random preprocessing layers (training=True is their default)
        with torch.no_grad(), augmenting(self, where == "model(x)"):
            for start in range(0, len(images), EVAL_BATCH):
                outs.append(keras_layout(nn.Module.__call__(self, images[start:start + EVAL_BATCH].to(device))))
        if isinstance(outs[0], list):  # several outputs (e.g. the tutorials' feature-map model): a list of arrays
            return [np.concatenate(parts) for parts in zip(*outs, strict=True)]  # type: ignore[return-value]
        return np.concatenate(outs)


def _results(loss: float, accuracy: float, metrics: list[str]) -> dict[str, float]:
    """{"loss": ..., and the compiled accuracy metric's name: ...}."""
    return {"loss": loss, **({metrics[0]: accuracy} if metrics else {})}


def _as_returned(result: dict[str, float], return_dict: bool) -> Any:
    """Keras's return value: the dict, else [loss, accuracy], or the bare loss without metrics."""
    if return_dict:
        return result
    return list(result.values()) if len(result) > 1 else result["loss"]


def _weights_tensor(sample_weight: Any) -> torch.Tensor | None:
    return None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))


def _renamer(metric: str | None, keep_lr: bool) -> Any:
    """Engine log names -> Keras's: accuracy as compiled ('accuracy' or 'acc'), lr -> learning_rate.

    Keras logs the learning rate only where a callback changes it (ReduceLROnPlateau, LearningRateScheduler).
    """
    def rename(key: str) -> Any:
        if isinstance(key, dict):
            return {rename(k): v for k, v in key.items() if rename(k)}
        base = key[4:] if key.startswith("val_") else key
        prefix = key[:4] if key.startswith("val_") else ""
        if base == "accuracy":
            return prefix + metric if metric else ""
        if key == "lr":
            return "learning_rate" if keep_lr else ""
        return key
    return rename


def _class_weights(class_weight: dict[int, float] | None, data: Any) -> torch.Tensor | None:
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise CnnlabError(f"class_weight must be a dict {{class index: weight}}; got {type(class_weight).__name__}")
    weights = torch.ones(data.num_classes)
    for cls, w in class_weight.items():
        if not isinstance(cls, (int, np.integer)) or not 0 <= int(cls) < data.num_classes:
            raise CnnlabError(f"class_weight: class {cls!r} is not a class index 0..{data.num_classes - 1}")
        weights[int(cls)] = float(w)
    return weights


def _backup(callback: kcallbacks.BackupAndRestore | None) -> Any:
    if callback is None:
        return None
    from cnnlab.training.checkpoint import Checkpointer

    callback.backup_dir.mkdir(parents=True, exist_ok=True)
    return Checkpointer(callback.backup_dir, resume=callback.existing())


def _describe(value: Any) -> Any:
    """A JSON-ready record of a compile argument (a name, or the object's class and settings)."""
    if isinstance(value, str):
        return value
    config = getattr(value, "get_config", None)
    return {"class": type(value).__name__, **(config() if callable(config) else {})}


def _print_done(n: int, batch_size: int, seconds: float, logs: dict[str, float]) -> None:
    steps = max(1, -(-n // batch_size))
    per_step = seconds / steps
    step_text = f"{per_step * 1000:.0f}ms/step" if per_step >= 1e-3 else f"{per_step * 1e6:.0f}us/step"
    metrics = "".join(f" - {k}: {v:.4f}" for k, v in logs.items())
    print(f"{steps}/{steps} [==============================] - {seconds:.0f}s {step_text}{metrics}")

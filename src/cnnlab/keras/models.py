"""Keras's models: `models.Sequential([...])`, `model.add(...)`, `Model(inputs, outputs)`, `load_model("m.keras")`.

A `Sequential` here is cnnlab's Sequential and a `Model` cnnlab's Functional graph (both
`nn.Module`s every cnnlab command takes), with Keras's model methods (keras/model.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.keras.layers import InputLayer
from cnnlab.keras.losses import resolve_loss
from cnnlab.keras.model import KerasModel
from cnnlab.keras.optimizers import resolve_optimizer
from cnnlab.models import sequential as core
from cnnlab.models.files import load_model as load_cnnlab_model
from cnnlab.models.graph import Functional
from cnnlab.models.symbolic import KerasTensor

__all__ = ["Sequential", "Model", "load_model"]


def _input_shape_of(item: Any) -> tuple[Any, ...] | None:
    """(H, W, C) of an `Input(...)` tensor or an InputLayer given as a Sequential's first element, else None."""
    if isinstance(item, KerasTensor) and item.node is not None and isinstance(item.node.layer, InputLayer):
        return tuple(item.shape[1:])
    if isinstance(item, InputLayer):
        return tuple(item.shape[1:])
    return None


class Sequential(KerasModel, core.Sequential):
    """Keras's Sequential: a list of layers (an `Input(shape=...)` first, or `input_shape=` on the first
    layer), or layers added one by one; built as soon as its input shape is known.

    >>> from cnnlab.keras import layers
    >>> model = Sequential([layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
    ...                     layers.Flatten(), layers.Dense(10, activation="softmax")])
    >>> model.count_params(), model.layers[0].output_shape
    (216650, (None, 26, 26, 32))
    """

    def __init__(self, layers: Sequence[Any] | None = None, name: str | None = None,
                 input_shape: Sequence[int] | None = None, **ignored: Any) -> None:
        layers = list(layers or [])
        if layers and _input_shape_of(layers[0]) is not None:
            input_shape = _input_shape_of(layers.pop(0))
        core.Sequential.__init__(self, [], input_shape=input_shape, name=name)
        for layer in layers:
            self.add(layer)

    def add(self, layer: Any) -> None:
        shape = _input_shape_of(layer)
        if shape is not None:
            if len(self) or self.built:
                raise CnnlabError("Sequential.add: an Input layer must come first")
            self.build(shape)  # type: ignore[arg-type]
            return
        if isinstance(layer, KerasTensor):
            raise CnnlabError(f"Sequential.add takes layers, not a layer's output {layer}; add the layer itself")
        core.Sequential.add(self, layer)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """(None, H, W, C), as Keras gives it."""
        return (None, *self.require_built("input_shape"))

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """The last layer's output shape with the batch axis, as Keras gives it."""
        self.require_built("output_shape")
        return (None, *self.layer_output_shapes()[-1])


class Model(KerasModel, Functional):
    """Keras's functional model: `Model(inputs=inputs, outputs=outputs)` from `Input(...)` and layer calls.

    >>> from cnnlab.keras import layers
    >>> inputs = layers.Input(shape=(32, 32, 3))
    >>> x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    >>> x = layers.Add()([layers.Conv2D(16, 3, padding="same")(x), x])
    >>> model = Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    >>> model.count_params(), model.output_shape
    (2938, (None, 10))
    """

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None, **ignored: Any) -> None:
        if inputs is None or outputs is None:
            raise CnnlabError("Model: give inputs= and outputs=, e.g. Model(inputs=keras.Input(shape=(28, 28, 1)), "
                              "outputs=x) (subclassing keras.Model with a call() method is not supported yet)")
        Functional.__init__(self, inputs, outputs, name=name)

    @property
    def input_shape(self) -> Any:
        """(None, H, W, C), or a list of them for several inputs, as Keras gives it."""
        shapes = [t.shape for t in self.input_tensors]
        return shapes if self.inputs_as_list else shapes[0]

    @property
    def output_shape(self) -> Any:
        shapes = [t.shape for t in self.output_tensors]
        return shapes if self.outputs_as_list else shapes[0]


def load_model(filepath: str | Path, custom_objects: Any = None, compile: bool = True,
               safe_mode: bool = True) -> Any:
    """A model saved with `model.save(...)` (or any cnnlab Sequential model file), compiled as it was saved."""
    model, card = load_cnnlab_model(filepath)
    if isinstance(model, Functional):
        keras_model: Any = Model.from_config(model.get_config())
    elif isinstance(model, core.Sequential):
        keras_model = Sequential.from_config(model.get_config())  # the same layers, with Keras's methods
    else:
        return model  # registry and transfer models: plain cnnlab models
    keras_model.load_state_dict(model.state_dict())
    config = card.training_config
    if compile and config.get("loss") is not None:
        keras_model.compile(optimizer=_rebuild(config.get("optimizer", "rmsprop"), resolve_optimizer),
                            loss=_rebuild(config["loss"], resolve_loss), metrics=config.get("metrics"))
    return keras_model.eval()


def _rebuild(record: Any, resolve: Any) -> Any:
    """A compile argument from its saved record: a name, or {"class": ..., settings}."""
    if isinstance(record, str):
        return record
    from cnnlab.keras import losses, optimizers

    cls = getattr(optimizers, str(record.get("class")), None) or getattr(losses, str(record.get("class")), None)
    if cls is None:
        raise CnnlabError(f"load_model: cannot rebuild {record!r} from the saved compile settings; "
                          f"pass compile=False and compile the model again")
    settings = {k: v for k, v in record.items() if k != "class"}
    return cls(**settings)

"""Functional models: a graph of layer calls, run as one `nn.Module` (Keras's functional API).

    inputs = InputLayer(shape=(32, 32, 3)).output
    x = Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = Add()([Conv2D(16, 3, padding="same")(x), x])
    model = Functional(inputs, Dense(10)(GlobalAveragePooling2D()(y)))

`Functional` walks the recorded calls (models/symbolic.py) back from the outputs once, when it is
made, and keeps a plan: a topological list of (layer, input slots, output slots). Its forward runs
that list; no graph search per batch. Layers are its children under their Keras names, in Keras's
order (deepest first, ties in the order the graph was traversed), so `model.layers`,
`get_weights()`, the summary and the state_dict agree with Keras's. A layer called with
`training=False` (Keras's way to keep a pretrained base's BatchNorm in inference mode) stays in
eval mode whatever mode the model is in. `get_config()` describes the graph as JSON (layers and
calls, never pickle) and `from_config` rebuilds it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.layers import (
    InputLayer, _check_name, _keras_name, _layer_config, any_trainable, call_in_mode, layer_from_config, module_key,
    register_layer, set_trainable,
)
from cnnlab.models.symbolic import KerasTensor, Node, flat_tensors, is_symbolic, keras_order, symbolic_call

__all__ = ["Functional", "map_graph", "ends_in_probabilities"]

Plan = list[tuple[nn.Module, list[int], bool, list[int]]]  # (layer, input slots, called on a list, output slots)


def ends_in_probabilities(module: nn.Module) -> bool:
    """True when `module` ends in a softmax or sigmoid (a layer, or a model whose output layer does)."""
    kind = getattr(module, "output_kind", None)
    if isinstance(kind, str):
        return kind == "probabilities"
    return getattr(module, "activation", None) in ("softmax", "sigmoid") or type(module).__name__ == "Softmax"


def map_graph(inputs: list[KerasTensor], outputs: list[KerasTensor]
              ) -> tuple[list[Node], list[nn.Module], dict[int, int]]:
    """The calls between `inputs` and `outputs` in an order that runs (each after what it reads), the layers
    in Keras's order (by depth from the outputs, deepest first, ties by first visit: Keras 3's map_graph),
    and each call's depth (id(node) -> longest path to an output)."""
    input_ids = {id(t) for t in inputs}
    finished: set[int] = set()
    visiting: set[int] = set()
    ordered: list[Node] = []
    first_visit: dict[int, int] = {}

    def visit(tensor: KerasTensor) -> None:
        node = tensor.node
        if node is None:
            raise CnnlabError("a model output does not come from a layer call on the model's inputs")
        if id(node) in finished:
            return
        if id(node) in visiting:
            raise CnnlabError(f"the graph has a cycle through layer {node.layer_name}")
        first_visit.setdefault(id(node.layer), len(first_visit))
        visiting.add(id(node))
        if id(tensor) not in input_ids:
            if not node.inputs:
                raise CnnlabError(f"graph disconnected: the outputs need input {node.layer_name}, which is not "
                                  f"among the model's inputs; pass it in Model(inputs=[...])")
            for parent in node.inputs:
                visit(parent)
        visiting.discard(id(node))
        finished.add(id(node))
        ordered.append(node)

    for tensor in outputs:
        visit(tensor)
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    layers: dict[int, nn.Module] = {}
    for node in reversed(ordered):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)], node_depth[id(node)] = depth, depth
        layers[id(node.layer)] = node.layer
        for parent in node.parents:
            node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for tensor in inputs:  # an input no output needs is still the model's
        assert tensor.node is not None
        layer = tensor.node.layer
        if id(layer) not in layers:
            layers[id(layer)], layer_depth[id(layer)], first_visit[id(layer)] = layer, 0, -1
            node_depth[id(tensor.node)] = 0
    order = sorted(layers, key=lambda k: (-layer_depth[k], first_visit[k]))
    return ordered, [layers[k] for k in order], node_depth


def _input_tensors(value: Any, what: str) -> list[KerasTensor]:
    if isinstance(value, dict):
        raise CnnlabError(f"Model {what}: give a tensor or a list of tensors (dicts of inputs/outputs are not "
                          f"supported yet)")
    if not is_symbolic(value):
        raise CnnlabError(f"Model {what} must be symbolic tensors from keras.Input(...) and layer calls on it; got "
                          f"{type(value).__name__}")
    tensors = flat_tensors(value)
    return tensors


class Functional(nn.Module):
    """A model from symbolic `inputs` to `outputs` (one tensor or a list each); an `nn.Module` like any other.

    >>> import torch; from cnnlab.models.layers import Conv2D, Dense, GlobalAveragePooling2D
    >>> x = InputLayer(shape=(8, 8, 3)).output
    >>> m = Functional(x, Dense(2)(GlobalAveragePooling2D()(Conv2D(4, 3)(x))))
    >>> [l.name for l in m.layers], m(torch.zeros(1, 3, 8, 8)).shape
    (['input_layer', 'conv2d', 'global_average_pooling2d', 'dense'], torch.Size([1, 2]))
    """

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None) -> None:
        super().__init__()
        self.name = _check_name(name) if name is not None else "functional"
        self.input_tensors = _input_tensors(inputs, "inputs")
        self.output_tensors = _input_tensors(outputs, "outputs")
        self.inputs_as_list = not isinstance(inputs, KerasTensor)
        self.outputs_as_list = not isinstance(outputs, KerasTensor)
        for t in self.input_tensors:
            if t.node is None or not isinstance(t.node.layer, InputLayer):
                raise CnnlabError(f"Model inputs must come from keras.Input(...) (or a model's .input); {t} is the "
                                  f"output of layer {t.name}")
        nodes, layers, self.node_depths = map_graph(self.input_tensors, self.output_tensors)
        self.inbound_nodes: list[Node] = []  # calls of this model as a layer of another
        self._register(layers)
        slots: dict[int, int] = {id(t): i for i, t in enumerate(self.input_tensors)}
        self.nodes = [node for node in nodes if not isinstance(node.layer, InputLayer)]  # in a runnable order
        self.plan: Plan = []
        self.inference_only: list[nn.Module] = []  # called with training=False: always in eval mode
        self.first_output: dict[int, KerasTensor] = {id(t.node.layer): t for t in self.input_tensors if t.node}
        for node in self.nodes:
            for t in node.outputs:
                slots[id(t)] = len(slots)
            self.plan.append((node.layer, [slots[id(t)] for t in node.inputs], node.as_list,
                              [slots[id(t)] for t in node.outputs]))
            self.first_output.setdefault(id(node.layer), node.outputs[0])
            if node.training is False:
                self.inference_only.append(node.layer)
        self.input_slots = [slots[id(t)] for t in self.input_tensors]
        self.output_slots = [slots[id(t)] for t in self.output_tensors]
        self.slot_count = len(slots)
        self.train(self.training)

    def _register(self, layers: list[nn.Module]) -> None:
        """Add the layers as children under their Keras names (unnamed ones named in the order they were called)."""
        taken = {getattr(layer, "name", None) for layer in layers}
        unnamed = [layer for layer in layers if getattr(layer, "name", None) is None]
        first_call = {id(layer): min((n.order for n in getattr(layer, "inbound_nodes", [])), default=0)
                      for layer in unnamed}
        for layer in sorted(unnamed, key=lambda m: first_call[id(m)]):
            base = _keras_name(type(layer).__name__) if not isinstance(layer, InputLayer) else "input_layer"
            name, count = base, 0
            while name in taken:
                count += 1
                name = f"{base}_{count}"
            layer.name = name  # type: ignore[assignment]
            taken.add(name)
        seen: set[str] = set()
        for layer in layers:
            name = str(layer.name)
            if name in seen:
                raise CnnlabError(f"two layers of the model are named {name!r}; layer names in a model must be "
                                  f"unique (rename one with name=...)")
            seen.add(name)
            self.add_module(module_key(name, self), layer)

    # ------------------------------------------------------------------ the model surface
    @property
    def layers(self) -> list[nn.Module]:
        return list(self.children())

    @property
    def input_sample_shapes(self) -> list[tuple[Any, ...]]:
        return [t.sample_shape for t in self.input_tensors]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the (single) image input, when every size is fixed; else None."""
        if len(self.input_tensors) != 1 or len(self.input_tensors[0].sample_shape) != 3:
            return None
        hwc = keras_order(self.input_tensors[0].sample_shape)
        return hwc if all(d is not None for d in hwc) else None  # type: ignore[return-value]

    @property
    def output_kind(self) -> str:
        """'probabilities' when the (first) output comes from a softmax or sigmoid, else 'logits'."""
        node = self.output_tensors[0].node
        return "probabilities" if node is not None and ends_in_probabilities(node.layer) else "logits"

    @property
    def built(self) -> bool:
        return True

    def require_built(self, where: str) -> tuple[Any, ...]:
        """The image input's (H, W, C) (H and W None when the model takes any size)."""
        if len(self.input_tensors) != 1 or len(self.input_tensors[0].sample_shape) != 3:
            raise CnnlabError(f"{where}: {self.name} has {len(self.input_tensors)} inputs of shapes "
                              f"{[t.shape for t in self.input_tensors]}; this works on one image input only")
        return keras_order(self.input_tensors[0].sample_shape)

    @property
    def input(self) -> Any:
        return self.input_tensors if self.inputs_as_list else self.input_tensors[0]

    @property
    def output(self) -> Any:
        return self.output_tensors if self.outputs_as_list else self.output_tensors[0]

    @property
    def inputs(self) -> list[KerasTensor]:
        return list(self.input_tensors)

    @property
    def outputs(self) -> list[KerasTensor]:
        return list(self.output_tensors)

    def layer_output_shapes(self) -> list[Any]:
        """Each layer's output shape for one sample in this graph, as Keras prints it ((H, W, C) or (units,))."""
        return [keras_order(self.layer_output(layer).sample_shape) for layer in self.layers]

    def layer_output(self, layer: nn.Module) -> KerasTensor:
        """`layer`'s output in this model's graph (of its first call here)."""
        if id(layer) not in self.first_output:
            raise CnnlabError(f"layer {getattr(layer, 'name', '?')} is not called in {self.name}")
        return self.first_output[id(layer)]

    @property
    def trainable(self) -> bool:
        return any_trainable(self)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        set_trainable(self, value)

    # ------------------------------------------------------------------ running
    def train(self, mode: bool = True) -> Functional:
        super().train(mode)
        for layer in getattr(self, "inference_only", []):
            layer.train(False)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and is_symbolic(args[0]):  # used as a layer of another functional model
            return symbolic_call(self, args[0], dict(kwargs))
        return call_in_mode(self, nn.Module.__call__, args, kwargs)

    def symbolic_output(self, shapes: Any, tensors: list[KerasTensor]) -> tuple[Any, None]:
        expected = self.input_sample_shapes
        given = [t.sample_shape for t in tensors]
        if len(given) != len(expected) or any(
                len(g) != len(e) or any(d is not None and gd != d for gd, d in zip(g, e, strict=True))
                for g, e in zip(given, expected, strict=False)):
            raise CnnlabError(f"{self.name} takes inputs {[t.shape for t in self.input_tensors]} but is called on "
                              f"{[t.shape for t in tensors]}")
        outs = [t.sample_shape for t in self.output_tensors]
        return (outs if self.outputs_as_list else outs[0]), None

    def forward(self, *xs: Any) -> Any:  # each input (N, C, H, W) -> each output
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)):
            xs = tuple(xs[0])
        if len(xs) != len(self.input_slots):
            raise CnnlabError(f"{self.name} takes {len(self.input_slots)} input(s) but got {len(xs)}")
        values: list[Any] = [None] * self.slot_count
        for slot, x in zip(self.input_slots, xs, strict=True):
            values[slot] = x
        for layer, ins, as_list, outs in self.plan:
            args = [values[i] for i in ins]
            y = layer(args if as_list else args[0])
            if len(outs) == 1:
                values[outs[0]] = y
            else:
                for slot, v in zip(outs, y, strict=True):
                    values[slot] = v
        result = [values[i] for i in self.output_slots]
        return result if self.outputs_as_list else result[0]

    # ------------------------------------------------------------------ saving
    def get_config(self) -> dict[str, Any]:
        """Layers (by name, with their arguments) and calls, in a runnable order: JSON, never pickle."""
        layers = [{**_layer_config(layer), "name": layer.name} for layer in self.layers]
        refs = self.tensor_references()
        calls = [{"layer": node.layer_name, "inputs": [refs[id(t)] for t in node.inputs], "list": node.as_list,
                  "training": node.training} for node in self.nodes]
        return {"name": self.name, "layers": layers, "calls": calls,
                "inputs": [refs[id(t)] for t in self.input_tensors],
                "outputs": [refs[id(t)] for t in self.output_tensors],
                "inputs_as_list": self.inputs_as_list, "outputs_as_list": self.outputs_as_list}

    def tensor_references(self) -> dict[int, list[Any]]:
        """id(tensor) -> [layer name, which call of that layer in this graph, which output] (Keras's
        layer[node][tensor], as the summary's "Connected to" prints it and a saved graph stores it)."""
        refs: dict[int, list[Any]] = {id(t): [t.name, 0, 0] for t in self.input_tensors}
        calls: dict[int, int] = {}
        for node in self.nodes:
            index = calls.get(id(node.layer), 0)
            calls[id(node.layer)] = index + 1
            for t in node.outputs:
                refs[id(t)] = [node.layer_name, index, t.index]
        return refs

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Functional:
        """Rebuild a model from `get_config()`: the layers, then their calls in order."""
        layers: dict[str, nn.Module] = {}
        for entry in config["layers"]:
            layer = layer_from_config({k: v for k, v in entry.items() if k != "name"})
            layer.name = entry["name"]
            if hasattr(layer, "name_given"):
                layer.name_given = True  # type: ignore[assignment]
            layers[entry["name"]] = layer
        made: dict[tuple[str, int], list[KerasTensor]] = {}
        calls_of: dict[str, int] = {}
        for name, layer in layers.items():
            if isinstance(layer, InputLayer):
                made[(name, 0)] = [layer.output]
                calls_of[name] = 1
        for call in config["calls"]:
            layer = layers[call["layer"]]
            args: list[Any] = [made[(r[0], r[1])][r[2]] for r in call["inputs"]]
            out = layer(args if call["list"] else args[0], training=call.get("training"))
            made[(call["layer"], calls_of.get(call["layer"], 0))] = out if isinstance(out, list) else [out]
            calls_of[call["layer"]] = calls_of.get(call["layer"], 0) + 1
        inputs = [made[(r[0], r[1])][r[2]] for r in config["inputs"]]
        outputs = [made[(r[0], r[1])][r[2]] for r in config["outputs"]]
        return cls(inputs if config.get("inputs_as_list") else inputs[0],
                   outputs if config.get("outputs_as_list") else outputs[0], name=config.get("name"))


register_layer(Functional)

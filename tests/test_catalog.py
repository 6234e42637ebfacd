"""cnnlab.catalog against the registries it describes: the same names in the same order, the same records,
and parameter counts that equal the built models' (so `cnnlab models`, which reads the catalog without
torch, can never list a stale number)."""

import pytest
import torch

from cnnlab import CnnlabError
from cnnlab.catalog import (
    DATASET_ALIASES, DATASET_NAMES, MODEL_RECORDS, builtin_dataset, check_dataset_source, resolve_model_path,
)
from cnnlab.cli_model import SUMMARY_BUILD_PARAMS, SUMMARY_BUILD_PIXELS
from cnnlab.data import dataset_names
from cnnlab.models import build_model, count_parameters, model_summary
from cnnlab.models.zoo import MODELS


def test_the_catalog_holds_the_registered_models_in_registry_order() -> None:
    assert MODEL_RECORDS.names() == MODELS.names()


@pytest.mark.parametrize("name", MODEL_RECORDS.names())
def test_each_record_is_its_registry_entry_with_the_built_models_parameter_count(name: str) -> None:
    record, spec = MODEL_RECORDS.get(name), MODELS.get(name)
    assert (spec.default_input_shape, spec.source, spec.description, spec.learning_rate, spec.params) == (
        record.default_input_shape, record.source, record.description, record.learning_rate, record.params)
    with torch.device("meta"):  # counts without memory or time: VGG16 is 134 M parameters
        model = build_model(name)  # the default input shape, 10 classes
    assert count_parameters(model)[0] == record.params


def _built_for_real(name: str) -> bool:
    """Whether `cnnlab summary NAME` builds the model with real weights (cli_model.SUMMARY_BUILD_PARAMS says why)."""
    record = MODEL_RECORDS.get(name)
    height, width, _ = record.default_input_shape
    return record.params <= SUMMARY_BUILD_PARAMS and height * width <= SUMMARY_BUILD_PIXELS


@pytest.mark.parametrize("name", [n for n in MODEL_RECORDS.names() if _built_for_real(n)])
def test_a_summary_built_for_real_equals_the_meta_device_one(name: str) -> None:
    real = build_model(name)
    with torch.device("meta"):
        meta = build_model(name)
        meta_summary = model_summary(meta, meta.image_shape)
    assert str(model_summary(real, real.image_shape)) == str(meta_summary)


def test_the_catalog_names_the_builtin_datasets_in_loader_order() -> None:
    assert dataset_names() == list(DATASET_NAMES)
    assert all(builtin_dataset(alias.upper()) == name for alias, name in DATASET_ALIASES.items())
    assert builtin_dataset(" MNIST ") == "mnist" and builtin_dataset("mnsit") is None


def test_a_dataset_argument_is_a_builtin_name_or_an_existing_path(tmp_path) -> None:
    check_dataset_source("Fashion_MNIST")
    check_dataset_source(str(tmp_path))
    with pytest.raises(CnnlabError, match=r"^unknown dataset 'mnsit'\. Did you mean 'mnist'\? Built-in: digits"):
        check_dataset_source("mnsit")
    with pytest.raises(CnnlabError, match=r"^dataset folder '.*/none' does not exist; give a folder"):
        check_dataset_source(str(tmp_path / "none"))


def test_a_model_argument_resolves_to_its_safetensors_file(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve_model_path(tmp_path) == resolve_model_path(tmp_path / "model.json") == tmp_path / "model.safetensors"
    with pytest.raises(CnnlabError, match="is an ONNX export"):
        resolve_model_path(tmp_path / "model.onnx")
    with pytest.raises(CnnlabError, match="^model not found: .*/run/model.safetensors does not exist"):
        (tmp_path / "run").mkdir()
        resolve_model_path(tmp_path / "run")

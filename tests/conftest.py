"""Every test sees a private data/cache directory, so no test reads or writes the user's real cache."""

import pytest

from cnnlab.config import TrainConfig
from cnnlab.data.cache import DATA_DIR_ENV
from cnnlab.inference import CACHE_DIR_ENV


@pytest.fixture(scope="session")
def private_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cnnlab-data")


@pytest.fixture(autouse=True)
def _private_cache(private_data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(private_data_dir))
    monkeypatch.setenv(CACHE_DIR_ENV, str(private_data_dir / "cache"))  # ONNX twins (cnnlab.inference)


@pytest.fixture(scope="session")
def served_run(private_data_dir):
    """A seed-mnist run trained 1 epoch on the built-in digits (~84% test accuracy): the serve and browser tests."""
    from cnnlab.jobs import train_run

    run = private_data_dir / "serve-digits-run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(private_data_dir))
        train_run(TrainConfig(dataset="digits", model="seed-mnist", epochs=1, seed=0, run_dir=str(run)), verbose=0)
    return run

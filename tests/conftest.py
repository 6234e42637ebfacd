"""Every test sees a private data/cache directory, so no test reads or writes the user's real cache."""

import pytest

from cnnlab.data.cache import DATA_DIR_ENV


@pytest.fixture(scope="session")
def private_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cnnlab-data")


@pytest.fixture(autouse=True)
def _private_cache(private_data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(private_data_dir))

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real painting sets: $ARTMOVE_DATA, default ../shared/data beside the checkout."""
    return Path(os.environ.get("ARTMOVE_DATA", REPO.parent / "shared" / "data"))


def _real_set(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.is_dir():
        if os.environ.get("ARTMOVE_REQUIRE_DATA"):
            pytest.fail(f"real data set required but missing: {path} (set ARTMOVE_DATA)")
        pytest.skip(f"real data set not found: {path} (set ARTMOVE_DATA)")
    return path


@pytest.fixture(scope="session")
def wikipaintings_small() -> Path:
    return _real_set("wikipaintings_small")


@pytest.fixture(scope="session")
def wikiart_sample() -> Path:
    return _real_set("wikiart_sample")


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, its outputs going to tmp_path."""

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
            return compose(config_name="train", overrides=[f"paths.output_dir={tmp_path}", *overrides])

    yield _compose
    GlobalHydra.instance().clear()

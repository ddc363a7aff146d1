from pathlib import Path

import pytest
from hydra.utils import instantiate

import artmove.conf

CONF = Path(artmove.conf.__file__).parent
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
OPTIONS = [
    (group, f.stem)
    for group in GROUPS
    for f in sorted((CONF / group).glob("*.yaml"))
    if not f.stem.startswith("_")
]


def test_conf_has_the_expected_groups():
    assert {"data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment",
            "paths", "hydra", "debug"} <= set(GROUPS)  # fmt: skip


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes(compose_train, group, option, wikipaintings_small):
    overrides = [f"{group}={option}"] if group != "hydra" else []
    if group == "data" and option != "synthetic":
        overrides.append(f"data.root={wikipaintings_small / 'wikipaintings_train' if option == 'folder' else wikipaintings_small}")
    cfg = compose_train(*overrides)
    assert cfg.backbone and 0 <= cfg.unfreeze <= 1
    if group == "data":
        datamodule = instantiate(cfg.data)
        assert len(datamodule.classes) >= 10
    if group == "trainer" and option != "gpu":
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    if group in ("callbacks", "logger"):
        assert all(instantiate(c) for c in (cfg.get(group) or {}).values())


def test_top_level_keys_feed_the_model(compose_train):
    cfg = compose_train("backbone=convnext_tiny", "unfreeze=0.5", "pretrained=false", "weights=/w.pth", "seed=7")
    assert (cfg.model.backbone, cfg.model.unfreeze, cfg.model.pretrained, cfg.model.weights) == (
        "convnext_tiny", 0.5, False, "/w.pth"
    )
    assert cfg.data.source.seed == 7

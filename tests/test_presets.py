"""RASTA's two ResNet50 presets: their settings, the required data path, and a tiny run on the
RASTA sample (wikipaintings_small) with nothing changed but the size."""

import pytest

from artmove.errors import ConfigError
from artmove.train import train
from conftest import LEAN

PRESETS = [("rasta_fc", 0.0, 0), ("rasta_unfreeze20", 0.2, 20)]


@pytest.mark.parametrize("experiment, unfreeze, _", PRESETS)
def test_presets_hold_rastas_settings(compose_train, experiment, unfreeze, _):
    cfg = compose_train(f"experiment={experiment}", "data.root=/data/wikipaintings")
    assert (cfg.backbone, cfg.pretrained, cfg.unfreeze) == ("resnet50.tv_in1k", True, unfreeze)
    assert cfg.data.source._target_.endswith("RastaWikiPaintings")
    assert (cfg.image_size, cfg.data.batch_size, cfg.trainer.max_epochs) == (224, 32, 10)
    assert (cfg.optimizer.opt, cfg.optimizer.lr, cfg.scheduler.sched) == ("rmsprop", 1e-3, "none")
    assert cfg.data.augment.hflip == 0.0 and list(cfg.data.augment.scale) == [1.0, 1.0]


def test_presets_require_the_data_set_path(compose_train):
    with pytest.raises(ConfigError, match=r"data.root=/path"):
        train(compose_train("experiment=rasta_fc"))


@pytest.mark.parametrize("experiment, _, trained_layers", PRESETS)
def test_presets_run_on_the_rasta_sample(compose_train, wikipaintings_small, experiment, _, trained_layers):
    cfg = compose_train(
        f"experiment={experiment}",
        f"data.root={wikipaintings_small}",
        "pretrained=false",
        "debug=limit",
        "image_size=32",
        "data.batch_size=2",
        *LEAN,
    )
    results = train(cfg)
    assert results["num_classes"] == 25 and results["status"] == "ok"
    assert (results["trained_layers"], results["total_layers"]) == (trained_layers, 106)
    assert results["test/num_images"] == 4 and 0 <= results["test/top1"] <= results["test/top5"] <= 1

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import artmove.conf
from artmove.train import build, train
from conftest import compose_config

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


def data_root(option, rasta, wikiart, tmp_path):
    """Where each data= option finds a set: the shared ones, or RASTA's train images laid out as Pandora/CSV."""
    train = sorted((rasta / "wikipaintings_train").glob("*/*.jpg"))
    if option == "pandora":
        for number, name in enumerate(sorted({p.parent.name for p in train}), 1):
            for path in (p for p in train if p.parent.name == name):
                link = tmp_path / "pandora" / f"{number:02d}_{name}" / path.name.split("_")[0] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
        return tmp_path / "pandora"
    if option == "csv":
        (tmp_path / "manifest.csv").write_text("".join(f"{p},{p.parent.name}\n" for p in train), encoding="utf-8")
        return tmp_path / "manifest.csv"
    return {"folder": rasta / "wikipaintings_train", "wikiart": wikiart}.get(option, rasta)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_is_built(compose_train, group, option, wikipaintings_small, wikiart_sample, tmp_path):
    if group == "hydra":  # hydra=default is always in force: compose it with each launcher
        for launcher in sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")):
            import artmove.sweeps  # noqa: F401  (registers the gpu_slots resolver local_gpus uses)

            hydra_cfg = compose_config("train", f"hydra/launcher={launcher}", return_hydra_config=True).hydra
            launcher_settings = OmegaConf.to_container(hydra_cfg.launcher, resolve=True)  # interpolations resolve
            assert launcher_settings["_target_"].startswith("hydra_plugins.") and (launcher == "local_gpus") == ("n_jobs" in launcher_settings)
        return
    overrides = [f"{group}={option}"]
    if group == "data" and option != "synthetic":
        overrides.append(f"data.root={data_root(option, wikipaintings_small, wikiart_sample, tmp_path)}")
    if group == "data":  # the data module on a set of its own layout, screened, with a classifier for it
        images, _, model = build(compose_train(*overrides, "backbone=test_resnet", "pretrained=false"))
        assert len(images.classes) >= 10 and model.hparams.num_classes == len(images.classes)
        assert images.split_sizes()["train"] > 0
    elif group in ("finetune", "features", "optimizer", "scheduler", "model") or option == "demo":
        # Every object of a run built and used for one batch: policy, optimizer, scheduler, feature cache.
        tiny = [] if option == "demo" else ["backbone=test_resnet", "pretrained=false", "image_size=32"]
        tiny += ["unfreeze=0"] if option == "cached" else []
        cfg = compose_train(*overrides, *tiny, "debug=fast_dev_run", "data.source.train_per_class=1",
                            "data.source.val_per_class=1", "data.source.test_per_class=1", "data.source.canvas_size=48",
                            f"++features.cache_dir={tmp_path / 'features'}" if option == "cached" else "seed=42")  # fmt: skip
        assert train(cfg)["status"] == "ok"
    elif group == "formats":  # what the export command writes beside timm's folder (conf/export.yaml)
        formats = compose_config("export", overrides[0], "ckpt_path=run").formats
        assert [type(instantiate(node)).__name__ for node in formats.values()] == {"onnx": ["Onnx"], "torchscript": ["TorchScript"]}.get(option, [])
    elif group == "trainer" and option not in ("gpu", "ddp"):  # GPU-only options
        instantiate(compose_train(*overrides).trainer, logger=False, enable_progress_bar=False)
    elif group in ("callbacks", "logger"):
        assert all(instantiate(c) for c in (compose_train(*overrides).get(group) or {}).values())
    else:
        assert compose_train(*overrides)


def test_top_level_keys_feed_the_objects_built_from_them(compose_train):
    cfg = compose_train("backbone=convnext_atto", "unfreeze=0.5", "pretrained=false", "image_size=64", "seed=7")
    images, _, model = build(cfg)
    assert model.hparams.backbone == "convnext_atto" and model.policy.unfreeze == 0.5
    assert model.hparams.pretrained is False and model.weights_source == "random init"
    assert images.preprocessing["input_size"] == model.preprocessing["input_size"] == [3, 64, 64]
    assert images.source.seed == 7

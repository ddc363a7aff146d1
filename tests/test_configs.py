from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

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


def compose_with_hydra(*overrides: str):
    import artmove.sweeps  # noqa: F401  (registers the gpu_slots resolver local_gpus uses)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes(compose_train, group, option, wikipaintings_small, wikiart_sample, tmp_path):
    if group == "hydra":  # hydra=default is always in force: compose it with each launcher
        for launcher in sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")):
            hydra_cfg = compose_with_hydra(f"hydra/launcher={launcher}").hydra
            launcher_settings = OmegaConf.to_container(hydra_cfg.launcher, resolve=True)  # interpolations resolve
            assert launcher_settings["_target_"].startswith("hydra_plugins.") and (launcher == "local_gpus") == ("n_jobs" in launcher_settings)
        return
    overrides = [f"{group}={option}"]
    if group == "data" and option != "synthetic":
        overrides.append(f"data.root={data_root(option, wikipaintings_small, wikiart_sample, tmp_path)}")
    cfg = compose_train(*overrides)
    assert cfg.backbone and 0 <= cfg.unfreeze <= 1
    if group == "data":
        datamodule = instantiate(cfg.data)
        assert len(datamodule.classes) >= 10
    if group == "trainer" and option not in ("gpu", "ddp"):  # GPU-only options
        instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    if group in ("callbacks", "logger"):
        assert all(instantiate(c) for c in (cfg.get(group) or {}).values())


def test_top_level_keys_feed_the_model(compose_train):
    cfg = compose_train("backbone=convnext_tiny", "unfreeze=0.5", "pretrained=false", "weights=/w.pth", "seed=7")
    assert (cfg.model.backbone, cfg.model.unfreeze, cfg.model.pretrained, cfg.model.weights) == (
        "convnext_tiny", 0.5, False, "/w.pth"
    )
    assert cfg.data.source.seed == 7

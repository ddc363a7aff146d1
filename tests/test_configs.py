from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

import artmove.conf
from artmove.train import build, train
from conftest import LEAN, compose_config

CONF = Path(artmove.conf.__file__).parent
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml")) if not f.stem.startswith("_")]


def test_conf_has_the_expected_groups():
    assert {"data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "paths", "hydra", "debug"} <= set(
        GROUPS
    )


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
    if option == "hf":  # a parquet set in huggan/wikiart's schema, of generated paintings (tests/test_hf_data.py)
        pytest.importorskip("pyarrow")
        from test_hf_data import write_wikiart_parquet

        styles = [f"Style_{k}" for k in range(10)]
        write_wikiart_parquet(tmp_path / "hf", styles=styles, painted=styles)
        return tmp_path / "hf"
    return {"folder": rasta / "wikipaintings_train", "wikiart": wikiart}.get(option, rasta)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_is_built(compose_train, group, option, wikipaintings_small, wikiart_sample, tmp_path):
    if group == "hydra":  # hydra=default is always in force: compose it with each launcher
        for launcher in sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")):
            import artmove.sweeps  # noqa: F401  (registers the gpu_slots resolver local_gpus uses)

            hydra_cfg = compose_config("train", f"hydra/launcher={launcher}", return_hydra_config=True).hydra
            launcher_settings = OmegaConf.to_container(hydra_cfg.launcher, resolve=True)  # interpolations resolve
            assert launcher_settings["_target_"].startswith("hydra_plugins.") and (launcher == "local_gpus") == (
                "n_jobs" in launcher_settings
            )
        return
    overrides = [f"{group}={option}"]
    if group == "data" and option != "synthetic":
        overrides.append(f"data.root={data_root(option, wikipaintings_small, wikiart_sample, tmp_path)}")
        overrides += [f"data.prepared_dir={tmp_path / 'cache'}"] if option == "hf" else []  # its images are written there
    if group == "data":  # the data module on a set of its own layout, screened, with a network for it
        images, _, model = build(compose_train(*overrides, "backbone=test_resnet", "pretrained=false"))
        assert len(images.classes) >= 10 and model.network.num_classes == len(images.classes)
        assert images.split_sizes()["train"] > 0
    elif group in ("finetune", "features", "optimizer", "scheduler", "model", "head") or option == "demo":
        # Every object of a run built and used for one batch: policy, head, optimizer, scheduler, feature cache.
        tiny = [] if option == "demo" else ["backbone=test_resnet", "pretrained=false", "image_size=32"]
        tiny += ["unfreeze=0"] if option == "cached" else []
        cfg = compose_train(
            *overrides,
            *tiny,
            *LEAN,
            "debug=fast_dev_run",
            "data.source.train_per_class=1",
            "data.source.val_per_class=1",
            "data.source.test_per_class=1",
            "data.source.canvas_size=48",
            f"++features.cache_dir={tmp_path / 'features'}" if option == "cached" else "seed=42",
        )
        results = train(cfg)
        assert results["status"] == "ok" and results["test/num_images"] == 10  # one batch of the 10 classes' test images
        assert results[group]["name"] == option if group in ("finetune", "head") else True
    elif group == "formats":  # what the export command writes beside the weights folder (conf/export.yaml)
        formats = compose_config("export", overrides[0], "ckpt_path=run").formats
        expected = {"onnx": ["Onnx"], "torchscript": ["TorchScript"], "torch_export": ["TorchExport"]}.get(option, [])
        assert [type(instantiate(node)).__name__ for node in formats.values()] == expected
    elif group == "trainer" and option not in ("gpu", "ddp"):  # GPU-only options
        cfg = compose_train(*overrides)
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.num_devices == cfg.trainer.devices and type(trainer.strategy).__name__.lower().startswith(
            cfg.trainer.get("strategy", "single")
        )
    elif group in ("callbacks", "logger"):
        nodes = compose_train(*overrides).get(group) or {}
        for name, node in nodes.items():  # a class builds itself; a factory (progress_bar) one of Lightning's kinds
            target, built = get_object(node._target_), instantiate(node)
            assert isinstance(built, target if isinstance(target, type) else (Callback, Logger)), (name, built)
    else:
        assert_applied(compose_train(*overrides), group, option)


def assert_applied(cfg, group: str, option: str) -> None:
    """The option's own settings (not its defaults list) are in the composed config: at the group's node,
    or at the top for a ``@package _global_`` option (a preset's backbone, a debug mode's trainer limits)."""
    text = (CONF / group / f"{option}.yaml").read_text()
    own = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    own.pop("defaults", None)
    node = cfg if "@package _global_" in text else cfg[group]
    for key, value in flatten(own):
        if key.startswith("hydra.") or (isinstance(value, str) and ("${" in value or value == "???")):
            continue
        assert OmegaConf.select(node, key) == value, (group, option, key)


def flatten(settings: dict, prefix: str = ""):
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_top_level_keys_feed_the_objects_built_from_them(compose_train):
    cfg = compose_train("backbone=convnext_atto", "unfreeze=0.5", "pretrained=false", "image_size=64", "seed=7", "head=multiscale")
    images, _, model = build(cfg)
    assert model.network.spec == {
        "backbone": "convnext_atto",
        "num_classes": 10,
        "head": {"name": "multiscale", "stages": 3},
        "drop_rate": 0.0,
        "drop_path_rate": 0.0,
    }
    assert model.finetuning.policy.unfreeze == 0.5 and model.network.weights_source == "random init"
    assert images.preprocessing["input_size"] == model.preprocessing["input_size"] == [3, 64, 64]
    assert images.source.seed == 7

import importlib
import io
import logging
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]

#: Overrides for a test whose subject is not what a run does after fit: the temperature, threshold and prediction sets
#: fitted on validation and written into the checkpoints, and the run's figures (tests/test_trust.py,
#: tests/test_run_outputs.py test those). A run saves a validation pass, two checkpoint rewrites and two figures.
NO_CALIBRATION = ["calibrate=false", "abstain_target=null", "coverage=null"]
LEAN = [*NO_CALIBRATION, "~callbacks.curves", "~callbacks.test_confusion_matrix"]


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


def compose_config(name: str, *overrides: str, return_hydra_config: bool = False):
    """Compose one of the primary configs (train, evaluate, predict, data_tools) with overrides."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="artmove.conf", version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, its outputs going to tmp_path."""
    return lambda *overrides: compose_config("train", f"paths.output_dir={tmp_path}", *overrides)


@dataclass
class Done:
    """How a command ended: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(module_name: str, *overrides: str) -> Done:
    """``python -m <module_name> <overrides>`` in this process: the same Hydra command line, composition,
    logging and exit codes as in a shell, without a new interpreter (seconds each). The root logger's
    handlers are restored afterwards, so none bound to the captured output outlives the call."""
    module = importlib.import_module(module_name)
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level, argv = root.handlers[:], root.level, sys.argv
    sys.argv = [module.__file__, *map(str, overrides)]
    GlobalHydra.instance().clear()
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            module.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        from artmove.runs.lock import release_held

        release_held()  # what the end of the command's process does
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # a later train(cfg) from Python reads no command line of this one
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
    return Done(code, out.getvalue(), err.getvalue())


def classifier(
    backbone: str,
    num_classes: int,
    policy=None,
    image_size: int | None = None,
    head: dict | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **settings,
):
    """An ArtClassifier of a network without pretrained weights, built as a run builds it (preprocessing, policy)."""
    from artmove.finetune import Fraction
    from artmove.models import ArtClassifier, backbone_preprocessing, create_network

    network = create_network(backbone, num_classes, head, pretrained=False, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    return ArtClassifier(
        network,
        policy or Fraction(),
        class_names=[f"class{i}" for i in range(num_classes)],
        preprocessing=backbone_preprocessing(backbone, image_size),
        **settings,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, wikipaintings_small) -> Path:
    """One short tf_efficientnet_lite0 run on wikipaintings_small, trained once per test session.

    Its folder looks like a CLI run's: checkpoints/, csv/, results.json and .hydra/config.yaml.
    """
    from artmove.train import train

    out = tmp_path_factory.mktemp("tiny_rasta_run")
    cfg = compose_config(
        "train",
        f"paths.output_dir={out}",
        "data=rasta",
        f"data.root={wikipaintings_small}",
        "backbone=tf_efficientnet_lite0",
        "unfreeze=0.2",
        "debug=limit",
        "image_size=64",
        "data.batch_size=8",
        "trainer.limit_val_batches=1",
        "test=false",
    )
    train(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what Hydra's CLI writes beside every run
    return out


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory):
    """``tiny_run`` exported to every format through the command line, checked on 12 test paintings:
    (export folder, console output)."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    done = run_cli(
        "artmove.export",
        f"ckpt_path={tiny_run}",
        "formats=[onnx,torchscript,torch_export]",
        f"out={out}",
        "check_images=12",
        f"hydra.run.dir={out.parent / 'log'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def sgd_steps(module, steps: int = 2, image_size: int = 32) -> None:
    """A few SGD steps on random images in training mode (the zero-initialised head passes no
    gradient to the backbone in the first step)."""
    import torch

    module.train()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        loss = module.criterion(module(torch.randn(4, 3, image_size, image_size)), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

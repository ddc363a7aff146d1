"""torchvision's augmentation policies on uint8 tensors (off by default), and logger=tensorboard."""

import numpy as np
import pytest
import torch

from artmove.data import PaintingDataModule
from artmove.data.sources import SyntheticPaintings
from artmove.data.transforms import build_train_transform
from artmove.errors import ConfigError
from artmove.train import train

CONFIG = {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 0.875}
WHOLE = {"scale": (1.0, 1.0), "ratio": (1.5, 1.5), "hflip": 0.0}  # the whole 96 x 64 image, no flip


def stripes() -> np.ndarray:
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    image[:, ::8] = (200, 120, 40)
    return image + 30


def steps(augment) -> list[str]:
    return [type(step).__name__ for step in build_train_transform(CONFIG, augment).transforms]


def test_policies_are_off_by_default_and_added_after_the_crop_and_flips():
    assert steps({}) == ["ToUint8Tensor", "RandomResizedCrop", "RandomHorizontalFlip"]
    assert steps({"rand_augment": {"num_ops": 2, "magnitude": 9}, "random_erasing": 0.25})[-2:] == ["RandAugment", "RandomErasing"]
    assert steps({"trivial_augment": True})[-1] == "TrivialAugmentWide"


def test_policies_change_uint8_images_and_keep_their_type():
    image, plain = stripes(), build_train_transform(CONFIG, WHOLE)(stripes())
    torch.manual_seed(0)
    randomised = [build_train_transform(CONFIG, {**WHOLE, "rand_augment": {"num_ops": 2, "magnitude": 15}})(image) for _ in range(8)]
    assert all(out.dtype == torch.uint8 and out.shape == (3, 64, 64) for out in randomised)
    assert sum(not torch.equal(out, plain) for out in randomised) >= 6  # RandAugment's identity op is 1 of 14
    erased = build_train_transform(CONFIG, {**WHOLE, "random_erasing": 1.0})(image)
    changed = (erased != plain).any(0)
    assert erased.dtype == torch.uint8 and 0.02 * 64 * 64 <= changed.sum() <= 0.33 * 64 * 64  # one box of 2-33 % of the area
    assert (erased[:, changed] == 0).all()  # erased to 0, the uint8 default value


def test_bad_policy_settings_fail_when_the_data_module_is_built():
    synthetic = lambda: SyntheticPaintings(1, 1, 1, 32)  # noqa: E731
    with pytest.raises(ConfigError, match="choose one policy"):
        PaintingDataModule(synthetic, augment={"rand_augment": {"magnitude": 9}, "trivial_augment": True})
    with pytest.raises(ConfigError, match="rand_augment=9: give RandAugment's settings"):
        PaintingDataModule(synthetic, augment={"rand_augment": 9})
    with pytest.raises(ConfigError, match=r"random_erasing=1.5"):
        PaintingDataModule(synthetic, augment={"random_erasing": 1.5})


def test_a_run_with_the_policies_logs_to_tensorboard(compose_train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = train(
        compose_train(
            "data=synthetic",
            "data.source.train_per_class=2",
            "data.source.val_per_class=1",
            "data.source.test_per_class=1",
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=32",
            "trainer.max_epochs=1",
            "data.batch_size=4",
            "data.num_workers=0",
            "logger=tensorboard",
            "data.augment.rand_augment={num_ops: 2, magnitude: 9}",
            "data.augment.random_erasing=0.5",
        )
    )
    assert results["status"] == "ok"
    scalars = {}
    for events in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):  # one file for fit, one for test
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        scalars.update({tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]})
    assert {"val/top1", "train/loss_epoch", "test/top1"} <= set(scalars)
    assert scalars["val/top1"] == [pytest.approx(results["best_val/top1"])]
    assert scalars["test/top1"] == [pytest.approx(results["test/top1"])]
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # beside the CSV logger, not instead of it

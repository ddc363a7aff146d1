"""The train transform on uint8 tensors, normalised on the device, against timm's float pipeline."""

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pytorch_lightning import seed_everything
from timm.data import create_transform

from artmove.data import PaintingDataModule
from artmove.data.images import UnreadableImageError, load_array, load_image
from artmove.data.prepared import write_resized
from artmove.data.sources import SyntheticPaintings
from artmove.data.transforms import RandomResizedCrop, build_eval_transform, build_train_transform, normalize_uint8

CONFIG = {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "crop_pct": 0.875}


def painting(width=180, height=120, seed=0) -> Image.Image:
    """Smooth colour gradients plus texture: resampling differences show, but stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def test_train_transform_gives_uint8_from_pil_images_and_cache_arrays_alike():
    image = painting()
    transform = build_train_transform(CONFIG)
    seed_everything(3)
    from_pil = transform(image)
    seed_everything(3)
    from_array = transform(np.array(image))
    assert from_pil.dtype == torch.uint8 and from_pil.shape == (3, 64, 64)
    assert torch.equal(from_pil, from_array)


def test_train_transform_matches_timms_float_pipeline_up_to_resampling():
    """Whole image, no flip: the same resize as timm's PIL pipeline to within one grey level (uint8 rounding)."""
    image = painting()
    whole = {"scale": (1.0, 1.0), "ratio": (1.5, 1.5), "hflip": 0.0}
    ours = normalize_uint8(build_train_transform(CONFIG, whole)(image)[None], CONFIG["mean"], CONFIG["std"])[0]
    timm_transform = create_transform(
        input_size=(3, 64, 64),
        is_training=True,
        interpolation="bicubic",
        mean=tuple(CONFIG["mean"]),
        std=tuple(CONFIG["std"]),
        scale=whole["scale"],
        ratio=whole["ratio"],
        hflip=0.0,
        color_jitter=None,
    )
    reference = timm_transform(image)
    in_grey_levels = (ours - reference).abs() * torch.tensor(CONFIG["std"]).view(3, 1, 1) * 255
    assert in_grey_levels.mean() < 0.05 and in_grey_levels.max() <= 1.01  # rounding to uint8 at most


def test_random_crops_keep_to_the_scale_and_ratio_ranges_like_torchvision():
    crop = RandomResizedCrop((32, 32), scale=(0.2, 0.6), ratio=(0.75, 1.3333), interpolation="bilinear")
    seed_everything(0)
    boxes = [crop.crop_box(300, 400) for _ in range(2000)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 300 - h and 0 <= left <= 400 - w
        assert 0.19 <= h * w / 120_000 <= 0.61 and 0.74 <= w / h <= 1.35
    areas = sorted(h * w / 120_000 for _, _, h, w in boxes)
    assert abs(areas[len(areas) // 2] - 0.4) < 0.02  # uniform in area, as torchvision draws it
    log_ratios = [math.log(w / h) for _, _, h, w in boxes]
    assert abs(sum(log_ratios) / len(log_ratios)) < 0.02  # log-uniform ratio: centred on 1
    # No crop of half a 10 x 1000 strip fits a 3/4..4/3 ratio: torchvision's fallback, a centre crop.
    fallback = torchvision.transforms.RandomResizedCrop.get_params(torch.zeros(1, 10, 1000), [0.5, 1.0], [0.75, 1.3333])
    assert RandomResizedCrop((8, 8), (0.5, 1.0), (0.75, 1.3333), "bicubic").crop_box(10, 1000) == tuple(fallback)


def test_flips_and_colour_jitter_follow_the_augment_settings():
    image = np.array(painting())
    flipped = build_train_transform(CONFIG, {"scale": (1.0, 1.0), "ratio": (1.5, 1.5), "hflip": 1.0})(image)
    kept = build_train_transform(CONFIG, {"scale": (1.0, 1.0), "ratio": (1.5, 1.5), "hflip": 0.0})(image)
    assert torch.equal(flipped, kept.flip(-1))
    steps = [type(step).__name__ for step in build_train_transform(CONFIG, {"color_jitter": 0.4}).transforms]
    assert steps == ["ToUint8Tensor", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]


def test_the_datamodule_normalises_uint8_batches_on_the_device_and_leaves_float_ones():
    datamodule = PaintingDataModule(lambda: SyntheticPaintings(2, 1, 1, 32), CONFIG, num_workers=0)
    batch, labels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8), torch.tensor([0, 1])
    images, _ = datamodule.on_after_batch_transfer((batch, labels), 0)
    expected = (batch.float() / 255 - torch.tensor(CONFIG["mean"]).view(1, 3, 1, 1)) / torch.tensor(CONFIG["std"]).view(1, 3, 1, 1)
    assert images.dtype == torch.float32 and torch.allclose(images, expected, atol=1e-5)
    evaluated = torch.randn(2, 3, 8, 8)
    assert datamodule.on_after_batch_transfer((evaluated, labels), 0)[0] is evaluated


def test_eval_transform_reads_cache_arrays_and_has_a_stable_repr(tmp_path):
    source, copy = tmp_path / "p.jpg", tmp_path / "p.npy"
    painting(400, 300).save(source)
    write_resized(source, copy, 80)
    array = load_image(copy)
    assert isinstance(array, np.ndarray) and array.shape == (80, 107, 3) and array.dtype == np.uint8
    evaluation = build_eval_transform(CONFIG)
    assert torch.equal(evaluation(array), evaluation(Image.fromarray(array)))
    assert " at 0x" not in repr(evaluation) + repr(build_train_transform(CONFIG))  # reprs key the feature cache


@pytest.mark.parametrize("content", [b"", b"not numpy", "float"])
def test_a_broken_cache_array_names_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "copy.npy"
    if content == "float":
        np.save(path, np.zeros((4, 4, 3), dtype=np.float32))
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableImageError, match=r"copy\.npy.*run prepare again"):
        load_array(path)

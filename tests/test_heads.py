"""Classifier heads (head=linear|multiscale|gram): shapes, what trains under each policy, the feature
cache, and runs through the command line that reload from their checkpoint."""

import json
import subprocess
import sys

import pytest
import torch

from artmove.errors import ConfigError
from artmove.finetune import Discriminative, Fraction, Gradual, Stages
from artmove.models.heads import GramHead, GramLinear, LinearHead, MultiscaleHead, StageNormLinear
from conftest import classifier, sgd_steps

TINY = ["backbone=test_resnet", "pretrained=false", "image_size=32", "data.batch_size=4", "data.num_workers=0",
        "data.source.train_per_class=2", "data.source.val_per_class=1", "data.source.test_per_class=1",
        "data.source.canvas_size=48", "trainer.accelerator=cpu"]  # fmt: skip
POLICIES = {
    "fraction=0": lambda: Fraction(0),
    "fraction=0.2": lambda: Fraction(0.2),
    "stages=1": lambda: Stages("test_resnet", 1),
    "gradual": lambda: Gradual(0.5),
    "discriminative": lambda: Discriminative(1.0),
}


def test_multiscale_pools_the_last_stages_and_starts_at_zero():
    model = classifier("test_resnet", 5, head=MultiscaleHead(stages=3), image_size=32).eval()
    head = model.model.get_classifier()
    assert isinstance(head, StageNormLinear)
    # test_resnet's layer2, layer3 and final (layer4) channels.
    assert head.channels == [48, 192, 96]
    images = torch.randn(2, 3, 32, 32)
    assert model.head.features(model.model, images).shape == (2, 48 + 192 + 96)
    assert torch.equal(model(images), torch.zeros(2, 5))  # zero-initialised output layer: uniform predictions


def test_gram_reads_the_upper_triangle_of_the_reduced_channels():
    module = GramLinear(in_channels=6, channels=4, num_classes=3)
    assert module.fc.in_features == 4 * 5 // 2
    with torch.no_grad():
        module.reduce.weight.copy_(torch.eye(4, 6)[:, :, None, None])
        module.reduce.bias.zero_()
    feature_map = torch.zeros(1, 6, 1, 2)
    feature_map[0, 0] = torch.tensor([1.0, 1.0])  # channel 0 only: Gram[0, 0] = 1, everything else 0
    expected = torch.zeros(1, 10)
    expected[0, 0] = 1.0
    assert torch.allclose(module.pooled(feature_map), expected, atol=1e-2)
    normalised = module.norm(module.pooled(feature_map))  # entries of unit variance, not of a unit vector
    assert torch.allclose(normalised.std(dim=1, unbiased=False), torch.ones(1), atol=1e-3)
    model = classifier("tf_efficientnet_lite0", 7, head=GramHead(channels=8), image_size=64).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("head", [MultiscaleHead, GramHead])
def test_a_new_head_always_trains_under_every_policy(policy, head):
    model = classifier("test_resnet", 3, POLICIES[policy](), image_size=32, head=head())
    names = {name for name, _ in model.model.get_classifier().named_parameters()}
    head_params = {f"fc.{name}" for name in names}
    assert set(model.plan.head) == head_params
    assert all(p.requires_grad for n, p in model.model.named_parameters() if n in head_params)  # from the first step
    optimizer = model.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for n, p in model.model.named_parameters() if n in head_params)
    before = {n: p.detach().clone() for n, p in model.model.named_parameters() if n in head_params}
    sgd_steps(model, steps=3)
    changed = {n for n, p in model.model.named_parameters() if n in head_params and not torch.equal(p, before[n])}
    assert changed == head_params


def test_settings_are_checked_and_two_classifiers_are_refused():
    with pytest.raises(ConfigError, match="head.stages"):
        MultiscaleHead(stages=6)
    with pytest.raises(ConfigError, match="head.channels"):
        GramHead(channels=1000)
    with pytest.raises(ConfigError, match="replaces one classifier"):
        classifier("deit_tiny_distilled_patch16_224", 3, head=MultiscaleHead())
    assert LinearHead().cache_tag is None and MultiscaleHead(2).cache_tag != MultiscaleHead(3).cache_tag


def run_module(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("head", ["multiscale", "gram"])
def test_fast_dev_run_for_each_head(head, tmp_path):
    done = run_module("artmove.train", f"head={head}", *TINY, "debug=fast_dev_run", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["test/num_images"] == 4  # one batch


@pytest.mark.slow
@pytest.mark.parametrize("head", ["multiscale", "gram"])
def test_a_run_with_a_new_head_reloads_for_evaluation(head, tmp_path):
    run = tmp_path / "run"
    done = run_module("artmove.train", f"head={head}", *TINY, "trainer.max_epochs=1", "callbacks=default",
                      f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((run / "results.json").read_text())
    checkpoint = torch.load(trained["best_checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["head"]["_target_"].endswith({"multiscale": "MultiscaleHead", "gram": "GramHead"}[head])
    done = run_module("artmove.evaluate", f"ckpt_path={trained['best_checkpoint']}", "num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["test/num_images"] == 10
    for metric in ("test/top1", "test/top3", "test/top5"):  # the same network back from the checkpoint
        assert evaluated[metric] == pytest.approx(trained[metric]), metric


@pytest.mark.slow
def test_multiscale_trains_on_cached_stage_features_and_gram_is_refused(tmp_path):
    cache = f"features.cache_dir={tmp_path / 'cache'}"
    done = run_module("artmove.train", "head=multiscale", "unfreeze=0", "features=cached", cache, *TINY,
                      "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    entries = list((tmp_path / "cache" / "test_resnet").glob("*.pt"))
    assert len(entries) == 3
    assert torch.load(entries[0], weights_only=True)["features"].shape[1] == 48 + 192 + 96  # the three pooled stages
    done = run_module("artmove.train", "head=gram", "unfreeze=0", "features=cached", cache, *TINY,
                      f"hydra.run.dir={tmp_path / 'gram'}")  # fmt: skip
    assert done.returncode == 2
    assert "features=cached keeps pooled vectors, and head=gram" in done.stderr


def test_flip_tta_averages_each_painting_with_its_mirror_in_validation_and_test(monkeypatch):
    model = classifier("test_resnet", 3, image_size=32, flip_tta=True).eval()
    torch.nn.init.normal_(model.model.get_classifier().weight)  # not the zero start: the two views differ
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    monkeypatch.setattr(model, "log_dict", lambda *a, **k: None)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        plain, mirrored = model(images), model(images.flip(-1))
        assert not torch.allclose(plain, mirrored)
        for stage, metrics in (("val", model.val_metrics), ("test", model.test_metrics)):
            loss = model._step((images, labels), metrics, stage)
            assert torch.allclose(loss, model.criterion((plain + mirrored) / 2, labels))
    with pytest.raises(ConfigError, match="model.flip_tta='yes'"):
        classifier("test_resnet", 3, image_size=32, flip_tta="yes")

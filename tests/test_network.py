"""One network (a timm backbone and a head as one module, timm's contract) for every head: shapes, what
trains under each policy, the feature cache, Grad-CAM, rebuilding from a checkpoint (format 2 and the
format-1 checkpoints of earlier artmove), and runs through the command line."""

import json

import pytest
import torch

from artmove.errors import ConfigError
from artmove.evaluation.gradcam import grad_cam
from artmove.finetune import Discriminative, Fraction, Gradual, Stages
from artmove.models import create_network, load_trained
from artmove.models.heads import GramHead
from conftest import LEAN, classifier, run_cli, sgd_steps

TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.source.train_per_class=2",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=48",
    "trainer.accelerator=cpu",
    *LEAN,
]
HEADS = [{"name": "linear"}, {"name": "multiscale", "stages": 3}, {"name": "gram", "channels": 8}]
POLICIES = {
    "fraction=0": lambda: Fraction(0),
    "fraction=0.2": lambda: Fraction(0.2),
    "stages=1": lambda: Stages("test_resnet", 1),
    "gradual": lambda: Gradual(0.5),
    "discriminative": lambda: Discriminative(1.0),
}


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h["name"])
def test_every_head_is_one_module_with_timms_contract(head):
    network = create_network("test_resnet", 5, head, pretrained=False).eval()
    for parameter in network.head.parameters():  # away from the zero start, so that the paths below differ
        torch.nn.init.normal_(parameter, std=0.1)
    images = torch.randn(2, 3, 32, 32)
    features = network.forward_features(images)
    logits = network.forward_head(features)
    assert logits.shape == (2, 5) and torch.allclose(network(images), logits)
    assert network.forward_head(features, pre_logits=True).ndim == 2
    assert {name.split(".")[0] for name, _ in network.named_parameters()} == {"backbone", "head"}
    rebuilt = create_network(**network.spec, pretrained=False).eval()
    rebuilt.load_state_dict(network.state_dict())  # the spec rebuilds it exactly
    assert torch.equal(rebuilt(images), logits)
    cams = grad_cam(network, images, logits.argmax(1))
    assert cams.shape == (2, 32, 32) and bool(torch.isfinite(cams).all()) and 0 <= float(cams.min()) <= float(cams.max()) <= 1


def test_multiscale_pools_the_last_stages_and_starts_at_zero():
    network = create_network("test_resnet", 5, {"name": "multiscale", "stages": 3}, pretrained=False).eval()
    assert network.head.channels == [48, 192, 96]  # test_resnet's layer2, layer3 and final (layer4) channels
    images = torch.randn(2, 3, 32, 32)
    assert network.pooled(images).shape == (2, 48 + 192 + 96)
    assert torch.equal(network(images), torch.zeros(2, 5))  # zero-initialised output layer: uniform predictions


def test_gram_reads_the_upper_triangle_of_the_reduced_channels():
    backbone = torch.nn.Module()
    backbone.num_features = 6
    head = GramHead(backbone, num_classes=3, channels=4)
    assert head.fc.in_features == 4 * 5 // 2
    with torch.no_grad():
        head.reduce.weight.copy_(torch.eye(4, 6)[:, :, None, None])
        head.reduce.bias.zero_()
    feature_map = torch.zeros(1, 6, 1, 2)
    feature_map[0, 0] = torch.tensor([1.0, 1.0])  # channel 0 only: Gram[0, 0] = 1, everything else 0
    pooled = head.classify(feature_map, pre_logits=True)  # signed sqrt, then LayerNorm: entries of unit variance
    assert pooled.shape == (1, 10) and int(pooled.argmax()) == 0
    assert torch.allclose(pooled.std(dim=1, unbiased=False), torch.ones(1), atol=1e-3)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("head", HEADS[1:], ids=lambda h: h["name"])
def test_a_head_always_trains_under_every_policy(policy, head):
    model = classifier("test_resnet", 3, POLICIES[policy](), image_size=32, head=head)
    head_params = {f"head.{name}" for name, _ in model.network.head.named_parameters()}
    assert set(model.finetuning.plan.head) == head_params
    named = dict(model.network.named_parameters())
    assert all(named[n].requires_grad for n in head_params)  # from the first step
    optimizer = model.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(named[n]) in optimized for n in head_params)
    before = {n: named[n].detach().clone() for n in head_params}
    sgd_steps(model, steps=3)
    changed = {n for n in head_params if not torch.equal(named[n], before[n])}
    assert changed == head_params


def test_settings_are_checked_before_weights_load():
    with pytest.raises(ConfigError, match=r"head.stages=6: give 2, 3 or 4"):
        create_network("test_resnet", 3, {"name": "multiscale", "stages": 6}, pretrained=False)
    with pytest.raises(ConfigError, match=r"head.channels"):
        create_network("test_resnet", 3, {"name": "gram", "channels": 1000}, pretrained=False)
    with pytest.raises(ConfigError, match=r"head.size: head multiscale has no such setting; its settings: stages\."):
        create_network("test_resnet", 3, {"name": "multiscale", "size": 2}, pretrained=False)
    with pytest.raises(ConfigError, match=r"head.name='pathlib.Path.write_text': artmove has no head of that name"):
        create_network("test_resnet", 3, {"name": "pathlib.Path.write_text"}, pretrained=False)
    with pytest.raises(ConfigError, match=r"network.drop_rate=1.5"):
        create_network("test_resnet", 3, drop_rate=1.5, pretrained=False)


def test_flip_tta_averages_each_painting_with_its_mirror_in_validation_and_test(monkeypatch):
    model = classifier("test_resnet", 3, image_size=32, flip_tta=True).eval()
    torch.nn.init.normal_(model.network.head.fc.weight)  # not the zero start: the two views differ
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    monkeypatch.setattr(model, "log_dict", lambda *a, **k: None)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        plain, mirrored = model(images), model(images.flip(-1))
        assert not torch.allclose(plain, mirrored)
        for stage, metrics in (("val", model.val_metrics), ("test", model.test_metrics)):
            loss, logits = model._step((images, labels), metrics, stage)
            assert torch.allclose(logits, (plain + mirrored) / 2) and torch.allclose(loss, model.criterion(logits, labels))
        assert model.test_step((images, labels), 0)["logits"].shape == (4, 3)  # one row per painting
    with pytest.raises(ConfigError, match=r"model.flip_tta='yes'"):
        classifier("test_resnet", 3, image_size=32, flip_tta="yes")


def format1_checkpoint(model, head_target: str, classifier_name: str = "fc") -> dict:
    """What artmove before the one-network redesign wrote: ``model.<timm keys>``, the head under timm's
    classifier name, hyper-parameters naming classes by ``_target_``."""
    state = {}
    for key, value in model.network.state_dict().items():
        rest = key.split(".", 1)[1]
        if key.startswith("head."):
            rest = rest.removeprefix("fc.") if head_target.endswith("LinearHead") else rest
            state[f"model.{classifier_name}.{rest}"] = value
        else:
            state[f"model.{rest}"] = value
    spec = model.network.spec
    head = {key: value for key, value in spec["head"].items() if key != "name"}
    hparams = {
        "backbone": spec["backbone"],
        "num_classes": spec["num_classes"],
        "class_names": model.hparams.class_names,
        "preprocessing": model.preprocessing,
        "head": {"_target_": head_target, **head},
        "finetune": {"_target_": "artmove.finetune.policies.Fraction", "unfreeze": 0.2},
        "drop_rate": 0.0,
    }
    return {"state_dict": state, "hyper_parameters": hparams, "pretrained_cfg": None}


@pytest.mark.parametrize("head, target", [({"name": "linear"}, "LinearHead"), ({"name": "multiscale", "stages": 2}, "MultiscaleHead")])
def test_a_checkpoint_of_an_earlier_artmove_loads_to_the_same_predictions(tmp_path, head, target):
    model = classifier("test_resnet", 4, image_size=32, head=head).eval()
    for parameter in model.network.head.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    path = tmp_path / "format1.ckpt"
    torch.save(format1_checkpoint(model, f"artmove.models.heads.{target}"), path)
    trained = load_trained(path)
    images = torch.randn(3, 3, 32, 32)
    assert trained.network.spec["head"] == model.network.spec["head"] and trained.finetune == {"name": "fraction", "unfreeze": 0.2}
    assert torch.equal(trained.network(images), model.network(images))
    foreign = format1_checkpoint(model, "numpy.load")
    torch.save(foreign, path)
    with pytest.raises(ConfigError, match=r"names the head 'numpy.load', which is not one of artmove's"):
        load_trained(path)


@pytest.mark.parametrize("head", ["multiscale", "gram"])
def test_a_run_with_each_head_through_the_command_line(head, tmp_path):
    done = run_cli("artmove.train", f"head={head}", *TINY, "debug=fast_dev_run", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["test/num_images"] == 4 and results["head"]["name"] == head


@pytest.mark.slow
@pytest.mark.parametrize("head", ["multiscale", "gram"])
def test_a_run_with_a_new_head_reloads_for_evaluation(head, tmp_path):
    run = tmp_path / "run"
    done = run_cli("artmove.train", f"head={head}", *TINY, "trainer.max_epochs=1", "callbacks=default", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((run / "results.json").read_text())
    checkpoint = torch.load(run / trained["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["artmove"]["network"]["head"]["name"] == head
    done = run_cli(
        "artmove.evaluate", f"ckpt_path={run / trained['best_checkpoint']}", "num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["test/num_images"] == 10
    for metric in ("test/top1", "test/top3", "test/top5"):  # the same network back from the checkpoint
        assert evaluated[metric] == pytest.approx(trained[metric]), metric


def test_multiscale_trains_on_cached_stage_features_and_gram_is_refused(tmp_path):
    cache = f"features.cache_dir={tmp_path / 'cache'}"
    done = run_cli(
        "artmove.train",
        "head=multiscale",
        "unfreeze=0",
        "features=cached",
        cache,
        *TINY,
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    entries = list((tmp_path / "cache" / "test_resnet").glob("*.pt"))
    assert len(entries) == 3
    assert torch.load(entries[0], weights_only=True)["features"].shape[1] == 48 + 192 + 96  # the three pooled stages
    done = run_cli("artmove.train", "head=gram", "unfreeze=0", "features=cached", cache, *TINY, f"hydra.run.dir={tmp_path / 'gram'}")
    assert done.returncode == 2
    assert "features=cached keeps pooled vectors, and head=gram" in done.stderr

import pytest
import torch

from artmove.errors import ConfigError
from artmove.finetune import Fraction
from artmove.finetune.layers import plan_unfreeze
from artmove.models import create_network
from conftest import classifier, sgd_steps


def trainable_prefixes(network: torch.nn.Module) -> set[str]:
    """``layer4``, ``head``: the backbone's top-level modules (and the head) with trainable parameters."""
    return {name.removeprefix("backbone.").split(".")[0] for name, p in network.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def resnet50_classifiers():
    return {fraction: classifier("resnet50", 7, Fraction(fraction), image_size=64) for fraction in (0.0, 0.2, 1.0)}


def test_resnet50_head_only_layer4_or_everything(resnet50_classifiers):
    head_only, top20, everything = (resnet50_classifiers[f].network for f in (0.0, 0.2, 1.0))
    assert trainable_prefixes(head_only) == {"head"}
    assert trainable_prefixes(top20) == {"layer4", "head"}
    assert all(p.requires_grad for n, p in top20.named_parameters() if n.startswith("backbone.layer4"))
    assert all(p.requires_grad for p in everything.parameters())


def test_resnet50_unfreeze_counts_rasta_last_20_layers():
    plan = plan_unfreeze(create_network("resnet50", 25, pretrained=False), 0.2)
    assert plan.total_layers == 106  # conv/bn pairs of the stem and 16 bottlenecks, head excluded
    assert plan.trained_layers == 20
    assert plan.trainable_modules() == ["layer4.0", "layer4.1", "layer4.2", "head"]


@pytest.mark.parametrize("fraction, layers", [(0.01, 0), (0.05, 6), (0.5, 50)])
def test_fraction_snaps_to_nearest_block_boundary(fraction, layers):
    plan = plan_unfreeze(create_network("resnet50", 3, pretrained=False), fraction)
    assert plan.trained_layers == layers


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True, "0.2"])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(ConfigError, match=r"must be a number in \[0, 1\]"):
        Fraction(fraction)


def test_optimizer_holds_exactly_the_trainable_parameters(resnet50_classifiers):
    module = resnet50_classifiers[0.2]
    module.hparams.optimizer = {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05}
    module.hparams.scheduler = {"sched": "none"}
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    assert len(trainable) == sum(1 for n, _ in module.network.named_parameters() if n.startswith(("backbone.layer4", "head")))


def test_frozen_norm_statistics_do_not_change_during_training(resnet50_classifiers):
    module = resnet50_classifiers[0.2]
    frozen_bn, trained_bn = module.network.backbone.layer3[0].bn1, module.network.backbone.layer4[0].bn1
    before_frozen = frozen_bn.running_mean.clone()
    before_trained = trained_bn.running_mean.clone()
    module.train()
    assert not frozen_bn.training and trained_bn.training
    sgd_steps(module, image_size=64)
    assert torch.equal(frozen_bn.running_mean, before_frozen)
    assert not torch.equal(trained_bn.running_mean, before_trained)


@pytest.mark.parametrize("backbone", ["deit_tiny_distilled_patch16_224", "levit_128s"])
def test_a_model_with_two_timm_classifiers_gets_one_head_that_learns(backbone):
    """Distilled DeiT and LeViT have two classifiers in timm; the network reads the backbone's pooled
    tokens (averaged, as timm averages the two heads' logits) with one fresh, zero-initialised head."""
    model = classifier(backbone, 4, Fraction(0.0))
    trainable = {name for name, p in model.network.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}
    assert not model.network.head.fc.weight.any()
    model.train()
    model.criterion(model(torch.randn(2, 3, 224, 224)), torch.tensor([0, 1])).backward()
    assert model.network.head.fc.weight.grad.abs().sum() > 0

import pytest
import timm
import torch

from artmove.errors import ConfigError
from artmove.features import FeatureDataModule
from artmove.finetune import Fraction
from artmove.finetune.layers import classifier_heads, plan_unfreeze
from conftest import classifier, sgd_steps


def trainable_prefixes(model: torch.nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def resnet50_classifiers():
    return {
        fraction: classifier("resnet50", 7, Fraction(fraction), image_size=64)
        for fraction in (0.0, 0.2, 1.0)
    }


def test_resnet50_head_only_layer4_or_everything(resnet50_classifiers):
    head_only, top20, everything = (resnet50_classifiers[f].model for f in (0.0, 0.2, 1.0))
    assert trainable_prefixes(head_only) == {"fc"}
    assert trainable_prefixes(top20) == {"layer4", "fc"}
    assert all(p.requires_grad for n, p in top20.named_parameters() if n.startswith("layer4"))
    assert all(p.requires_grad for p in everything.parameters())


def test_resnet50_unfreeze_counts_rasta_last_20_layers():
    plan = plan_unfreeze(timm.create_model("resnet50", num_classes=25), 0.2)
    assert plan.total_layers == 106  # conv/bn pairs of the stem and 16 bottlenecks, head excluded
    assert plan.trained_layers == 20
    assert plan.trainable_modules() == ["layer4.0", "layer4.1", "layer4.2", "fc"]


@pytest.mark.parametrize("fraction, layers", [(0.01, 0), (0.05, 6), (0.5, 50)])
def test_fraction_snaps_to_nearest_block_boundary(fraction, layers):
    plan = plan_unfreeze(timm.create_model("resnet50", num_classes=3), fraction)
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
    assert len(trainable) == sum(1 for n, _ in module.model.named_parameters() if n.startswith(("layer4", "fc")))


def test_frozen_norm_statistics_do_not_change_during_training(resnet50_classifiers):
    module = resnet50_classifiers[0.2]
    frozen_bn, trained_bn = module.model.layer3[0].bn1, module.model.layer4[0].bn1
    before_frozen = frozen_bn.running_mean.clone()
    before_trained = trained_bn.running_mean.clone()
    module.train()
    assert not frozen_bn.training and trained_bn.training
    sgd_steps(module, image_size=64)
    assert torch.equal(frozen_bn.running_mean, before_frozen)
    assert not torch.equal(trained_bn.running_mean, before_trained)


def test_a_distilled_model_has_two_heads_both_fresh_and_trained():
    model = classifier("deit_tiny_distilled_patch16_224", 4, Fraction(0.0))
    assert list(classifier_heads(model.model)) == ["head", "head_dist"]
    trainable = {name for name, p in model.model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert all(not p.any() for name, p in model.model.named_parameters() if name.startswith("head"))  # zero-init
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 4)
    with pytest.raises(ConfigError, match="needs one classifier head.*head, head_dist"):
        FeatureDataModule(images=None, classifier=model, cache_dir="unused")


def test_only_the_output_layer_of_a_head_starts_at_zero_so_every_head_learns():
    """LeViT's heads are BatchNorm + Linear: zeroing the norm too would let no gradient reach the linear weight."""
    model = classifier("levit_128s", 4, Fraction(0.0))
    assert list(classifier_heads(model.model)) == ["head", "head_dist"]
    head = model.model.head
    assert not head.linear.weight.any() and bool((head.bn.weight == 1).all())
    model.train()
    model.criterion(model(torch.randn(2, 3, 224, 224)), torch.tensor([0, 1])).backward()
    assert head.linear.weight.grad.abs().sum() > 0 and model.model.head_dist.linear.weight.grad.abs().sum() > 0

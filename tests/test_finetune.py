"""Every policy: which parameters train, and at which learning rate, at each step of a real tiny run."""

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from timm.models import group_parameters
from timm.optim import param_groups_weight_decay

from artmove.errors import ConfigError
from artmove.finetune import Fraction, Gradual, Stages
from artmove.finetune.layers import plan_stages, plan_unfreeze
from artmove.models import create_network
from artmove.train import build
from conftest import LEAN, classifier, sgd_steps

TINY = [
    "backbone=test_resnet",
    "pretrained=false",
    "image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.source.train_per_class=1",
    "data.source.val_per_class=1",
    "data.source.test_per_class=1",
    "data.source.canvas_size=48",
    "optimizer.lr=0.01",
    "optimizer.weight_decay=0.05",
    *LEAN,
]
LR = 0.01


class LrRecorder(Callback):
    """Per optimizer step: {parameter name: lr} of what is in the optimizer, and which names require grad."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        names = {id(p): n for n, p in pl_module.network.named_parameters()}
        lrs = {names[id(p)]: g["lr"] for g in trainer.optimizers[0].param_groups for p in g["params"]}
        trainable = {n for n, p in pl_module.network.named_parameters() if p.requires_grad}
        self.steps.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "lrs": lrs, "trainable": trainable})


def fit(compose_train, *overrides, epochs=3, batches=2, callbacks=(), ckpt_path=None):
    cfg = compose_train(*TINY, *overrides)
    pl.seed_everything(0)
    _, datamodule, model = build(cfg)
    recorder = LrRecorder()
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, *callbacks],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, recorder.steps


def block_names(plan, depth):
    """Parameter names of the block ``depth`` places below the top (1 = the top block)."""
    return set(plan.blocks[len(plan.blocks) - depth])


def check_gradual_step(plan, step, lr_decay=0.5):
    """Head, plus one more block per epoch down to the floor; the k-th block at lr_decay**k x the head's LR
    (every block of the plan is in the optimizer from the start, frozen until its epoch)."""
    unfrozen = min(step["epoch"], plan.trained_blocks)
    expected = set(plan.head).union(*(block_names(plan, depth) for depth in range(1, unfrozen + 1)))
    assert step["trainable"] == expected, step["epoch"]
    assert set(step["lrs"]) == set(plan.trainable)
    head_lr = step["lrs"]["head.fc.weight"]
    for depth in range(1, plan.trained_blocks + 1):
        for name in block_names(plan, depth):
            assert step["lrs"][name] == pytest.approx(head_lr * lr_decay**depth), (name, step["epoch"])
    return head_lr


# --- stages -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "backbone, stages, expected",
    [
        ("resnet50", 1, ["layer4", "head"]),
        ("resnet50", 2, ["layer3", "layer4", "head"]),
        ("tf_efficientnet_lite0", 1, ["blocks.6.0+conv_head+bn2", "head"]),
        ("convnext_atto", 1, ["stages.3+head.norm", "head"]),
        ("vit_tiny_patch16_224", 2, ["blocks.10", "blocks.11+norm", "head"]),
    ],
)
def test_stages_are_timm_coarse_groups(backbone, stages, expected):
    plan = plan_stages(create_network(backbone, 4, pretrained=False), stages)
    assert plan.trainable_modules() == expected


def test_stages_beyond_the_backbone_are_refused_with_the_count_when_the_policy_is_built():
    with pytest.raises(ConfigError, match=r"finetune.stages=9: ResNet has 5 stages .*give a whole number from 0"):
        Stages("resnet50", stages=9)


def test_stages_trains_the_same_parameters_at_one_lr_every_step(compose_train):
    model, steps = fit(compose_train, "finetune=stages", "finetune.stages=2", "scheduler=none", epochs=1)
    layer4 = {n for n, _ in model.network.named_parameters() if n.startswith(("backbone.layer3.", "backbone.layer4.", "head."))}
    for step in steps:
        assert step["trainable"] == layer4 == set(step["lrs"])
        assert set(step["lrs"].values()) == {LR}


def test_fraction_trains_the_same_parameters_at_the_scheduled_lr(compose_train):
    model, steps = fit(compose_train, "unfreeze=0.2", "scheduler=cosine", "scheduler.warmup_epochs=0", epochs=1, batches=3)
    expected = set(plan_unfreeze(model.network, 0.2).trainable)
    lrs = [set(step["lrs"].values()) for step in steps]
    assert all(step["trainable"] == expected == set(step["lrs"]) for step in steps)
    assert all(len(values) == 1 for values in lrs)  # one LR for all groups...
    assert lrs[0] == {LR} and lrs[-1].pop() < LR  # ...that the cosine schedule lowers


# --- gradual ------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_gradual_unfreezes_one_block_per_epoch_at_lower_lrs(compose_train, scheduler):
    model, steps = fit(
        compose_train,
        "finetune=gradual",
        "unfreeze=0.5",
        "finetune.lr_decay=0.5",
        f"scheduler={scheduler}",
        "scheduler.warmup_epochs=0" if scheduler == "cosine" else "scheduler=none",
        epochs=4,
    )
    assert model.finetuning.plan.trained_blocks == 2  # the floor: layer3.0 and layer4.0 of test_resnet
    assert [s["epoch"] for s in steps] == [0, 0, 1, 1, 2, 2, 3, 3]
    head_lrs = [check_gradual_step(model.finetuning.plan, step) for step in steps]
    if scheduler == "none":
        assert head_lrs == pytest.approx([LR] * len(steps))
    else:
        assert head_lrs[0] == pytest.approx(LR) and head_lrs == sorted(head_lrs, reverse=True) and head_lrs[-1] < LR / 2


def test_gradual_resumes_from_a_checkpoint(compose_train, tmp_path):
    overrides = ("finetune=gradual", "unfreeze=0.5", "scheduler=cosine", "scheduler.warmup_epochs=0")
    fit(compose_train, *overrides, epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    model, resumed = fit(
        compose_train, *overrides, epochs=4, callbacks=[ModelCheckpoint(dirpath=tmp_path / "b")], ckpt_path=tmp_path / "last.ckpt"
    )
    assert [s["epoch"] for s in resumed] == [2, 2, 3, 3]
    head_lrs = [check_gradual_step(model.finetuning.plan, step) for step in resumed]
    assert head_lrs == sorted(head_lrs, reverse=True) and head_lrs[0] < LR  # the schedule goes on where it stopped


# --- discriminative -----------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["none", "cosine", "step"])
def test_discriminative_lr_decays_per_layer_group_under_every_scheduler(compose_train, scheduler):
    model, steps = fit(
        compose_train, "finetune=discriminative", "finetune.layer_decay=0.5", "unfreeze=1", f"scheduler={scheduler}", epochs=1
    )
    backbone = model.network.backbone
    layer_of = {
        f"backbone.{name}": layer for name, layer in group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True).items()
    }
    top = max(layer_of.values())
    assert top == 4  # stem, layer1.0 .. layer4.0; the head one level above
    layer_of.update({name: top + 1 for name, _ in model.network.head.named_parameters(prefix="head")})
    for step in steps:
        assert step["trainable"] == set(step["lrs"]) == set(layer_of)  # unfreeze=1: everything
        head_lr = step["lrs"]["head.fc.weight"]
        for name, lr in step["lrs"].items():
            assert lr == pytest.approx(head_lr * 0.5 ** (top + 1 - layer_of[name]), rel=1e-6), (name, scheduler)
    stem = min(layer_of, key=layer_of.get)
    assert steps[0]["lrs"][stem] == pytest.approx(steps[0]["lrs"]["head.fc.weight"] * 0.5**5)


def test_discriminative_trains_only_the_unfreeze_fraction(compose_train):
    model, steps = fit(compose_train, "finetune=discriminative", "unfreeze=0.5", "scheduler=none", epochs=1, batches=1)
    assert steps[0]["trainable"] == set(plan_unfreeze(model.network, 0.5).trainable) == set(steps[0]["lrs"])
    assert len(set(steps[0]["lrs"].values())) == 3  # head, layer4.0, layer3.0


# --- norm layers --------------------------------------------------------------------
def test_frozen_norm_statistics_stay_fixed_in_a_lightning_run(compose_train):
    """Lightning never calls train() on the module: the modes must be right from construction on."""
    _, _, model = build(compose_train(*TINY, "unfreeze=0.5"))
    frozen, trained = model.network.backbone.layer1[0].bn1, model.network.backbone.layer4[0].bn1
    before = frozen.running_mean.clone(), trained.running_mean.clone()
    model, _ = fit(compose_train, "unfreeze=0.5", epochs=1)
    frozen, trained = model.network.backbone.layer1[0].bn1, model.network.backbone.layer4[0].bn1
    assert torch.equal(frozen.running_mean, before[0]) and not torch.equal(trained.running_mean, before[1])


def test_train_bn_trains_every_batch_norm_also_in_frozen_blocks():
    module = classifier("resnet18", 3, Fraction(0.0, train_bn=True))
    frozen_bn = module.network.backbone.layer1[0].bn1
    assert frozen_bn.weight.requires_grad and not module.network.backbone.layer1[0].conv1.weight.requires_grad
    before = frozen_bn.running_mean.clone()
    sgd_steps(module)
    assert frozen_bn.training and not torch.equal(frozen_bn.running_mean, before)


def test_freeze_norm_stats_all_keeps_statistics_of_trained_norms_fixed():
    module = classifier("resnet18", 3, Fraction(0.3, freeze_norm_stats="all"))
    trained_bn = module.network.backbone.layer4[1].bn2  # (bn1's gradient passes bn2's zero-initialised weight)
    before_stats, before_weight = trained_bn.running_mean.clone(), trained_bn.weight.detach().clone()
    sgd_steps(module)
    assert not trained_bn.training and torch.equal(trained_bn.running_mean, before_stats)
    assert not torch.equal(trained_bn.weight, before_weight)  # its parameters still train


# --- regularisers -------------------------------------------------------------------
def test_regularisers_are_off_by_default(compose_train):
    cfg = compose_train()
    model = cfg.model
    assert (model.mixup, model.cutmix, model.ema_decay, model.label_smoothing, cfg.network.drop_rate, cfg.network.drop_path_rate) == (
        0,
        0,
        None,
        0,
        0,
        0,
    )
    assert type(build(compose_train("pretrained=false"))[2].finetuning.policy) is Fraction


def test_mixup_cutmix_use_soft_targets_and_odd_batches():
    module = classifier("resnet18", 3, image_size=32, mixup=0.4, cutmix=1.0)
    module.log = module.log_dict = lambda *a, **k: None
    targets = []
    module.soft_criterion.register_forward_pre_hook(lambda _, inputs: targets.append(inputs[1]))
    np.random.seed(0)  # timm's Mixup draws lambda with numpy
    loss = module.training_step((torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1])), 0)
    assert math.isfinite(loss.item()) and module.train_metrics["top1"].tp + module.train_metrics["top1"].fn == 4
    assert targets[0].shape == (4, 3) and bool(((targets[0] > 0) & (targets[0] < 1)).any())  # soft, even batch


def test_ema_weights_are_used_for_validation(compose_train):
    model, _ = fit(compose_train, "model.ema_decay=0.5", "unfreeze=0", epochs=1)
    head, ema_head = model.network.head.fc.weight, model.ema.module.head.fc.weight
    assert not torch.equal(head, ema_head)
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(model(images), model.ema.module(images)) and not torch.allclose(model(images), model.network(images))


def test_drop_path_reaches_the_backbone_and_is_refused_where_missing():
    module = classifier("resnet18", 3, drop_path_rate=0.1)
    assert module.network.backbone.layer4[1].drop_path.drop_prob == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="no stochastic depth"):
        classifier("vgg11", 3, drop_path_rate=0.1)


def test_gradient_clipping_is_one_trainer_line(compose_train):
    from artmove.train import train

    cfg = compose_train(*TINY, "debug=fast_dev_run", "trainer.gradient_clip_val=0.5", "finetune=discriminative")
    assert instantiate(cfg.trainer).gradient_clip_val == 0.5
    assert train(cfg)["status"] == "ok"


@pytest.mark.parametrize("overrides", [["features=cached", "unfreeze=0.2"], ["features=cached", "unfreeze=0", "finetune.train_bn=true"]])
def test_cached_features_refuse_a_backbone_that_trains(compose_train, overrides):
    from artmove.train import train

    with pytest.raises(ConfigError, match="features=cached needs a frozen backbone"):
        train(compose_train(*TINY, *overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["finetune=gradual", "finetune.every_epochs=0"], "every_epochs=0"),
        (["finetune=discriminative", "finetune.layer_decay=1.5"], r"layer_decay=1.5: give a factor in \(0, 1\]"),
        (["finetune=fraction", "finetune.freeze_norm_stats=some"], "freeze_norm_stats='some': use frozen or all"),
        (["unfreeze=1.5"], r"unfreeze=1.5 must be a number in \[0, 1\]"),
        (["finetune=stages", "finetune.stages=6"], "ResNet has 5 stages"),
    ],
)
def test_wrong_finetune_settings_fail_before_any_data_or_weights(compose_train, overrides, message, monkeypatch):
    import artmove.data
    from artmove.train import train

    def no_data(*args, **kwargs):
        raise AssertionError("the data module was built before the settings were checked")

    monkeypatch.setattr(artmove.data, "PaintingDataModule", no_data)  # what conf/data's _target_ names
    with pytest.raises(ConfigError, match=message):
        train(compose_train(*TINY, *overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["finetune=stages", "unfreeze=0.5"], "finetune=stages counts stages, it does not use unfreeze=0.5"),
        (
            ["+finetune.stage=2"],
            "finetune.stage: fine-tuning policy fraction has no such setting; its settings: unfreeze, train_bn, freeze_norm_stats",
        ),
        (["finetune=fraction", "+finetune.layer_decay=0.5"], "finetune.layer_decay: fine-tuning policy fraction has no such setting"),
        (["finetune=gradual", "+finetune.stages=2"], "finetune.stages: fine-tuning policy gradual has no such setting"),
        (
            ["finetune=discriminative", "+finetune.every_epochs=2"],
            "finetune.every_epochs: fine-tuning policy discriminative has no such setting",
        ),
        (["finetune.name=partial"], "finetune.name='partial': artmove has no fine-tuning policy of that name; use one of fraction, stages"),
    ],
)
def test_each_policy_refuses_a_setting_it_does_not_use(compose_train, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(compose_train(*TINY, *overrides))


def test_a_policy_from_the_users_own_module_plugs_in_by_target(compose_train, tmp_path, monkeypatch):
    """A new policy is one class and one config node, outside artmove: here, retrain only the stem."""
    (tmp_path / "my_policies.py").write_text(
        "from artmove.finetune import FinetunePolicy\n"
        "from artmove.finetune.layers import plan_unfreeze\n"
        "import dataclasses\n"
        "class StemOnly(FinetunePolicy):\n"
        "    name = 'stem_only'\n"
        "    def plan(self, network):\n"
        "        plan = plan_unfreeze(network, 0.0, setting='stem only')\n"
        "        return dataclasses.replace(plan, blocks=plan.blocks[1:] + plan.blocks[:1],\n"
        "                                   block_layers=plan.block_layers[1:] + plan.block_layers[:1], trained_blocks=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, steps = fit(compose_train, "~finetune", "+finetune._target_=my_policies.StemOnly", "scheduler=none", epochs=1)
    stem = {n for n, _ in model.network.named_parameters() if n.startswith(("backbone.conv1.", "backbone.bn1."))}
    assert stem and all(step["trainable"] == stem | {"head.fc.weight", "head.fc.bias"} == set(step["lrs"]) for step in steps)
    assert model.finetuning.describe().startswith("stem only: retraining")


def test_gradual_groups_follow_timms_weight_decay_rule_with_no_weight_decay_names():
    network = create_network("vit_tiny_patch16_224", 3, pretrained=False)
    groups = Gradual(unfreeze=1.0).bind(network).optimizer({"opt": "sgd", "lr": 0.1, "weight_decay": 0.05}).param_groups
    vit = network.backbone
    reference = param_groups_weight_decay(vit.requires_grad_(True), 0.05, no_weight_decay_list=vit.no_weight_decay())
    by_decay = lambda groups: {wd: {id(p) for g in groups if g["weight_decay"] == wd for p in g["params"]} for wd in (0.0, 0.05)}  # noqa: E731
    assert by_decay(groups)[0.0] - {id(p) for p in network.head.parameters()} == by_decay(reference)[0.0]
    assert id(vit.pos_embed) in by_decay(groups)[0.0] and id(vit.cls_token) in by_decay(groups)[0.0]
    assert id(network.head.fc.weight) in by_decay(groups)[0.05] and id(network.head.fc.bias) in by_decay(groups)[0.0]

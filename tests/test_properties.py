"""Property-based tests (hypothesis): the split logic and the unfreeze plan, on generated inputs."""

import contextlib
import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artmove.data.splits import artist_from_filename, group_split, stratified_split
from artmove.finetune.layers import plan_unfreeze
from artmove.models import create_network

fractions = st.floats(min_value=0.0, max_value=0.3, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**31)


@st.composite
def collections(draw) -> dict[int, list[Path]]:
    """Classes of paintings named ``<artist>_<title>.jpg``, a few artists each."""
    classes = draw(st.integers(min_value=1, max_value=6))
    per_class = {}
    for label in range(classes):
        artists = draw(st.lists(st.integers(0, 12), min_size=1, max_size=30))
        per_class[label] = [Path(f"c{label}/artist{artist}_painting{i}.jpg") for i, artist in enumerate(artists)]
    return per_class


def flatten(splits) -> list:
    return [sample for split in ("train", "val", "test") for sample in splits[split]]


@settings(max_examples=200, deadline=None)
@given(collections(), fractions, fractions, seeds)
def test_stratified_split_is_a_deterministic_stratified_partition(per_class, val, test, seed):
    splits = stratified_split(per_class, val, test, seed)
    samples = flatten(splits)
    everything = [(path, label) for label, paths in per_class.items() for path in paths]
    assert sorted(samples) == sorted(everything)  # complete and disjoint: each image exactly once
    for label, paths in per_class.items():
        n = len(paths)
        for split, fraction in (("val", val), ("test", test)):
            got = sum(1 for _, lbl in splits[split] if lbl == label)
            if n >= 3 and fraction > 0:
                assert got >= 1 and abs(got - n * fraction) <= 1  # stratified within one image per class
            else:
                assert got == 0
    shuffled = {label: random.Random(seed).sample(paths, len(paths)) for label, paths in per_class.items()}
    assert stratified_split(shuffled, val, test, seed) == splits  # the input order does not matter


@settings(max_examples=200, deadline=None)
@given(collections(), fractions, fractions, seeds)
def test_artist_groups_never_straddle_splits(per_class, val, test, seed):
    first = stratified_split(per_class, val, test, seed)
    grouped = group_split(first, artist_from_filename, seed)
    assert sorted(flatten(grouped)) == sorted(flatten(first))  # the same images, each once
    splits_of = {}
    for split, samples in grouped.items():
        for path, _ in samples:
            splits_of.setdefault(path.name.split("_")[0], set()).add(split)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert group_split(first, artist_from_filename, seed) == grouped  # deterministic
    assert Counter(label for _, label in flatten(grouped)) == Counter(label for _, label in flatten(first))


@pytest.fixture(scope="module", params=["test_resnet", "test_efficientnet", "test_vit"])
def network(request):
    return create_network(request.param, 3, pretrained=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=2, max_size=6))
def test_unfreeze_plan_is_monotone_and_always_trains_the_head(network, fractions):
    plans = [plan_unfreeze(network, fraction) for fraction in sorted(fractions)]
    layers = [plan.trained_layers for plan in plans]
    assert layers == sorted(layers)  # more of the backbone for a larger fraction, never less
    for smaller, larger in itertools.pairwise(plans):
        assert smaller.trainable <= larger.trainable  # and a superset of the same parameters
    for plan in plans:
        assert plan.head and set(plan.head) <= plan.trainable


def test_unfreeze_plan_extremes(network):
    nothing, everything = plan_unfreeze(network, 0.0), plan_unfreeze(network, 1.0)
    assert nothing.trained_layers == 0 and nothing.trainable == frozenset(nothing.head)
    assert everything.trained_layers == everything.total_layers
    assert everything.trainable == frozenset(name for name, _ in network.named_parameters())


# --- files from elsewhere: data, never code ------------------------------------------------------
CODE = ["os.system", "os.makedirs", "pathlib.Path.write_text", "numpy.load", "builtins.eval", "subprocess.run"]
names = st.sampled_from(["linear", "multiscale", "gram", "fraction", "resnet", "_target_", "name", "backbone", *CODE])
leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True), names, st.text(max_size=12))
plain = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=4)), max_leaves=12)


@st.composite
def checkpoints(draw) -> dict:
    """Checkpoint dicts a stranger could write with only tensors and plain values (what weights_only lets in):
    artmove's record and hyper-parameters mutated, code names sprinkled in."""
    head = draw(st.one_of(st.fixed_dictionaries({"name": names}), st.dictionaries(names, plain, max_size=3)))
    spec = draw(
        st.one_of(
            plain,
            st.fixed_dictionaries(
                {"backbone": st.sampled_from(["test_resnet", "os.system"]), "num_classes": st.integers(-1, 4), "head": st.just(head)}
            ),
        )
    )
    record = draw(
        st.one_of(
            st.none(),
            plain,
            st.fixed_dictionaries(
                {
                    "format": st.sampled_from([1, 2, 3, "2"]),
                    "network": st.just(spec),
                    "inference_weights": st.sampled_from(["network", "ema.module", "x"]),
                }
            ),
        )
    )
    hparams = draw(
        st.one_of(
            plain,
            st.fixed_dictionaries(
                {
                    "backbone": st.sampled_from(["test_resnet", "os.system"]),
                    "num_classes": st.integers(0, 4),
                    "class_names": plain,
                    "preprocessing": plain,
                    "head": st.dictionaries(names, plain, max_size=3),
                    "finetune": st.dictionaries(names, plain, max_size=3),
                }
            ),
        )
    )
    checkpoint = {"state_dict": draw(st.one_of(plain, st.just({}))), "hyper_parameters": hparams}
    if record is not None:
        checkpoint["artmove"] = record
    return checkpoint


@settings(max_examples=150, deadline=None)
@given(checkpoints())
def test_a_mutated_checkpoint_loads_or_is_refused_in_words_and_never_runs_code(tmp_path_factory, checkpoint):
    """Whatever a file holds: a user error, never another exception, and nothing a file names is called."""
    import builtins
    import os
    import subprocess

    import torch

    from artmove.errors import USER_ERRORS
    from artmove.models import load_trained

    path = tmp_path_factory.mktemp("ckpt") / "fuzzed.ckpt"
    torch.save(checkpoint, path)
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((os, "system"), (os, "makedirs"), (subprocess, "run"), (builtins, "eval")):
            patch.setattr(owner, name, lambda *a, _n=name, **k: calls.append(_n))
        with contextlib.suppress(*USER_ERRORS):
            load_trained(path)
    assert calls == []


@settings(max_examples=300, deadline=None)
@given(plain, st.sampled_from([*CODE, "artmove.data.PaintingDataModule", "pytorch_lightning.Trainer"]))
def test_a_saved_config_may_name_only_what_artmoves_own_configs_name(config, target):
    from artmove.errors import ConfigError
    from artmove.runs.plain import check_saved_config, shipped_values

    document = {"data": {"source": config, "_target_": target}}
    named = list(targets_in(document))
    if all(isinstance(name, str) and name in shipped_values()[0] for name in named):
        check_saved_config(document, Path("config.yaml"))
    else:
        with pytest.raises(ConfigError, match="names code artmove's own configs never name"):
            check_saved_config(document, Path("config.yaml"))


def targets_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield value
            yield from targets_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from targets_in(value)

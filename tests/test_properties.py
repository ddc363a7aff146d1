"""Property-based tests (hypothesis): the split logic and the unfreeze plan, on generated inputs."""

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
    for smaller, larger in zip(plans, plans[1:]):
        assert smaller.trainable <= larger.trainable  # and a superset of the same parameters
    for plan in plans:
        assert plan.head and set(plan.head) <= plan.trainable


def test_unfreeze_plan_extremes(network):
    nothing, everything = plan_unfreeze(network, 0.0), plan_unfreeze(network, 1.0)
    assert nothing.trained_layers == 0 and nothing.trainable == frozenset(nothing.head)
    assert everything.trained_layers == everything.total_layers
    assert everything.trainable == frozenset(name for name, _ in network.named_parameters())

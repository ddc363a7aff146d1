import pytest

from artmove.train import train


@pytest.mark.slow
def test_demo_experiment_learns_the_synthetic_styles(compose_train):
    """`make train`: packaged ImageNet weights, a few epochs on 2 CPU cores, well above chance."""
    results = train(compose_train("experiment=demo"))
    chance = 1 / results["num_classes"]
    assert results["test/top1"] > 3 * chance
    assert results["test/top1"] < 1.0  # the synthetic styles are not trivially separable

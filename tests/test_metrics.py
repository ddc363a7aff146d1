import json

import pytest
import torch

from artmove.models.metrics import classification_metrics
from conftest import run_cli


def test_topk_and_macro_on_a_hand_built_case():
    # 4 classes, 4 samples; ranking of each row is given explicitly.
    logits = torch.tensor(
        [
            [4.0, 3.0, 2.0, 1.0],  # label 0: rank 1
            [4.0, 3.0, 2.0, 1.0],  # label 1: rank 2
            [4.0, 3.0, 2.0, 1.0],  # label 3: rank 4
            [1.0, 2.0, 4.0, 3.0],  # label 2: rank 1
        ]
    )
    labels = torch.tensor([0, 1, 3, 2])
    metrics = classification_metrics(4, "test/")
    values = {k: float(v) for k, v in metrics(logits, labels).items()}
    assert values["test/top1"] == 0.5
    assert values["test/top3"] == 0.75
    assert values["test/top5"] == 1.0  # k is capped at the number of classes
    # per-class top-1: class0 1/1, class1 0/1, class2 1/1, class3 0/1
    assert values["test/top1_macro"] == 0.5


def test_macro_differs_from_micro_under_imbalance():
    logits = torch.eye(3)[[0, 0, 0, 1, 1]] * 5  # predicts 0,0,0,1,1
    labels = torch.tensor([0, 0, 0, 0, 2])  # class 0: 3/4 right, class 2: 0/1
    metrics = classification_metrics(3, "")
    values = {k: float(v) for k, v in metrics(logits, labels).items()}
    assert abs(values["top1"] - 3 / 5) < 1e-6
    assert abs(values["top1_macro"] - (0.75 + 0.0) / 2) < 1e-6  # class 1 is only predicted: not averaged in


def test_top5_is_not_merged_with_top3_after_a_first_all_top1_batch():
    # torchmetrics' compute groups merged top3/top5 (equal states after batch 1): top5 then copied top3.
    torch.manual_seed(0)
    metrics = classification_metrics(7, "test/")
    first = torch.randn(8, 7)
    metrics.update(first, first.argmax(1))  # every image ranked 1st
    second = torch.randn(8, 7)
    metrics.update(second, second.argsort(1, descending=True)[:, 3])  # every image ranked 4th
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["test/top1"] == 0.5
    assert values["test/top3"] == 0.5
    assert values["test/top5"] == 1.0
    assert values["test/top1_macro"] == pytest.approx(sum_recall(first, second))


def sum_recall(first, second):
    """Mean per-class top-1 recall of the two batches above, counted by hand."""
    labels = torch.cat([first.argmax(1), second.argsort(1, descending=True)[:, 3]])
    right = torch.cat([torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)])
    recalls = [right[labels == c].float().mean() for c in labels.unique()]
    return float(torch.stack(recalls).mean())


def test_a_runs_test_table_equals_evaluate_on_its_best_checkpoint(tmp_path, wikipaintings_small):
    """Through the command line: RASTA's test split comes in class order, so the first test batch is one
    class (all ranked within the top 3 here); train's test metrics must still be evaluate's."""
    run = tmp_path / "run"
    done = run_cli(
        "artmove.train",
        "data=rasta",
        f"data.root={wikipaintings_small}",
        "backbone=tf_efficientnet_lite0",
        "unfreeze=0",
        "image_size=64",
        "data.batch_size=10",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=8",
        "+trainer.limit_val_batches=2",
        "data.num_workers=0",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((run / "results.json").read_text())
    done = run_cli(
        "artmove.evaluate", f"ckpt_path={run / trained['best_checkpoint']}", "num_workers=0", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("test/top1", "test/top3", "test/top5", "test/top1_macro", "test/num_images", "test/ece", "test/nll"):
        assert trained[key] == pytest.approx(evaluated[key], abs=1e-6), key
    assert evaluated["test/top5"] > evaluated["test/top3"]  # the case the merged groups got wrong

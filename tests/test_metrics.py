import torch

from artmove.models.metrics import classification_metrics


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

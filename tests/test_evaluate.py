import csv
import json
import math

import pytest
import torch
from PIL import Image

from artmove.errors import ConfigError
from artmove.evaluate import eval_dir, evaluate
from artmove.evaluation.classes import label_map
from artmove.evaluation.metrics import confusion_matrix, most_confused_pairs, per_class_table, summary_metrics
from artmove.evaluation.tta import eval_transform, predict_views, tta_transform
from conftest import compose_config, run_cli

# --- numbers on a hand-built case ------------------------------------------------------
CLASSES = ["A", "B", "C", "D"]
PROBS = torch.tensor(
    [
        [0.40, 0.30, 0.20, 0.10],  # A -> A  (A ranked 1st)
        [0.20, 0.50, 0.25, 0.05],  # A -> B  (A ranked 3rd)
        [0.60, 0.30, 0.06, 0.04],  # B -> A  (B ranked 2nd)
        [0.05, 0.15, 0.30, 0.50],  # B -> D  (B ranked 3rd)
        [0.10, 0.20, 0.30, 0.40],  # C -> D  (C ranked 2nd)
        [0.50, 0.25, 0.15, 0.10],  # D -> A  (D ranked 4th)
    ]
)
LABELS = torch.tensor([0, 0, 1, 1, 2, 3])


def test_summary_on_a_hand_built_case():
    values = summary_metrics(PROBS, LABELS, "test")
    assert values["test/top1"] == pytest.approx(1 / 6)
    assert values["test/top3"] == pytest.approx(5 / 6)
    assert values["test/top5"] == 1.0  # k capped at 4 classes
    assert values["test/top1_macro"] == pytest.approx((1 / 2 + 0 + 0 + 0) / 4)
    assert values["test/num_images"] == 6


def test_confusion_matrix_and_pairs_on_a_hand_built_case():
    counts = confusion_matrix(PROBS, LABELS)
    assert counts.tolist() == [[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]]
    pairs = most_confused_pairs(counts, CLASSES, top=3)
    assert [(p["class_a"], p["class_b"], p["a_as_b"], p["b_as_a"]) for p in pairs] == [("A", "B", 1, 1), ("A", "D", 0, 1), ("B", "D", 1, 0)]
    assert pairs[0]["a_as_b_share"] == 0.5 and pairs[0]["b_as_a_share"] == 0.5


def test_per_class_table_on_a_hand_built_case():
    rows = {row["class"]: row for row in per_class_table(PROBS, LABELS, CLASSES)}
    a, b, c, d = rows["A"], rows["B"], rows["C"], rows["D"]
    assert (a["support"], a["predicted"]) == (2, 3) and (c["support"], c["predicted"]) == (1, 0)
    assert a["accuracy"] == a["recall"] == 0.5 and b["accuracy"] == 0.0
    assert a["precision"] == pytest.approx(1 / 3) and a["f1"] == pytest.approx(0.4)  # 2·(1/3·1/2)/(1/3+1/2)
    assert d["precision"] == 0.0 and math.isnan(c["precision"])  # C is never predicted
    assert [rows[k]["top3_accuracy"] for k in CLASSES] == [1.0, 1.0, 1.0, 0.0]


def test_tta_views_start_from_the_eval_transform():
    preprocessing = {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.8}
    image = Image.effect_mandelbrot((60, 48), (-2, -1.2, 1, 1.2), 50).convert("RGB")
    plain = eval_transform(preprocessing)(image)
    views = {mode: tta_transform(preprocessing, mode)(image) for mode in ("none", "flip", "five_crop", "ten_crop")}
    assert {mode: v.shape[0] for mode, v in views.items()} == {"none": 1, "flip": 2, "five_crop": 5, "ten_crop": 10}
    assert torch.equal(views["none"][0], plain) and torch.equal(views["flip"][1], plain.flip(-1))
    assert torch.equal(views["five_crop"][4], plain)  # the fifth crop is the centre crop
    assert torch.equal(views["ten_crop"][9], plain.flip(-1))
    assert not torch.equal(views["five_crop"][0], plain)


def test_views_are_averaged_as_probabilities():
    class Fixed(torch.nn.Module):
        def forward(self, x):  # the first pixel decides the logits
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], 1)

    views = torch.zeros(1, 2, 3, 4, 4)
    views[0, 0, 0, 0, 0], views[0, 1, 0, 0, 0] = 2.0, -1.0
    expected = (torch.tensor([2.0, -2.0]).softmax(0) + torch.tensor([-1.0, 1.0]).softmax(0)) / 2
    assert torch.allclose(predict_views(Fixed(), views)[0], expected)


def test_classes_are_matched_by_name_and_mapped_explicitly():
    model = ["Baroque", "Cubism", "Naïve_Art_(Primitivism)"]
    assert label_map(["Cubism", "Baroque"], model) == [1, 0]
    mapping = label_map(
        ["Cubism", "Fauvism", "Naive_Art_Primitivism"], model, {"Fauvism": None, "Naive_Art_Primitivism": "Naïve_Art_(Primitivism)"}
    )
    assert mapping == [1, None, 2]
    with pytest.raises(ConfigError, match=r"1 of its 2 classes are not among the checkpoint's 3 \(\['Fauvism'\]\).*class_map="):
        label_map(["Cubism", "Fauvism"], model)
    with pytest.raises(ConfigError, match="does not have: \\['Cubsim'\\]"):
        label_map(["Cubism"], model, {"Cubsim": "Cubism"})
    with pytest.raises(ConfigError, match="checkpoint does not have: \\['Fauve'\\]"):
        label_map(["Fauvism"], model, {"Fauvism": "Fauve"})


# --- on a checkpoint trained on wikipaintings_small -----------------------------------------
def test_evaluate_cli_on_a_rasta_checkpoint_with_flip_tta(tiny_run):
    ckpt = next((tiny_run / "checkpoints").glob("best-*.ckpt"))
    done = run_cli("artmove.evaluate", f"ckpt_path={ckpt}", "tta=flip", "image_size=80", "num_workers=0", "batch_size=16")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tiny_run / "eval" / "test-flip-80px"  # the run's own data set, found in its .hydra/config.yaml
    assert "Test split: 249 images, 25 classes" in done.stdout and "Top-5" in done.stdout and f"Outputs: {out}" in done.stdout

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    predictions = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert len(predictions) == metrics["test/num_images"] == 249 and metrics["views_per_image"] == 2
    assert metrics["image_size"] == 80  # trained at 64 px, evaluated at image_size=80
    assert metrics["test/top1"] == pytest.approx(sum(int(p["correct"]) for p in predictions) / 249)
    per_class = list(csv.DictReader((out / "per_class.csv").open(encoding="utf-8")))
    assert len(per_class) == 25 and sum(int(row["support"]) for row in per_class) == 249
    mean_accuracy = sum(float(row["accuracy"]) for row in per_class) / 25
    assert metrics["test/top1_macro"] == pytest.approx(mean_accuracy, abs=1e-5)
    counts = list(csv.reader((out / "confusion_matrix.csv").open(encoding="utf-8")))
    assert counts[0][1:] == metrics["classes"] and counts[15][0] == "Naïve_Art_(Primitivism)"
    assert sum(int(row[i + 1]) for i, row in enumerate(counts[1:])) == round(metrics["test/top1"] * 249)
    with Image.open(out / "confusion_matrix.png") as png:
        assert png.width > 1200 and png.height > 1200  # 25 names, legible
    assert "## Most confused pairs" in (out / "per_class.md").read_text(encoding="utf-8")


def test_a_data_set_with_other_classes_fails_clearly_unless_mapped(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    base = [f"ckpt_path={ckpt}", "data=synthetic", f"output_dir={tmp_path}", "num_workers=0"]
    with pytest.raises(ConfigError, match=r"10 of its 10 classes are not among the checkpoint's 25"):
        evaluate(compose_config("evaluate", *base))
    assert not (tmp_path / "metrics.json").exists()

    others = ["color_field", "drip", "expressionism", "flat_outlined", "hard_edge", "minimalism", "op_art", "pointillism"]
    mapping = "{cubism: Cubism, impressionism: Impressionism, " + ", ".join(f"{c}: null" for c in others) + "}"
    results = evaluate(compose_config("evaluate", *base, f"class_map={mapping}", "data.source.test_per_class=2"))
    assert results["test/num_images"] == 4 and results["dropped_images"] == 16
    assert results["class_map"]["cubism"] == "Cubism" and results["class_map"]["drip"] is None
    per_class = list(csv.DictReader((tmp_path / "per_class.csv").open(encoding="utf-8")))
    supports = {row["class"]: int(row["support"]) for row in per_class}
    assert supports["Cubism"] == supports["Impressionism"] == 2 and sum(supports.values()) == 4


def test_missing_checkpoint_settings_are_one_message(tmp_path):
    with pytest.raises(ConfigError, match=r"missing settings: ckpt_path: .*ckpt_path=<run>/checkpoints/last.ckpt"):
        evaluate(compose_config("evaluate", f"output_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        evaluate(compose_config("evaluate", f"ckpt_path={tmp_path / 'absent.ckpt'}", f"output_dir={tmp_path}"))


def test_evaluations_are_written_beside_their_run(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.touch()
    assert eval_dir(str(ckpt), "test", "none", None) == str(tmp_path / "run" / "eval" / "test")
    assert eval_dir(str(ckpt), "val", "flip", "wikiart") == str(tmp_path / "run" / "eval" / "val-wikiart-flip")
    assert eval_dir(str(ckpt), "test", "none", None, 288) == str(tmp_path / "run" / "eval" / "test-288px")
    assert eval_dir(str(tmp_path / "absent.ckpt"), "test", "none").startswith("outputs/evaluate/")  # never beside nothing
    (tmp_path / "sweep" / "0").mkdir(parents=True)  # a sweep folder: its evaluations beside the sweep, from its path alone
    assert eval_dir(str(tmp_path / "sweep"), "test", "none") == str(tmp_path / "sweep" / "eval" / "test")


def test_evaluate_scores_the_split_training_tested_on_when_grouped_by_artist(tiny_run, wikipaintings_small, tmp_path):
    """data.group_by=artist re-splits the set: evaluate must score that test split, not the published one."""
    from hydra.utils import instantiate

    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "evaluate",
        f"ckpt_path={ckpt}",
        f"output_dir={tmp_path}",
        "num_workers=0",
        "data=rasta",
        f"data.root={wikipaintings_small}",
        "data.group_by=artist",
        "data.regroup_published=true",
        "seed=42",
    )
    results = evaluate(cfg)
    grouped = instantiate(cfg.data).files["test"]
    predicted = [row["path"] for row in csv.DictReader((tmp_path / "predictions.csv").open(encoding="utf-8"))]
    assert predicted == [str(path) for path, _ in grouped] and results["test/num_images"] == len(grouped) != 249

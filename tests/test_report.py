import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from artmove.evaluation.report import learning_curves, write_report
from artmove.runs.folder import find_runs
from artmove.train import train
from conftest import compose_config, run_cli


def make_run(folder: Path, results: dict | None, **config) -> Path:
    """A run folder as training leaves it: .hydra/config.yaml, results.json, csv/metrics.csv."""
    (folder / ".hydra").mkdir(parents=True)
    lines = [f"{key}: {value}" for key, value in {"task_name": "train", **config}.items()]
    (folder / ".hydra" / "config.yaml").write_text("\n".join(lines) + "\ndata:\n  root: /data/wikipaintings\n", encoding="utf-8")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
        (folder / "csv").mkdir()
        (folder / "csv" / "metrics.csv").write_text(
            "epoch,step,train/loss_epoch,val/top1\n0,9,,0.30\n0,9,2.5,\n1,19,,0.40\n1,19,2.0,\n", encoding="utf-8"
        )
    return folder


def ok(top1: float, **extra) -> dict:
    return {
        "status": "ok",
        "test/top1": top1,
        "test/top3": top1 + 0.2,
        "test/top5": top1 + 0.3,
        "test/top1_macro": top1 - 0.05,
        "best_val/top1": top1 + 0.01,
        "epochs": 2,
        "wall_time_s": 12.0,
        **extra,
    }


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun"
    make_run(root / "0", ok(0.50), backbone="resnet50", unfreeze=0.2, seed=1)
    make_run(root / "1", ok(0.60), backbone="resnet50", unfreeze=0.2, seed=2)
    make_run(root / "2", ok(0.40), backbone="resnet50", unfreeze=0.0, seed=1)
    make_run(root / "10", ok(0.55), backbone="convnext_tiny", unfreeze=0.2, seed=1)
    make_run(
        root / "3",
        {"status": "failed", "error": "NonFiniteLossError: the training loss is nan\n..."},
        backbone="resnet50",
        unfreeze=1.0,
        seed=1,
    )
    make_run(root / "4", None, backbone="resnet50", unfreeze=0.5, seed=1)  # killed: no results.json
    make_run(root / "5", ok(0.70), backbone="resnet50", unfreeze=0.2, seed=3)  # another learning rate: its own setting
    (root / "5" / ".hydra" / "overrides.yaml").write_text("- seed=3\n- optimizer.lr=0.01\n- backbone=resnet50\n", encoding="utf-8")
    evaluation = root / "0" / "eval" / "test" / ".hydra"
    evaluation.mkdir(parents=True)
    (evaluation / "config.yaml").write_text("task_name: evaluate\n", encoding="utf-8")  # not a run
    return root


def test_runs_are_found_in_job_order_without_their_evaluations(sweep):
    assert [run.path.name for run in find_runs([sweep])] == ["0", "1", "2", "3", "4", "5", "10"]


def test_numbered_and_named_run_folders_sort_together(sweep):
    make_run(sweep / "manual", ok(0.3), backbone="resnet50", unfreeze=0.2, seed=9)
    assert [run.path.name for run in find_runs([sweep])][-2:] == ["10", "manual"]


def test_report_sorts_by_the_metric_and_keeps_failed_jobs(sweep, tmp_path):
    report = write_report([sweep], tmp_path / "report")
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open(encoding="utf-8")))
    assert [(r["run"], r["status"]) for r in rows] == [
        ("5", "ok"),
        ("1", "ok"),
        ("10", "ok"),
        ("0", "ok"),
        ("2", "ok"),
        ("3", "failed"),
        ("4", "failed"),
    ]
    assert rows[1]["data"] == "wikipaintings" and rows[1]["backbone"] == "resnet50" and float(rows[1]["unfreeze"]) == 0.2
    assert rows[0]["other"] == "optimizer.lr=0.01" and rows[1]["other"] == ""
    assert rows[5]["error"] == "NonFiniteLossError: the training loss is nan" and rows[5]["test/top1"] == ""
    assert rows[6]["error"].startswith("no results.json") and rows[6]["unfreeze"] == "0.5"

    settings = list(csv.DictReader((tmp_path / "report" / "settings.csv").open(encoding="utf-8")))
    assert (settings[0]["other"], settings[0]["runs"]) == ("optimizer.lr=0.01", "1")  # not averaged with the others
    best = settings[1]
    assert (best["backbone"], best["unfreeze"], best["runs"], best["seeds"]) == ("resnet50", "0.2", "2", "1 2")
    assert float(best["test/top1 mean"]) == pytest.approx(0.55)
    assert float(best["test/top1 std"]) == pytest.approx(0.0707107, abs=1e-6)  # sample std of 0.5, 0.6
    assert settings[2]["test/top1 std"] == ""  # one seed: no spread

    text = report.read_text(encoding="utf-8")
    assert "7 run(s), 2 failed" in text and "0.5500 ± 0.0707" in text
    for figure in ("test_top1_vs_unfreeze.png", "learning_curves.png"):
        assert f"({figure})" in text
        with Image.open(tmp_path / "report" / figure) as png:
            assert png.width > 400


def test_a_sweep_report_ranks_by_validation_and_marks_the_job_ckpt_path_loads(tmp_path):
    """Job 1 is best on validation (what the sweep optimised and ckpt_path=<sweep> picks), job 2 on test:
    the report ranks by validation, shows test beside it, and marks job 1, as resolve_checkpoint does."""
    from artmove.runs.checkpoints import resolve_checkpoint

    root = tmp_path / "multirun"
    for job, (val, test) in enumerate([(0.50, 0.55), (0.70, 0.52), (0.60, 0.80)]):
        folder = make_run(
            root / str(job), ok(test, optimized_metric="val/top1", optimized_value=val), backbone="resnet50", unfreeze=0.2, seed=job
        )
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / f"best-epoch001-val_acc{val:.4f}.ckpt").touch()
    done = run_cli("artmove.report", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert resolve_checkpoint(root).run.path == root / "1"
    text = (root / "report.md").read_text(encoding="utf-8")
    assert "ranked by the metric each job was selected on (`val/top1`: its `optimized_value`, highest first)" in text
    assert f"→ marks the job `ckpt_path={root}` loads (evaluate, predict, export, demo): 1." in text
    runs = [line for line in text.split("## Runs", 1)[1].splitlines() if line.startswith("|")][2:]  # below the header
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in runs]
    assert [(row[0], row[1], row[9], row[10], row[11]) for row in cells] == [
        ("→", "1", "val/top1", "0.7000", "0.5200"),
        ("–", "2", "val/top1", "0.6000", "0.8000"),
        ("–", "0", "val/top1", "0.5000", "0.5500"),
    ]
    rows = list(csv.DictReader((root / "runs.csv").open(encoding="utf-8")))
    assert [(r["run"], r["loaded"]) for r in rows] == [("1", "True"), ("2", "False"), ("0", "False")]
    by_test = run_cli("artmove.report", str(root), "--metric", "test/top1", "--out", str(tmp_path / "by_test"))
    assert by_test.returncode == 0 and "sorted by `test/top1` (the test split: choose on validation" in by_test.stdout
    assert [r["run"] for r in csv.DictReader((tmp_path / "by_test" / "runs.csv").open(encoding="utf-8"))] == ["2", "0", "1"]


def test_learning_curves_merge_lightning_csv_rows_per_epoch(sweep):
    assert learning_curves(sweep / "0") == {"val/top1": [(0, 0.30), (1, 0.40)], "train/loss_epoch": [(0, 2.5), (1, 2.0)]}


@pytest.mark.slow  # three trainings: the report's table and plots are checked on hand-made run folders above
def test_a_sweep_of_tiny_rasta_jobs_gives_the_table_and_plots(tmp_path, wikipaintings_small):
    sweep = tmp_path / "sweep"
    for job, (unfreeze, seed) in enumerate([(0.0, 1), (0.0, 2), (0.5, 1)]):
        train(
            compose_config(
                "train",
                f"paths.output_dir={sweep / str(job)}",
                "data=rasta",
                f"data.root={wikipaintings_small}",
                "backbone=resnet18",
                "pretrained=false",
                f"unfreeze={unfreeze}",
                f"seed={seed}",
                "debug=limit",
                "image_size=32",
                "data.batch_size=4",
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=1",
                "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1",
            )
        )
    done = run_cli("artmove.report", str(sweep))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 run(s), 0 failed" in done.stdout and f"Report: {sweep / 'report.md'}" in done.stdout
    rows = list(csv.DictReader((sweep / "runs.csv").open(encoding="utf-8")))
    for row in rows:
        results = json.loads((sweep / row["run"] / "results.json").read_text(encoding="utf-8"))
        assert float(row["test/top1"]) == pytest.approx(results["test/top1"]) and row["data"] == "wikipaintings_small"
        assert int(row["epochs"]) == 2
    assert learning_curves(sweep / "0")["val/top1"][-1][0] == 1  # two epochs per run
    assert (sweep / "test_top1_vs_unfreeze.png").is_file() and (sweep / "learning_curves.png").is_file()


def test_bootstrap_interval_on_a_hand_built_case():
    from artmove.models.metrics import bootstrap_interval

    correct = torch.tensor([1.0] * 60 + [0.0] * 40)  # top-1 0.60 on 100 images
    low, high = bootstrap_interval(correct)
    # Normal approximation: 0.60 ± 1.96 * sqrt(0.6 * 0.4 / 100) = [0.504, 0.696].
    assert low == pytest.approx(0.504, abs=0.015) and high == pytest.approx(0.696, abs=0.015)
    assert bootstrap_interval(correct) == (low, high)  # seeded: a run gives one interval
    assert bootstrap_interval(torch.ones(50)) == (1.0, 1.0)
    wider = bootstrap_interval(torch.tensor([1.0] * 6 + [0.0] * 4))
    assert wider[1] - wider[0] > 2 * (high - low)  # 10 images: a far wider interval


def test_a_setting_run_once_shows_its_bootstrap_interval(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "0", ok(0.61, **{"test/top1_ci95_low": 0.565, "test/top1_ci95_high": 0.655}), backbone="resnet50", unfreeze=0.2, seed=1)
    make_run(root / "1", ok(0.50, **{"test/top1_ci95_low": 0.45, "test/top1_ci95_high": 0.55}), backbone="resnet50", unfreeze=0.0, seed=1)
    make_run(root / "2", ok(0.52, **{"test/top1_ci95_low": 0.47, "test/top1_ci95_high": 0.57}), backbone="resnet50", unfreeze=0.0, seed=2)
    text = write_report([root], tmp_path / "report").read_text(encoding="utf-8")
    assert "0.6100 [0.5650, 0.6550]" in text  # one seed: its interval
    assert "0.5100 ± 0.0141" in text  # two seeds: mean ± std, no interval
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open(encoding="utf-8")))
    assert (rows[0]["test/top1_ci95_low"], rows[0]["test/top1_ci95_high"]) == ("0.565", "0.655")


def test_train_stores_the_interval_of_its_test_predictions(compose_train, tmp_path):
    results = train(
        compose_train(
            "backbone=test_resnet",
            "pretrained=false",
            "image_size=32",
            "data.batch_size=8",
            "data.source.train_per_class=2",
            "data.source.val_per_class=1",
            "data.source.test_per_class=3",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
        )
    )
    low, high, top1 = results["test/top1_ci95_low"], results["test/top1_ci95_high"], results["test/top1"]
    assert results["test/num_images"] == 30
    # 30 images: the interval holds the observed top-1 and spans about ±2 standard errors.
    assert low <= top1 <= high
    assert high - low == pytest.approx(2 * 1.96 * (top1 * (1 - top1) / 30) ** 0.5, abs=0.08)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert (saved["test/top1_ci95_low"], saved["test/top1_ci95_high"]) == (low, high)

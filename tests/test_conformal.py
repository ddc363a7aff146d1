"""Prediction sets with a coverage guarantee (split conformal prediction) and the guaranteed "not sure"
threshold: the statistics on synthetic probabilities, then a tiny run through the command line."""

import csv
import json
import logging

import pytest
import torch
from PIL import Image
from test_sweeps import TINY_RUN

from artmove.errors import ConfigError
from artmove.models import conformal, load_trained
from artmove.models.calibration import clopper_pearson, guaranteed_threshold
from artmove.runs.checkpoints import resolve_checkpoints
from conftest import run_cli


# --- the statistics ----------------------------------------------------------------------------------------
def draws(classes: int, images: int, generator: torch.Generator, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated probabilities and labels drawn from them (the classes are known: each label ~ its row)."""
    probs = (scale * torch.randn(images, classes, generator=generator)).softmax(1)
    return probs, torch.multinomial(probs, 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("score,class_conditional", [("lac", False), ("aps", False), ("raps", False), ("lac", True), ("aps", True)])
def test_sets_cover_the_level_asked_for_over_many_draws(score, class_conditional):
    """150 calibration/test draws at 90 %: the mean coverage is within the binomial 99.9 % interval of 0.9 (it is
    exact for the randomised scores, at least 0.9 and below 0.9 + 1/(n+1) for lac on continuous scores)."""
    generator = torch.Generator().manual_seed(0)
    covered = total = 0
    for draw in range(150):
        calibration, test = draws(5, 300, generator), draws(5, 200, generator)
        record = conformal.fit(*calibration, 0.9, score, class_conditional, k_reg=1, lam=0.05, seed=draw)
        mask = conformal.prediction_sets(test[0], record, generator)
        covered += int(mask.gather(1, test[1].view(-1, 1)).sum())
        total += len(test[1])
    low, high = clopper_pearson(int(0.9 * total), total, level=0.999)
    assert low - 0.002 <= covered / total <= high + 1 / 61 + 0.002, (covered / total, low, high)  # 1/(n_class+1): a class has ~60 images
    assert covered / total >= low - 0.002


def test_raps_sets_are_smaller_than_aps_where_the_tail_is_long():
    """20 classes, a model twice too unsure (its tail inflated): aps reaches into the tail, raps's penalty keeps
    it out, at the same coverage (measured here: 2.44 against 2.57 movements a set)."""
    sizes = {}
    for score in ("aps", "raps"):
        (calibration, cal_labels), (test, test_labels) = (draws(20, 2000, torch.Generator().manual_seed(seed), 4.0) for seed in (2, 3))
        underconfident = [(probs.log() / 2).softmax(1) for probs in (calibration, test)]
        record = conformal.fit(underconfident[0], cal_labels, 0.9, score, k_reg=2, lam=0.2)
        metrics = conformal.set_metrics(conformal.prediction_sets(underconfident[1], record, torch.Generator().manual_seed(1)), test_labels)
        assert metrics["coverage"] >= 0.87  # 0.9 less 4 binomial sd of 2000 images
        sizes[score] = metrics["mean_size"]
    assert sizes["raps"] < 0.97 * sizes["aps"], sizes


def test_the_metrics_on_a_hand_built_case():
    mask = torch.tensor([[True, False, False], [True, True, False], [False, False, True], [False, True, True]])
    labels = torch.tensor([0, 1, 0, 2])
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.1, 0.7], [0.1, 0.3, 0.6]])
    metrics = conformal.set_metrics(mask, labels, probs)
    assert metrics["coverage"] == 0.75 and metrics["size_histogram"] == [0, 2, 2, 0] and metrics["mean_size"] == 1.5
    assert metrics["per_class"] == [0.5, 1.0, 1.0] and metrics["worst_class"] == 0 and metrics["worst_coverage"] == 0.5
    assert metrics["fixed_k"] == 2  # top-1 covers 2 of 4, top-2 3 of 4 (= 0.75)
    assert (metrics["coverage_low"], metrics["coverage_high"]) == pytest.approx(clopper_pearson(3, 4))
    # lac on a hand-built split: scores 0.3, 0.6, 0.8, 0.4; n=4 at 60 %: the ceil(5 * 0.6) = 3rd smallest, 0.6
    record = conformal.fit(probs, labels, 0.6, "lac")
    assert record["threshold"] == pytest.approx(0.6) and record["classes_always_in"] == 0
    assert conformal.prediction_sets(probs, record).tolist() == [
        [True, False, False],
        [True, True, False],
        [False, False, True],
        [False, False, True],
    ]
    assert conformal.fit(probs, labels, 0.9, "lac")["threshold"] is None  # ceil(5 * 0.9) = 5 > 4: every class in every set
    assert conformal.prediction_sets(probs, conformal.fit(probs, labels, 0.9, "lac")).all()


@pytest.mark.parametrize(
    "change,why",
    [
        ({"score": "os.system"}, "score"),
        ({"coverage": 1.5}, "score, coverage"),
        ({"threshold": "0.5"}, "threshold"),
        ({"threshold": [0.1, 0.2]}, "threshold"),
        ({"k_reg": True}, "k_reg"),
        ({"lam": float("inf")}, "score, coverage"),
        ({"class_conditional": True}, "threshold"),
        ({"seed": None}, "seed"),
    ],
)
def test_a_wrong_record_is_refused_in_one_line(change, why):
    record = conformal.fit(*draws(3, 50, torch.Generator().manual_seed(0)), 0.8)
    assert conformal.checked_record(record, "f.ckpt", 3) == record
    with pytest.raises(ConfigError, match=rf"f.ckpt: its conformal record is not one artmove writes \({why}") as error:
        conformal.checked_record({**record, **change}, "f.ckpt", 3)
    assert "\n" not in str(error.value)


def test_the_guaranteed_threshold_keeps_its_promise_over_validation_draws():
    """Over 200 validation draws of a calibrated model, the kept answers of the threshold chosen on each reach top-1
    0.9 on a large test draw in at least ~95 % of them; the previous rule (point estimate) does not promise it."""
    generator = torch.Generator().manual_seed(4)
    test_probs, test_labels = draws(6, 20000, generator)
    held = chosen = 0
    for _ in range(200):
        chosen_here = guaranteed_threshold(*draws(6, 1000, generator), 0.9)
        if not chosen_here["reached"]:
            continue
        chosen += 1
        keep = test_probs.max(1).values >= chosen_here["threshold"]
        held += float((test_probs.argmax(1)[keep] == test_labels[keep]).double().mean()) >= 0.9
    assert chosen >= 50 and held / chosen >= 0.93, (held, chosen)  # measured: 74 of the 78 draws where a threshold passed


# --- a tiny run, through the command line --------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``python -m artmove.train`` of the tiny network with 80 % raps sets (8 validation images: the 8th smallest score)."""
    folder = tmp_path_factory.mktemp("conformal") / "run"
    done = run_cli(
        "artmove.train", *TINY_RUN, "coverage=0.8", "conformal.score=raps", f"hydra.run.dir={folder}", f"paths.output_dir={folder}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def paintings(folder):
    folder.mkdir()
    for name, colour in (("dark", (20, 30, 40)), ("bright", (250, 240, 200))):
        Image.new("RGB", (48, 40), colour).save(folder / f"{name}.png")
    return folder


def test_training_writes_the_sets_into_the_checkpoints_and_results(run):
    results = json.loads((run / "results.json").read_text())
    record = results["conformal"]
    assert record["score"] == "raps" and record["coverage"] == 0.8 and record["split"] == "val" and record["images"] == 8
    assert isinstance(record["threshold"], float) and 0 <= results["test/set_coverage"] <= 1 and results["test/set_size"] >= 0
    assert "with probability >= 95 %" in results["abstain"]["guarantee"] or results["abstain"]["guarantee"].startswith("none")
    trained = load_trained(resolve_checkpoints(run)[0].file)
    assert trained.conformal == record
    checkpoint = torch.load(trained.checkpoint, weights_only=True)
    assert checkpoint["artmove"]["format"] == 4 and checkpoint["artmove"]["conformal"] == record


def test_predict_and_the_predictor_give_sets(run, tmp_path):
    from artmove import Predictor

    images = paintings(tmp_path / "in")
    for save in ("json", "csv"):
        done = run_cli(
            "artmove.predict", f"ckpt_path={run}", f"input={images}", f"save={save}", "num_workers=0", f"hydra.run.dir={tmp_path / save}"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("80 % set: ") == 2
    payload = json.loads((tmp_path / "json" / "predictions.json").read_text())
    assert payload["conformal"]["coverage"] == 0.8 and payload["sets_from"] == "the checkpoint's"
    assert all(isinstance(item["set"], list) for item in payload["predictions"])
    with (tmp_path / "csv" / "predictions.csv").open(encoding="utf-8") as handle:
        assert all("set" in row for row in csv.DictReader(handle))
    predictor = Predictor.from_checkpoint(run)
    answer = predictor(images / "dark.png", top_k=3)
    assert isinstance(answer.set, list) and answer.coverage == 0.8 and set(answer.set) <= set(predictor.class_names)


def test_evaluate_scores_the_sets_and_fits_them_on_another_split(run, tmp_path):
    done = run_cli("artmove.evaluate", f"ckpt_path={run}", "num_workers=0", f"hydra.run.dir={tmp_path / 'test'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "80 % sets (raps, fitted on val): coverage" in done.stdout and "worst movement" in done.stdout
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    low, value, high = metrics["test/set_coverage_low"], metrics["test/set_coverage"], metrics["test/set_coverage_high"]
    assert 0 <= low <= value <= high <= 1 and sum(metrics["set_sizes"]) == metrics["test/num_images"] and metrics["set_worst_class"]
    assert (tmp_path / "test" / "sets.png").is_file() and "set_coverage" in (tmp_path / "test" / "per_class.csv").read_text()
    assert not (tmp_path / "test" / "conformal.json").exists()
    done = run_cli(
        "artmove.evaluate",
        f"ckpt_path={run}",
        "split=val",
        "conformal.fit=true",
        "conformal.coverage=0.5",
        "conformal.score=lac",
        "num_workers=0",
        f"hydra.run.dir={tmp_path / 'val'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fitted = json.loads((tmp_path / "val" / "conformal.json").read_text())["conformal"]
    assert fitted["split"] == "val" and fitted["score"] == "lac" and fitted["coverage"] == 0.5 and "in-sample" in done.stdout
    images = paintings(tmp_path / "in")
    done = run_cli(
        "artmove.predict",
        f"ckpt_path={run}",
        f"input={images}",
        f"conformal={tmp_path / 'val' / 'conformal.json'}",
        "num_workers=0",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert done.returncode == 0 and done.stdout.count("50 % set: ") == 2, done.stderr[-3000:]
    from artmove import Predictor

    assert Predictor.from_checkpoint(run, conformal=tmp_path / "val" / "conformal.json").conformal == fitted
    (tmp_path / "bad.json").write_text(json.dumps({"conformal": {**fitted, "threshold": [0.5]}}))
    done = run_cli(
        "artmove.predict", f"ckpt_path={run}", f"input={images}", f"conformal={tmp_path / 'bad.json'}", f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert done.returncode == 2 and "its conformal record is not one artmove writes" in done.stderr


def test_the_export_carries_the_sets(run, tmp_path):
    from artmove import Predictor

    done = run_cli(
        "artmove.export", f"ckpt_path={run}", f"out={tmp_path / 'export'}", "check_images=2", f"hydra.run.dir={tmp_path / 'log'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    record = load_trained(resolve_checkpoints(run)[0].file).conformal
    assert config["calibration"]["conformal"] == record
    assert "| Prediction sets | 80 % prediction sets (raps" in (tmp_path / "export" / "README.md").read_text()
    predictor = Predictor.from_export(tmp_path / "export")
    assert predictor.conformal == record and isinstance(predictor(Image.new("RGB", (40, 40), "olive")).set, list)
    config["calibration"]["conformal"]["score"] = "os.system"
    (tmp_path / "export" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="its conformal record is not one artmove writes"):
        Predictor.from_export(tmp_path / "export")


@pytest.mark.slow  # ONNX, TorchScript and torch.export of the tiny network: about 30 s
def test_every_export_format_carries_the_sets_in_its_config(run, tmp_path):
    import onnxruntime

    done = run_cli(
        "artmove.export",
        f"ckpt_path={run}",
        "formats=[onnx,torchscript,torch_export]",
        f"out={tmp_path / 'export'}",
        "check_images=2",
        f"hydra.run.dir={tmp_path / 'log'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = load_trained(resolve_checkpoints(run)[0].file).conformal
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["calibration"])["conformal"] == record
    extra = {"config.json": ""}
    torch.jit.load(str(tmp_path / "export" / "model.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["config.json"])["calibration"]["conformal"] == record
    extra = {"config.json": ""}
    torch.export.load(tmp_path / "export" / "model.pt2", extra_files=extra)
    assert json.loads(extra["config.json"])["calibration"]["conformal"] == record


def test_a_checkpoint_from_before_the_sets_opens_without_them_said_once(run, tmp_path, caplog):
    from artmove.models import trained as trained_module

    checkpoint = torch.load(resolve_checkpoints(run)[0].file, weights_only=True)
    checkpoint["artmove"]["format"] = 3
    del checkpoint["artmove"]["conformal"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    trained_module._SAID_NO_SETS.discard(3)
    with caplog.at_level(logging.INFO, logger="artmove.models.trained"):
        first, second = load_trained(tmp_path / "old.ckpt"), load_trained(tmp_path / "old.ckpt")
    assert first.conformal is None and second.conformal is None
    assert sum("before prediction sets" in message for message in caplog.messages) == 1
    checkpoint["artmove"]["format"] = 4
    checkpoint["artmove"]["conformal"] = {"score": "aps", "threshold": "exec"}
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    done = run_cli(
        "artmove.predict",
        f"ckpt_path={tmp_path / 'hostile.ckpt'}",
        f"input={paintings(tmp_path / 'in')}",
        f"hydra.run.dir={tmp_path / 'h'}",
    )
    assert (
        done.returncode == 2
        and "hostile.ckpt: its conformal record is not one artmove writes" in done.stderr
        and "Traceback" not in done.stderr
    )

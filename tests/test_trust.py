"""Predictions a scholar can trust: calibration measured and fixed (temperature scaling), "not sure" below a
threshold chosen on validation, and the ensemble of a sweep's runs, through the command line."""

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_sweeps import TINY_RUN

from artmove.models import load_trained
from artmove.models.calibration import (
    accuracy_at_coverage,
    calibrated_ece_draws,
    calibration_scores,
    ece_reference,
    expected_calibration_error,
    fit_temperature,
    kept_at,
    negative_log_likelihood,
    threshold_for_target,
)
from artmove.runs.checkpoints import resolve_checkpoints
from conftest import run_cli


# --- the numbers, on hand-built cases ------------------------------------------------------------------
@pytest.fixture(scope="module")
def overconfident():
    """Labels drawn from softmax(z) (calibrated logits z), and the logits of a model 5x too sure of itself."""
    generator = torch.Generator().manual_seed(0)
    logits = 1.5 * torch.randn(4000, 6, generator=generator)
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return logits * 5, labels


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_model_and_keeps_every_answer(overconfident):
    logits, labels = overconfident
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(5.0, rel=0.1)  # it finds the factor the logits were scaled by
    before, after = calibration_scores(logits.softmax(1), labels), calibration_scores((logits / temperature).softmax(1), labels)
    assert after["nll"] < before["nll"] - 0.5 and after["ece"] < before["ece"] / 3 and after["ece"] < 0.03
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))  # never changes a top-1 answer
    assert fit_temperature(logits[:0], labels[:0]) == 1.0  # nothing to fit


def test_ece_and_nll_on_a_hand_built_case():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    # bins of top-1 confidence: 0.9 (two answers, one right), 0.6 (right), 0.7 (right)
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * abs(0.9 - 0.5) + abs(0.6 - 1) + abs(0.7 - 1)) / 4)
    assert negative_log_likelihood(probs, labels) == pytest.approx(-(math.log(0.9) + math.log(0.1) + math.log(0.6) + math.log(0.7)) / 4)


def test_the_threshold_is_the_lowest_confidence_whose_kept_answers_reach_the_target():
    # confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.7 (right), 0.6 (right), 0.5 (wrong)
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 0, 0, 0, 1])
    chosen = threshold_for_target(probs, labels, 0.8)
    # kept >= 0.6: 4 of 5 right (0.8); >= 0.5 would be 4 of 6; the tie at 0.7 is kept or set aside together
    assert (chosen["threshold"], chosen["reached"], chosen["coverage"], chosen["top1"]) == (
        pytest.approx(0.6),
        True,
        pytest.approx(5 / 6),
        0.8,
    )
    assert threshold_for_target(probs, labels, 1.0)["threshold"] == pytest.approx(0.8)  # the two most confident are right
    unreachable = threshold_for_target(torch.tensor([[0.4, 0.6]]), torch.tensor([0]), 0.9)
    assert unreachable["reached"] is False and unreachable["threshold"] == 1.0
    rows = accuracy_at_coverage(probs, labels, (1.0, 0.5))
    assert [(r["kept"], r["top1"], r["threshold"]) for r in rows] == [
        (6, pytest.approx(4 / 6), 0.5),
        (3, pytest.approx(2 / 3), pytest.approx(0.7)),
    ]
    assert kept_at(probs, labels, 0.75) == {"coverage": pytest.approx(2 / 6), "top1": 1.0, "kept": 2}


# --- a tiny 2-seed sweep, through the command line ---------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``python -m artmove.train -m … seed=1,2`` (calibrate=true and abstain_target=0.9 by default): the sweep folder."""
    folder = tmp_path_factory.mktemp("trust") / "sweep"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder.parent)
        done = run_cli("artmove.train", "-m", *TINY_RUN, f"hydra.sweep.dir={folder}", "seed=1,2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Calibration: ECE") == 2 and "raw logits: ECE" in done.stdout  # the run's own test table
    return folder


def test_training_fits_a_temperature_and_a_threshold_into_the_checkpoints_it_ships(sweep):
    results = json.loads((sweep / "0" / "results.json").read_text())
    calibration, abstain = results["calibration"], results["abstain"]
    assert calibration["fitted_on"] == "val" and calibration["images"] == 8  # limit_val_batches=2, 4 a batch
    assert calibration["val/nll_after"] <= calibration["val/nll_before"]
    assert abstain["target"] == 0.9 and abstain["chosen_on"] == "val" and 0 <= abstain["threshold"] <= 1
    for key in (
        "test/ece",
        "test/nll",
        "test/ece_uncalibrated",
        "test/ece_floor",
        "test/ece_p",
        "test/confidence",
        "test/abstain_coverage",
    ):
        assert isinstance(results[key], float), key
    best, last = sweep / "0" / "checkpoints" / results["best_checkpoint"].rsplit("/", 1)[1], sweep / "0" / "checkpoints" / "last.ckpt"
    for path in (best, last):  # one epoch: the same weights, the same fit, in both files
        trained = load_trained(path)
        assert float(trained.network.temperature) == pytest.approx(calibration["temperature"])
        assert trained.network.spec["temperature"] == calibration["temperature"]
        assert trained.calibration == calibration and trained.threshold == abstain["threshold"]


def test_an_old_checkpoint_without_a_temperature_loads_and_predicts_as_before(sweep, tmp_path):
    path = resolve_checkpoints(sweep / "0")[0].file
    checkpoint = torch.load(path, weights_only=True)
    temperature = checkpoint["artmove"]["network"].pop("temperature")
    del checkpoint["artmove"]["calibration"], checkpoint["artmove"]["abstain"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old, calibrated = load_trained(tmp_path / "old.ckpt"), load_trained(path)
    assert float(old.network.temperature) == 1.0 and "temperature" not in old.network.spec and old.threshold is None
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        raw, scaled = old.network(images), calibrated.network(images)
        assert torch.equal(raw, old.network.head.classify(old.network.pooled(images)))  # exactly the logits, as before
    assert torch.allclose(scaled * temperature, raw, rtol=1e-4, atol=1e-5) and torch.equal(scaled.argmax(1), raw.argmax(1))


def member_probabilities(folder) -> tuple[np.ndarray, list[str]]:
    with (folder / "probabilities.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = [name for name in rows[0] if name not in ("path", "true")]
    return np.array([[float(row[name]) for name in classes] for row in rows]), [row["true"] for row in rows]


def test_evaluate_an_ensemble_of_the_sweep_as_its_members_averaged(sweep, tmp_path):
    for job in ("0", "1"):
        done = run_cli("artmove.evaluate", f"ckpt_path={sweep / job}", "num_workers=0", f"hydra.run.dir={tmp_path / job}")
        assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli("artmove.evaluate", f"ckpt_path={sweep}", "ensemble=all", "num_workers=0")
    assert done.returncode == 0, done.stderr[-3000:]
    out = sweep / "eval" / "test-ensemble_all"
    assert (out / "calibration.png").is_file() and (out / "selective.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "ensemble of 2 (test_resnet)" and len(metrics["checkpoint"]) == 2
    assert [row["coverage"] for row in metrics["selective"]] == [1.0, 0.9, 0.8, 0.5] and "Calibration: ECE" in done.stdout
    assert 0 < metrics["test/ece_floor"] < 1 and 0 < metrics["test/ece_p"] <= 1 and "a calibrated model shows" in done.stdout
    assert metrics["test/confidence"] == pytest.approx(float(np.mean(np.max(member_probabilities(out)[0], 1))), abs=1e-5)
    (first, true), (second, _) = member_probabilities(tmp_path / "0"), member_probabilities(tmp_path / "1")
    classes = json.loads((tmp_path / "0" / "metrics.json").read_text())["classes"]
    by_hand = float(np.mean((first + second).argmax(1) == np.array([classes.index(name) for name in true])))
    assert metrics["test/top1"] == pytest.approx(by_hand) and metrics["test/num_images"] == len(true) == 10
    calibrated, _ = member_probabilities(out)
    temperature = metrics["ensemble"]["temperature"]  # its own, fitted on validation: the ECE above is after it
    assert (
        temperature != 1.0
        and metrics["calibration"]["temperature"] == pytest.approx(temperature)
        and metrics["calibration"]["fitted_on"] == "val"
    )
    expected = torch.from_numpy(np.log((first + second) / 2) / temperature).softmax(1).numpy()
    assert np.abs(calibrated - expected).max() < 1e-5  # the members' calibrated probabilities, averaged, then its temperature
    assert metrics["test/ece_uncalibrated"] == pytest.approx(
        calibration_scores(torch.from_numpy((first + second) / 2), torch.tensor([classes.index(name) for name in true]))["ece"], abs=1e-4
    )  # the plain average's
    assert metrics["conformal"]["split"] == "val" and metrics["abstain"]["chosen_on"] == "val"  # its own sets and threshold


def test_members_with_other_classes_are_refused_in_one_line(sweep, tmp_path):
    checkpoint = torch.load(resolve_checkpoints(sweep / "1")[0].file, weights_only=True)
    checkpoint["hyper_parameters"]["class_names"][0] = "Fauvism"
    torch.save(checkpoint, tmp_path / "other.ckpt")
    done = run_cli("artmove.evaluate", f"ckpt_path=[{sweep / '0'},{tmp_path / 'other.ckpt'}]", f"hydra.run.dir={tmp_path / 'out'}")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "the ensemble's members do not share their classes" in done.stderr and "Fauvism" in done.stderr
    done = run_cli("artmove.evaluate", f"ckpt_path={sweep / '0'}", "ensemble=top2", f"hydra.run.dir={tmp_path / 'p'}")
    assert done.returncode == 2 and "is not one: give ckpt_path=<sweep folder>" in done.stderr


def paintings(folder):
    """Two images the tiny networks tell apart: a dark one and a bright one."""
    folder.mkdir()
    for name, colour in (("dark", (20, 30, 40)), ("bright", (250, 240, 200))):
        Image.new("RGB", (48, 40), colour).save(folder / f"{name}.png")
    return folder


def test_predict_marks_an_answer_below_the_threshold_as_uncertain(sweep, tmp_path):
    images = paintings(tmp_path / "in")
    done = run_cli(
        "artmove.predict", f"ckpt_path={sweep / '0'}", f"input={images}", "save=json", "num_workers=0", f"hydra.run.dir={tmp_path / 'own'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    own = json.loads((tmp_path / "own" / "predictions.json").read_text())
    assert own["uncertain_below"] == load_trained(resolve_checkpoints(sweep / "0")[0].file).threshold  # the run's, chosen on validation
    top = {item["path"].rsplit("/", 1)[1]: item["top"][0]["probability"] for item in own["predictions"]}
    assert top["dark.png"] != top["bright.png"]
    between = (top["dark.png"] + top["bright.png"]) / 2
    unsure = min(top, key=top.get)
    for save in ("csv", "json"):
        done = run_cli(
            "artmove.predict",
            f"ckpt_path={sweep / '0'}",
            f"input={images}",
            f"save={save}",
            f"uncertain_below={between}",
            "num_workers=0",
            f"hydra.run.dir={tmp_path / save}",
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "1 marked not sure" in done.stdout
    with (tmp_path / "csv" / "predictions.csv").open(encoding="utf-8") as handle:
        flags = {row["path"].rsplit("/", 1)[1]: row["uncertain"] for row in csv.DictReader(handle) if row["rank"] == "1"}
    assert flags == {unsure: "1", ({"dark.png", "bright.png"} - {unsure}).pop(): "0"}
    payload = json.loads((tmp_path / "json" / "predictions.json").read_text())
    assert {item["path"].rsplit("/", 1)[1]: item["uncertain"] for item in payload["predictions"]} == {name: name == unsure for name in top}
    assert payload["uncertain_below"] == between and payload["threshold_from"] == "uncertain_below="


def test_the_predictor_and_the_demo_answer_for_an_ensemble(sweep, tmp_path):
    from artmove import Predictor
    from artmove.serving.demo_app import predict_upload

    images = paintings(tmp_path / "in")
    ensemble = Predictor.from_checkpoint(sweep, ensemble="all")
    members = [Predictor.from_checkpoint(sweep / job) for job in ("0", "1")]
    got = ensemble(images / "dark.png", top_k=10)
    averaged = torch.tensor([[p for _, p in sorted(m(images / "dark.png", top_k=10).top)] for m in members]).mean(0)
    temperature = float(ensemble.network.temperature)  # the ensemble's own, fitted on validation when it was opened
    assert temperature != 1.0 and (sweep / "eval" / "ensemble_all" / "calibration.json").is_file()
    expected = (averaged.log() / temperature).softmax(0)
    assert [p for _, p in sorted(got.top)] == pytest.approx(expected.tolist(), abs=1e-6)
    assert got.set and got.coverage == 0.9  # its own prediction sets (aps at 0.9, as its members')
    assert got.uncertain is not None and ensemble.threshold is not None  # its own threshold, chosen for the average
    again = Predictor.from_checkpoint(sweep, ensemble="all")  # the cached fit, read back
    assert float(again.network.temperature) == temperature and again.conformal == ensemble.conformal
    ensemble.threshold = 1.0
    buffer = io.BytesIO()
    Image.open(images / "dark.png").save(buffer, format="PNG")
    answer = predict_upload(ensemble, buffer.getvalue())
    assert answer["gradcam"] is None and answer["uncertain"] is True and answer["threshold"] == 1.0
    assert members[0](images / "dark.png").uncertain is not None  # a calibrated run's own threshold


@pytest.mark.slow
def test_onnx_exports_of_a_calibrated_model_and_of_an_ensemble_agree_with_pytorch(sweep, tmp_path):
    import onnxruntime

    from artmove import Predictor

    for name, target in (("single", [f"ckpt_path={sweep / '0'}"]), ("ensemble", [f"ckpt_path={sweep}", "ensemble=all"])):
        done = run_cli(
            "artmove.export", *target, "formats=onnx", f"out={tmp_path / name}", "check_images=8", f"hydra.run.dir={tmp_path / 'log'}"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads((tmp_path / name / "export.json").read_text())
        for fmt, check in record["checks"].items():
            assert check["images"] == 8 and check["top1_disagreements"] == 0 and check["max_abs_logit_diff"] <= record["check_atol"], fmt
        session = onnxruntime.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"])
        meta = json.loads(session.get_modelmeta().custom_metadata_map["calibration"])
        images = torch.randn(3, 3, 32, 32)
        if name == "single":
            trained = load_trained(resolve_checkpoints(sweep / "0")[0].file)
            assert meta["temperature"] == pytest.approx(float(trained.network.temperature)) != 1.0
            assert record["layout"] == "timm" and json.loads((tmp_path / name / "config.json").read_text())["calibration"] == meta
            assert meta["uncertain_below"] == trained.threshold == Predictor.from_export(tmp_path / name).threshold
            with torch.no_grad():
                expected = trained.network(images).numpy()  # calibrated logits
        else:
            assert len(meta["temperatures"]) == 2 and record["layout"] == "artmove" and meta["temperature"] != 1.0
            assert meta["conformal"]["split"] == "val" and meta["uncertain_below"] is not None  # the ensemble's own sets and threshold
            members = [load_trained(c.file) for c in resolve_checkpoints(sweep, "all")]
            with torch.no_grad():  # log-softmax of the log of the averaged probabilities, after the ensemble's own temperature
                averaged = torch.stack([m.network(images).softmax(1) for m in members]).mean(0)
                expected = (averaged.log() / meta["temperature"]).log_softmax(1).numpy()
                assert np.abs(Predictor.from_checkpoint(sweep, ensemble="all").network(images).numpy() - expected).max() < 1e-5
        assert np.abs(session.run(None, {"input": images.numpy()})[0] - expected).max() < 1e-4
    rebuilt = Predictor.from_export(tmp_path / "ensemble")
    assert rebuilt.explains is False and rebuilt.threshold == meta["uncertain_below"] and rebuilt.conformal == meta["conformal"]
    assert float(rebuilt.network.temperature) == pytest.approx(meta["temperature"])  # config.json's artmove record rebuilds it
    assert rebuilt(paintings(tmp_path / "in") / "dark.png").set


def test_members_with_other_input_sizes_each_read_their_own_view(sweep, tmp_path):
    """A member evaluated at 40 px beside one at 32 px: the ensemble gives each its own transform (Predictor),
    and one exported graph, which takes one input, refuses them in one line."""
    from artmove import Predictor

    checkpoint = torch.load(resolve_checkpoints(sweep / "1")[0].file, weights_only=True)
    checkpoint["hyper_parameters"]["preprocessing"]["test_input_size"] = [3, 40, 40]
    (tmp_path / "other" / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, tmp_path / "other" / "checkpoints" / "last.ckpt")
    members = [sweep / "0", tmp_path / "other" / "checkpoints" / "last.ckpt"]
    ensemble = Predictor.from_checkpoint(members)
    assert [p["test_input_size"] if "test_input_size" in p else p["input_size"] for p in ensemble.preprocessing] == [
        [3, 32, 32],
        [3, 40, 40],
    ]
    painting = paintings(tmp_path / "in") / "bright.png"
    alone = [Predictor.from_checkpoint(member)(painting, top_k=10) for member in members]
    averaged = torch.tensor([[p for _, p in sorted(a.top)] for a in alone]).mean(0)
    expected = (averaged.log() / float(ensemble.network.temperature)).softmax(0)  # a list: its own temperature, fitted in memory
    assert [p for _, p in sorted(ensemble(painting, top_k=10).top)] == pytest.approx(expected.tolist(), abs=1e-6)
    done = run_cli(
        "artmove.export", f"ckpt_path=[{members[0]},{members[1]}]", f"out={tmp_path / 'export'}", f"hydra.run.dir={tmp_path / 'log'}"
    )
    assert done.returncode == 2 and "one exported graph takes one input" in done.stderr and "40x40 px" in done.stderr


def test_the_model_card_says_how_calibrated_and_when_it_is_not_sure(tmp_path):
    from artmove.release.card import write_card
    from artmove.runs.facts import RunFacts

    calibration = {
        "temperature": 1.4,
        "images": 111,
        "val/ece_before": 0.081,
        "val/ece_after": 0.024,
        "val/nll_before": 1.3,
        "val/nll_after": 1.2,
    }
    abstain = {"target": 0.9, "threshold": 0.62, "reached": True, "images": 111, "val/coverage": 0.41, "val/top1": 0.9}
    results = {
        "test/top1": 0.7,
        "test/top3": 0.8,
        "test/top5": 0.9,
        "test/top1_macro": 0.6,
        "test/num_images": 155,
        "test/ece": 0.031,
        "test/ece_uncalibrated": 0.09,
        "test/ece_floor": 0.058,
        "test/ece_p": 0.81,
        "test/abstain_coverage": 0.38,
        "test/abstain_top1": 0.87,
    }
    facts = RunFacts(
        checkpoint=tmp_path / "best.ckpt",
        backbone="resnet50",
        head="linear",
        class_names=["a", "b"],
        preprocessing={"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.95, "mean": [0.5] * 3, "std": [0.5] * 3},
        hparams={},
        finetune={},
        spec={"head": {"name": "linear"}},
        results=results,
        calibration=calibration,
        abstain=abstain,
    )
    card = write_card(facts, tmp_path, {}, {}, None, True).read_text(encoding="utf-8")
    assert '## Calibration and "not sure"' in card and "| Temperature | 1.400: fitted on 111 validation paintings" in card
    assert (
        "| Validation ECE (15 bins) | 0.0810 before, 0.0240 after |" in card
        and "| Test ECE (15 bins) | 0.0310 (raw logits: 0.0900) |" in card
    )
    assert (
        "| Test ECE of a calibrated model | 0.0580 on as many paintings with the same confidences (mean of 1000 draws); 81 % of those"
        in card
    )
    assert "p &lt; 0.620: the lowest top-1 probability at which the validation answers kept reach top-1 0.90 (41 % of 111" in card
    assert "| Test, answers at or above it | 38.0 % of the test paintings, top-1 0.8700 (measured on test" in card
    facts.calibration = facts.abstain = None
    facts.results = {}
    assert "Not calibrated" in write_card(facts, tmp_path, {}, {}, None, True).read_text(encoding="utf-8")


def test_bad_trust_and_set_settings_stop_in_one_line_before_compute(tmp_path):
    for module, setting, message in (
        ("artmove.train", "calibrate=sometimes", "calibrate='sometimes': give true"),
        ("artmove.train", "abstain_target=1.5", "abstain_target=1.5: give the top-1"),
        ("artmove.evaluate", "uncertain_below=2", "uncertain_below=2: give a top-1 probability"),
        ("artmove.evaluate", "ensemble=best", "ensemble='best': give ensemble=all"),
        ("artmove.train", "coverage=1.2", "coverage=1.2: give the share"),
        ("artmove.train", "conformal.score=top5", "conformal.score='top5': use one of lac, aps, raps"),
        ("artmove.train", "conformal.lam=-1", "conformal.lam=-1: give a number >= 0"),
        ("artmove.evaluate", "conformal.fit=yes", "conformal.fit='yes': give true"),
    ):
        done = run_cli(
            module,
            "ckpt_path=absent" if module.endswith("evaluate") else "pretrained=false",
            setting,
            f"hydra.run.dir={tmp_path / setting.split('=')[0]}",
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (setting, done.stderr[-2000:])


def test_the_ece_floor_of_a_calibrated_model_shrinks_with_the_number_of_images():
    """A model whose confidences are right on average still shows an ECE on few images; that floor falls as 1/sqrt(n)."""
    generator = torch.Generator().manual_seed(0)
    floors = []
    for images in (200, 3200):
        probs = torch.softmax(3 * torch.randn(images, 11, generator=generator), 1)
        floors.append(float(calibrated_ece_draws(probs, draws=200).mean()))
    assert 0.02 < floors[0] < 0.12 and floors[1] < floors[0] / 2.5
    assert math.isnan(ece_reference(torch.empty(0, 11), torch.empty(0, dtype=torch.long))["ece_floor"])


def test_each_calibrated_draw_is_torchmetrics_ece_of_its_answers():
    """The draws are binned all at once; each must be exactly the ECE torchmetrics gives those answers."""
    generator = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(300, 11, generator=generator), 1)
    probs[0] = torch.nn.functional.one_hot(torch.tensor(2), 11).float()  # a confidence of exactly 1: the last bin's edge
    confidence, top1 = probs.max(1)
    right = torch.rand(1, 300, generator=torch.Generator().manual_seed(0)) < confidence  # the first draw of seed 0
    labels = torch.where(right[0], top1, (top1 + 1) % 11)
    assert float(calibrated_ece_draws(probs, draws=1, seed=0)[0]) == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)


def test_the_ece_reference_tells_an_overconfident_model_from_a_calibrated_one_on_few_images(overconfident):
    """On slices of 300 images, the calibrated model's ECE mostly sits within its floor's draws (p is uniform
    for it: about 1 slice in 20 falls below 0.05); the model 5x too sure is beyond them on every slice."""
    logits, labels = overconfident
    slices = [slice(start, start + 300) for start in range(0, 3000, 300)]
    calibrated = [ece_reference((logits[part] / 5).softmax(1), labels[part]) for part in slices]
    overconfident_ = [ece_reference(logits[part].softmax(1), labels[part]) for part in slices]
    assert sum(r["ece_p"] > 0.05 for r in calibrated) >= 7 and all(r["ece_p"] < 0.01 for r in overconfident_)
    assert all(0.02 < r["ece_floor"] < 0.1 for r in calibrated)


def test_the_end_of_training_says_the_sets_and_what_to_do_when_no_threshold_is_certified():
    from artmove.runs.results import format_table, sets_line

    results = {
        "test/num_images": 155,
        "num_classes": 11,
        "backbone": "b",
        "unfreeze": 0.2,
        "weights_source": "w",
        "test/top1": 0.5,
        "test/top3": 0.8,
        "test/top5": 0.9,
        "test/top1_macro": 0.5,
        "test/abstain_coverage": 0.0,
        "abstain": {"target": 0.9, "threshold": 1.0, "reached": False, "images": 155},
        "conformal": {"score": "aps", "coverage": 0.9, "images": 155, "split": "val"},
        "test/set_coverage": 0.897,
        "test/set_size": 3.8,
    }
    assert "no threshold certifies top-1 0.90 on the 155 validation paintings: every answer is marked not sure; lower abstain_target" in (
        format_table(results)
    )
    assert sets_line(results) == "  90 % prediction sets (aps, fitted on 155 val paintings): test coverage 89.7 %, mean size 3.80 movements"
    assert sets_line({"test/top1": 0.5}) is None

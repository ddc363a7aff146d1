"""``ckpt_path`` as evaluate, predict, export and the demo read it: a file, a run folder or a sweep folder."""

import json

import pytest

from artmove.errors import ConfigError
from artmove.evaluation.checkpoint import resolve_checkpoint
from artmove.predict import predict
from conftest import compose_config


def make_run(folder, *checkpoints, results=None, direction=None):
    (folder / "checkpoints").mkdir(parents=True)
    for name in checkpoints:
        (folder / "checkpoints" / name).write_bytes(b"ckpt")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    if direction:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  sweeper:\n    direction: {direction}\n", encoding="utf-8")
    return folder


def test_a_file_is_itself_and_a_run_folder_is_its_best_checkpoint(tmp_path):
    run = make_run(tmp_path / "run", "best-epoch=002-val_top1=0.9187.ckpt", "last.ckpt")
    assert resolve_checkpoint(run / "checkpoints" / "last.ckpt") == run / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(run).name == "best-epoch=002-val_top1=0.9187.ckpt"  # any best*.ckpt naming
    assert resolve_checkpoint(run / "checkpoints").name == "best-epoch=002-val_top1=0.9187.ckpt"
    only_last = make_run(tmp_path / "only_last", "last.ckpt")
    assert resolve_checkpoint(only_last) == only_last / "checkpoints" / "last.ckpt"


def test_results_json_names_the_best_of_several_even_after_the_run_moved(tmp_path):
    moved = "/elsewhere/run/checkpoints/best-epoch003-top10.5000.ckpt"
    run = make_run(tmp_path / "run", "best-epoch001-top10.4000.ckpt", "best-epoch003-top10.5000.ckpt", "last.ckpt",
                   results={"status": "ok", "best_checkpoint": moved})  # fmt: skip
    assert resolve_checkpoint(run).name == "best-epoch003-top10.5000.ckpt"
    ambiguous = make_run(tmp_path / "ambiguous", "best-a.ckpt", "best-b.ckpt")
    with pytest.raises(ConfigError, match="2 best\\*.ckpt checkpoints and no results.json naming one"):
        resolve_checkpoint(ambiguous)


def test_a_sweep_folder_is_its_best_finished_job(tmp_path):
    sweep = tmp_path / "multirun"
    ok = {"status": "ok", "optimized_metric": "val/top1"}
    make_run(sweep / "0", "best-0.ckpt", results={**ok, "optimized_value": 0.5})
    make_run(sweep / "1", "best-1.ckpt", results={**ok, "optimized_value": 0.75})
    make_run(sweep / "2", "best-2.ckpt", results={"status": "failed", "optimized_value": 0.99})
    make_run(sweep / "3", "best-3.ckpt", results={**ok, "optimized_value": None})
    make_run(sweep / "10", "last.ckpt")  # killed: no results.json
    assert resolve_checkpoint(sweep) == sweep / "1" / "checkpoints" / "best-1.ckpt"


def test_a_minimised_metric_picks_the_lowest_value(tmp_path):
    sweep = tmp_path / "multirun"
    for job, value in ((0, 0.3), (1, 0.9)):
        results = {"status": "ok", "optimized_metric": "val/top1", "optimized_value": value}
        make_run(sweep / str(job), "last.ckpt", results=results, direction="minimize")
    assert resolve_checkpoint(sweep) == sweep / "0" / "checkpoints" / "last.ckpt"
    for job, value in ((0, 0.3), (1, 0.9)):  # no sweeper direction: a loss is minimised
        make_run(tmp_path / "loss" / str(job), "last.ckpt", results={"status": "ok", "optimized_metric": "val/loss", "optimized_value": value})
    assert resolve_checkpoint(tmp_path / "loss") == tmp_path / "loss" / "0" / "checkpoints" / "last.ckpt"


def test_what_is_not_a_checkpoint_gets_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint not found: ckpt_path=.*absent.ckpt is no file or folder"):
        resolve_checkpoint(tmp_path / "absent.ckpt")
    make_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no checkpoint in .*empty/checkpoints \\(neither best\\*.ckpt nor last.ckpt\\)"):
        resolve_checkpoint(tmp_path / "empty")
    (tmp_path / "failed_sweep").mkdir()
    make_run(tmp_path / "failed_sweep" / "0", "last.ckpt", results={"status": "failed"})
    with pytest.raises(ConfigError, match="1 job folder\\(s\\), none finished with a score"):
        resolve_checkpoint(tmp_path / "failed_sweep")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConfigError, match="no training run or job folders below it"):
        resolve_checkpoint(tmp_path / "nothing")


def test_predict_takes_a_sweep_folder(tiny_run, wikipaintings_small, tmp_path):
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    (sweep / "0").symlink_to(tiny_run)
    painting = sorted((wikipaintings_small / "wikipaintings_test" / "Cubism").iterdir())[0]
    predict(compose_config("predict", f"ckpt_path={sweep}", f"input={painting}", "save=json", "num_workers=0", f"output_dir={tmp_path}"))
    saved = json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8"))
    best = json.loads((tiny_run / "results.json").read_text(encoding="utf-8"))["best_checkpoint"]
    assert saved["checkpoint"] == str(sweep / "0" / "checkpoints" / best.rsplit("/", 1)[1])

"""Run and sweep folders: the layout the config writes and artmove.runs reads, ``ckpt_path`` as evaluate,
predict, export and the demo resolve it (a file, a run folder or a sweep folder), and a saved config read as data."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from artmove.errors import ConfigError
from artmove.predict import predict
from artmove.runs.checkpoints import resolve_checkpoint as resolve
from artmove.runs.folder import RunFolder
from conftest import compose_config


def resolve_checkpoint(path):
    return resolve(path).file


def test_the_config_writes_where_the_run_folder_reads(compose_train, tmp_path):
    cfg = compose_train()
    run = RunFolder(tmp_path)
    assert Path(cfg.paths.checkpoints) == run.checkpoints and Path(cfg.paths.last_checkpoint) == run.last_checkpoint
    assert Path(cfg.paths.metrics_file) == run.metrics_file
    assert Path(cfg.callbacks.model_checkpoint.dirpath) == run.checkpoints
    logger = cfg.logger.csv
    assert Path(logger.save_dir) / logger.name / "metrics.csv" == run.metrics_file


def test_a_saved_config_is_read_as_data_and_its_data_set_by_format_name(tmp_path):
    """A run of an earlier format (its checkpoints record no data set): the saved config's data node, plain
    references followed within the file, this machine's own settings left out, the source by format name."""
    run = RunFolder(tmp_path)
    run.hydra_file("config").parent.mkdir()
    data = {
        "_target_": "artmove.data.PaintingDataModule",
        "batch_size": 8,
        "prepared_dir": "${oc.env:ARTMOVE_CACHE,'~/.cache/artmove'}",
        "seed": "${seed}",
        "group_by": None,
        "root": "/data/rasta",
        "source": {"_target_": "artmove.data.sources.RastaWikiPaintings", "_partial_": True},
    }
    OmegaConf.save({"seed": 7, "data": data}, run.hydra_file("config"))
    settings = RunFolder(tmp_path).saved_data_settings()
    assert settings.format == "rasta" and settings.root == "/data/rasta" and settings.seed == 7 and settings.source == {}
    for key, value, refused in (
        ("source", {"_target_": "pathlib.Path.write_text"}, "names code artmove's own configs never name"),
        ("source", {"_target_": "artmove.data.PaintingDataModule"}, "not one of artmove's formats"),
        ("root", "${oc.create:{a: 1}}", "interpolation artmove's configs never write"),
        ("root", "\\${seed}", "interpolation artmove's configs never write"),
        ("group_by", "${nowhere}", "refers to nowhere, which the file does not hold"),
        ("extra", 1, "extra: Extra inputs are not permitted"),
    ):
        OmegaConf.save({"seed": 7, "data": {**data, key: value}}, run.hydra_file("config"))
        with pytest.raises(ConfigError, match=refused):
            RunFolder(tmp_path).saved_data_settings()  # a folder object reads its files once: a new one for each
    run.hydra_file("config").write_text("seed: !!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not plain YAML data \(could not determine a constructor"):
        _ = RunFolder(tmp_path).saved_config


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
    run = make_run(
        tmp_path / "run",
        "best-epoch001-top10.4000.ckpt",
        "best-epoch003-top10.5000.ckpt",
        "last.ckpt",
        results={"status": "ok", "best_checkpoint": moved},
    )
    assert resolve_checkpoint(run).name == "best-epoch003-top10.5000.ckpt"
    ambiguous = make_run(tmp_path / "ambiguous", "best-a.ckpt", "best-b.ckpt")
    with pytest.raises(ConfigError, match=r"2 checkpoints and no results.json naming one"):
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
        make_run(
            tmp_path / "loss" / str(job), "last.ckpt", results={"status": "ok", "optimized_metric": "val/loss", "optimized_value": value}
        )
    assert resolve_checkpoint(tmp_path / "loss") == tmp_path / "loss" / "0" / "checkpoints" / "last.ckpt"


def test_what_is_not_a_checkpoint_gets_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint not found: ckpt_path=.*absent.ckpt is no file or folder"):
        resolve_checkpoint(tmp_path / "absent.ckpt")
    make_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"no checkpoint in .*empty/checkpoints \(neither best\*.ckpt nor last.ckpt\)"):
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


def test_each_data_option_is_the_format_of_that_name():
    """A run records its data set by the name of its conf/data option; the two agree, and each composes to a record."""
    from artmove.data.settings import DataSettings
    from artmove.data.sources import SOURCE_FORMATS
    from artmove.utils.confdoc import group_options

    assert sorted(SOURCE_FORMATS) == group_options("data")
    for name, source in SOURCE_FORMATS.items():
        cfg = compose_config("train", f"data={name}", "data.root=/data/x", "seed=5")
        assert cfg.data.source._target_ == f"artmove.data.sources.{source.__name__}"
        settings = DataSettings.from_config(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed, "x")
        assert settings.format == name and settings.seed == 5 and "cache_dir" not in settings.source  # this machine's: never recorded

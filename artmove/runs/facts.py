"""What a model card, the demo page's headline and an export say about a run, gathered once from its run
folder (results.json, the saved config read as data, an evaluation beside it), its checkpoint and its
data set's splits: facts, no formatting (``artmove.release.card`` writes them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artmove.data.datamodule import PaintingDataModule
from artmove.data.splits import artist_from_filename, shared_groups
from artmove.models.ensemble import TrainedEnsemble
from artmove.models.trained import TrainedModel
from artmove.runs.checkpoints import Checkpoint
from artmove.runs.folder import RunFolder


@dataclass
class RunFacts:
    """What the card says, gathered from the run folder and the trained checkpoint."""

    checkpoint: Path
    backbone: str
    head: str
    class_names: list[str]
    preprocessing: Mapping[str, Any]
    hparams: Mapping[str, Any]
    finetune: Mapping[str, Any]
    spec: Mapping[str, Any]  # the network's (backbone, head and its settings, dropout)
    results: dict[str, Any] = field(default_factory=dict[str, Any])  # the run's results.json ({} if it has none)
    config: dict[str, Any] | None = None  # the run's .hydra/config.yaml as plain data, if kept
    evaluation: Path | None = None  # an evaluate output folder of the test split on the training data
    split_artists: dict[str, Any] | None = None  # {"test_artists": n, "shared_with_train": m}, when the data has files
    calibration: dict[str, Any] | None = None  # temperature scaling as fitted at the end of training
    abstain: dict[str, Any] | None = None  # the "not sure" threshold chosen on validation
    members: list[dict[str, Any]] | None = None  # an ensemble's: checkpoint, backbone, head, temperature, validation top-1 of each
    conformal: dict[str, Any] | None = None  # the prediction sets' record (artmove.models.conformal), fitted on validation

    @classmethod
    def of(cls, checkpoint: Checkpoint, trained: TrainedModel) -> RunFacts:
        run: RunFolder = checkpoint.run
        results = dict(run.results)
        return cls(
            checkpoint=checkpoint.file,
            backbone=trained.backbone,
            head=trained.head,
            class_names=trained.class_names,
            preprocessing=trained.preprocessing,
            hparams=trained.hparams,
            finetune=trained.finetune,
            spec=trained.network.spec,
            results=results,
            config=run.saved_config,
            evaluation=find_evaluation(run, (results.get("data") or {}).get("root")),
            calibration=trained.calibration,
            abstain=trained.abstain,
            conformal=trained.conformal,
        )

    @classmethod
    def of_ensemble(cls, checkpoints: list[Checkpoint], ensemble: TrainedEnsemble) -> RunFacts:
        """An ensemble's facts: the first member's run for the data and training settings (every member shares
        its classes), no test scores but an evaluation of these very members (``evaluate … ensemble=…``
        beside their sweep), and a row per member."""
        first, run = ensemble.members[0], checkpoints[0].run
        results = {
            key: value
            for key, value in run.results.items()
            if not key.startswith(("test/", "best_val/", "calibration", "abstain", "conformal"))
        }
        members = [
            {
                "checkpoint": str(c.file),
                "backbone": m.backbone,
                "head": m.network.spec["head"],
                "temperature": float(m.network.temperature),
                "best_val/top1": c.run.results.get("best_val/top1"),
                "seed": c.run.results.get("seed"),
            }
            for c, m in zip(checkpoints, ensemble.members, strict=True)
        ]
        files = [str(c.file.resolve()) for c in checkpoints]
        results["seed"] = " ".join(str(member["seed"]) for member in members)
        return cls(
            checkpoint=checkpoints[0].file,
            backbone=ensemble.backbone,
            head="ensemble",
            class_names=ensemble.class_names,
            preprocessing=first.preprocessing,
            hparams=first.hparams,
            finetune=first.finetune,
            spec={"head": {"name": "ensemble"}},
            results=results,
            config=run.saved_config,
            evaluation=find_ensemble_evaluation(checkpoints, files),
            members=members,
            calibration=ensemble.calibration,
            abstain=ensemble.abstain,
            conformal=ensemble.conformal,
        )

    @property
    def test_metrics(self) -> tuple[dict[str, Any], str]:
        """Test scores and where they come from: evaluate's metrics.json beside the run, else results.json."""
        if self.evaluation is not None:
            metrics = json.loads((self.evaluation / "metrics.json").read_text(encoding="utf-8"))
            return metrics, f"`python -m artmove.evaluate` (tta={metrics.get('tta', 'none')}), {self.evaluation.name}/metrics.json"
        return self.results, "the training run's test (results.json)"


def find_evaluation(run: RunFolder, data_root: str | None) -> Path | None:
    """``<run>/eval/test*`` scored on the training data (evaluate's default), plain before TTA variants."""
    candidates = []
    for folder in sorted(run.eval_dir.glob("test*")):
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        if metrics.get("split") == "test" and (metrics.get("data") or {}).get("root") == data_root:
            candidates.append((metrics.get("tta") != "none", folder))
    return min(candidates)[1] if candidates else None


def find_ensemble_evaluation(checkpoints: list[Checkpoint], files: list[str]) -> Path | None:
    """An evaluation of exactly these members on the test split (``evaluate ckpt_path=<sweep> ensemble=…``
    writes it beside the sweep, which holds every member's run)."""
    parents = {c.run.path.resolve().parent for c in checkpoints}
    for folder in sorted(next(iter(parents)).glob("eval/test*")) if len(parents) == 1 else []:
        metrics_file = folder / "metrics.json"
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            if metrics.get("split") == "test" and metrics.get("checkpoint") == files and metrics.get("tta") == "none":
                return folder
    return None


def test_artists(datamodule: PaintingDataModule | None) -> dict[str, Any] | None:
    """The card's artist facts: how many painters the test split has, and how many of them are also in train."""
    files = None if datamodule is None else datamodule.files
    if datamodule is None or files is None:
        return None
    artist = getattr(datamodule.source, "artist", artist_from_filename)
    shared = shared_groups({"train": files["train"], "test": files["test"]}, artist)
    return {"test_artists": len({artist(path) for path, _ in files["test"]}), "shared_with_train": len(shared)}

"""W&B beside the CSV logger (``logger=wandb``): online with credentials, else offline in the run folder.

A training run never waits on W&B: without an API key (``WANDB_API_KEY`` or a netrc entry for the
W&B host) or with ``WANDB_MODE=offline`` the run is written offline under ``<run>/wandb/`` and
one line says how to upload it later (``wandb sync``); if an online start fails, it falls back
to offline. Jobs of one Hydra multirun share a W&B group (the sweep folder).
"""

from __future__ import annotations

import logging
import netrc
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from artmove.evaluation.gradcam import to_pil
from artmove.evaluation.metrics import PER_CLASS_COLUMNS, score
from artmove.evaluation.plots import plot_confusion_matrix
from artmove.runs.results import ROWS

log = logging.getLogger(__name__)
MODES = {"online": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def has_credentials() -> bool:
    """An API key in the environment or in the netrc file for the W&B host (what wandb would use)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        # no host (a URL without a scheme) matches no machine entry, only netrc's "default" one
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose_mode(mode: str | None = None) -> str:
    """``mode`` when set, else ``WANDB_MODE``, else online only with credentials: never a login prompt."""
    requested = mode or os.environ.get("WANDB_MODE")
    if requested:
        if requested not in MODES:
            raise ValueError(f"W&B mode {requested!r}: use online, offline or disabled.")
        return MODES[requested]
    return "online" if has_credentials() else "offline"


def sweep_group_and_name() -> tuple[str | None, str | None]:
    """In a Hydra multirun: the sweep folder (shared by its jobs) and the job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, None
    return str(hydra_cfg.sweep.dir), hydra_cfg.job.override_dirname or f"job {hydra_cfg.job.num}"


#: Where a run folder keeps the id of its W&B run, for a resumed attempt to log into the same run.
RUN_ID_FILE = Path("wandb") / "artmove-run-id"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


class ArtmoveWandbLogger(WandbLogger):
    """Lightning's WandbLogger that picks online/offline itself and never blocks a run.

    Online, the best checkpoint is uploaded as a model artifact (``log_model``).
    """

    def __init__(
        self,
        save_dir: str,
        project: str = "artmove",
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        mode: str | None = None,
        log_model: bool = True,
        init_timeout: float = 30.0,
        **kwargs,
    ):
        import wandb

        self.wandb_mode = choose_mode(mode)
        sweep_group, job_name = sweep_group_and_name()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            save_dir=save_dir,
            project=project,
            group=group or sweep_group,
            name=name or job_name,
            tags=[str(tag) for tag in tags],
            mode=self.wandb_mode,
            log_model=log_model and self.wandb_mode == "online",
            settings=wandb.Settings(init_timeout=init_timeout, silent=self.wandb_mode != "online"),
            **kwargs,
        )

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            # A previous job's run still open (its trainer stopped early or ran without this
            # logger, e.g. fast_dev_run): close it, or this job would log into it.
            for other in list(_OPEN_LOGGERS):
                other.finish_run()
            if self.wandb_mode == "online":
                try:
                    self._experiment = super().experiment
                except Exception as error:  # noqa: BLE001 - wandb raises several types for a network or server failure
                    log.warning("W&B could not start online (%s); logging offline instead.", error)
                    self.wandb_mode = self._wandb_init["mode"] = "offline"
                    self._log_model = False
        run = super().experiment
        _OPEN_LOGGERS.add(self)
        if self._save_dir:
            _write_text(Path(self._save_dir) / RUN_ID_FILE, run.id)
        return run

    def continue_run(self) -> None:
        """Log into the W&B run an earlier attempt in this run folder started (``resume=true``), not a new one.

        Called by ``artmove.train`` when the fit resumes from a checkpoint, before anything is logged;
        the id comes from ``<save_dir>/wandb/artmove-run-id``, written when that run started.
        """
        path = Path(self._save_dir or ".") / RUN_ID_FILE
        if self._experiment is None and path.is_file():
            self._id = self._wandb_init["id"] = path.read_text().strip()
            log.info("W&B: continuing run %s (%s)", self._id, path)

    def finish_run(self, exit_code: int = 0) -> None:
        """Finish the run; offline, say once where it is and how to upload it."""
        _OPEN_LOGGERS.discard(self)
        if self._experiment is None:
            return
        run, self._experiment = self._experiment, None
        run_dir = Path(run.dir).parent
        run.finish(exit_code=exit_code)
        if self.wandb_mode == "offline":
            print(f"W&B run saved offline in {run_dir}; upload it with: wandb sync {run_dir}", flush=True)


def gather_rows(pl_module: pl.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, rank 0's first (under DDP each rank tests its own, unpadded share)."""
    if pl_module.trainer.world_size == 1:
        return rows
    # all_gather returns what it is given, gathered: a tensor here (typed for collections too)
    counts = cast(torch.Tensor, pl_module.all_gather(torch.tensor(len(rows), device=pl_module.device))).view(-1).tolist()
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: len(rows)] = rows
    gathered = cast(torch.Tensor, pl_module.all_gather(padded.to(pl_module.device))).cpu()
    return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])


_OPEN_LOGGERS: weakref.WeakSet[ArtmoveWandbLogger] = weakref.WeakSet()


class WandbTestReport(pl.Callback):
    """What Lightning's logger does not send to W&B: parameter counts, the test table,
    per-class scores, the confusion matrix, the most confused pairs and the ``num_samples`` test
    predictions with the highest loss (this process's share of the split), with their images,
    highest loss first. Closes the W&B run after the last stage (test, or fit when ``test=false``).

    The logits are those ``test_step`` returns: one row per painting, however many forwards made it
    (``model.flip_tta`` averages two)."""

    def __init__(self, num_samples: int = 32, finish_after_test: bool = True, top_confused: int = 10):
        self.num_samples, self.finish_after_test, self.top_confused = num_samples, finish_after_test, top_confused
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        # the highest-loss images so far, with their logits and labels
        self._samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _logger(trainer: pl.Trainer) -> ArtmoveWandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, ArtmoveWandbLogger)), None)

    def on_fit_start(self, trainer, pl_module) -> None:
        logger = self._logger(trainer)
        if logger is not None and trainer.is_global_zero:
            logger.experiment.summary.update(pl_module.finetuning.parameter_counts)

    def on_test_start(self, trainer, pl_module) -> None:
        self._logits, self._labels, self._samples = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        logits, labels = outputs["logits"].float().cpu(), outputs["labels"].detach().cpu()
        self._logits.append(logits)
        self._labels.append(labels)
        inputs = batch[0]
        if self.num_samples and inputs.ndim == 4 and inputs.shape[1] == 3:  # images, not cached features
            batch_samples = (inputs.detach().float().cpu(), logits, labels)
            images, kept_logits, kept_labels = (torch.cat(parts) for parts in zip(*self._samples, batch_samples, strict=True))
            losses = torch.nn.functional.cross_entropy(kept_logits, kept_labels, reduction="none")
            top = losses.argsort(descending=True)[: self.num_samples]
            self._samples = [(images[top], kept_logits[top], kept_labels[top])]

    def on_test_end(self, trainer, pl_module) -> None:
        logger = self._logger(trainer)
        if logger is None:
            return
        num_classes = pl_module.network.num_classes
        logits = torch.cat(self._logits) if self._logits else torch.empty(0, num_classes)
        labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)
        logits, labels = gather_rows(pl_module, logits), gather_rows(pl_module, labels)  # every rank takes part
        if not trainer.is_global_zero or not len(labels):
            return
        import wandb

        probs = logits.softmax(-1)
        classes = [str(name) for name in pl_module.hparams.class_names]
        scores = score(probs, labels, classes, "test", self.top_confused)
        summary, per_class, pairs = scores.summary, scores.per_class, scores.most_confused
        images = summary["test/num_images"]
        run = logger.experiment
        png = plot_confusion_matrix(
            scores.counts.numpy(), classes, Path(run.dir) / "confusion_matrix.png", f"test ({images} images): % of each true class"
        )
        payload = {
            "test/table": wandb.Table(
                columns=["metric", "accuracy", "images"], data=[[label, summary[f"test/{key}"], images] for label, key in ROWS]
            ),
            "test/per_class": wandb.Table(columns=list(PER_CLASS_COLUMNS), data=[[row[c] for c in PER_CLASS_COLUMNS] for row in per_class]),
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=probs.argmax(1).tolist(), class_names=classes
            ),
            "test/confusion_matrix_image": wandb.Image(str(png)),
            "test/most_confused": wandb.Table(columns=list(pairs[0]) if pairs else ["class_a"], data=[list(p.values()) for p in pairs]),
        }
        if self._samples:
            payload["test/predictions"] = self._predictions_table(*self._samples[0], classes, pl_module)
        run.log(payload)

    @staticmethod
    def _predictions_table(images, logits, labels, classes, pl_module):
        """Highest loss first: the paintings the model gets most wrong, where to look first."""
        import wandb

        preprocessing = pl_module.preprocessing
        probs, losses = logits.softmax(-1), torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        table = wandb.Table(columns=["image", "true", "predicted", "p_predicted", "p_true", "loss", "correct"])
        for index in losses.argsort(descending=True).tolist():
            label, predicted = int(labels[index]), int(probs[index].argmax())
            table.add_data(
                wandb.Image(to_pil(images[index], preprocessing["mean"], preprocessing["std"])),
                classes[label],
                classes[predicted],
                float(probs[index, predicted]),
                float(probs[index, label]),
                float(losses[index]),
                label == predicted,
            )
        return table

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "test" or (stage == "fit" and not self.finish_after_test):
            logger = self._logger(trainer)
            if logger is not None:
                logger.finish_run()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        logger = self._logger(trainer)
        if logger is not None:
            logger.finish_run(exit_code=1)

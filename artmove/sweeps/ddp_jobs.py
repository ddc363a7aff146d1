"""DDP jobs inside Hydra sweeps: a job whose ranks Lightning starts by re-running the command line
runs as a single run in a process of its own."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from artmove.runs.command_line import hydra_string
from artmove.runs.folder import RunFolder

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def needs_own_process(trainer_cfg: DictConfig) -> bool:
    """True for ``strategy=ddp`` (or ``ddp_find_unused_parameters_true``…) inside a Hydra multirun,
    with the ranks started by Lightning.

    Lightning starts ranks > 0 by re-running the command line: inside a sweep that is the
    whole sweep (``-m a=1,2``), and its DDP settings (environment, process group) would
    outlive the job. Such a job therefore runs in a process of its own
    (:func:`run_in_own_process`). Ranks started by the cluster (SLURM tasks, torchrun)
    need none of this.
    """
    return relaunches_command(trainer_cfg.get("strategy")) and in_multirun() and not processes_started_externally()


RELAUNCHING_STRATEGIES = ("DDPStrategy", "FSDPStrategy", "DeepSpeedStrategy")


def relaunches_command(strategy: Any) -> bool:
    """Whether Lightning starts ranks > 0 by re-running the command line: the default launch of DDP,
    FSDP and DeepSpeed, named (``ddp``, ``ddp_find_unused_parameters_true``, ``fsdp``) or configured
    (``{_target_: pytorch_lightning.strategies.DDPStrategy}``, unless its ``start_method`` is not popen)."""
    if isinstance(strategy, Mapping):
        target = str(strategy.get("_target_", "")).rsplit(".", 1)[-1]
        return target in RELAUNCHING_STRATEGIES and strategy.get("start_method", "popen") == "popen"
    name = str(strategy)
    return name.startswith(("ddp", "fsdp", "deepspeed")) and not any(way in name for way in ("spawn", "fork", "notebook"))


def run_in_own_process() -> dict[str, Any]:
    """Run this sweep job as a single run of its own command line in a new process; return its results.json.

    The new process is an ordinary single run (``python -m artmove.train <the job's overrides>
    hydra.run.dir=<job>``): the overrides are the job's, as Hydra holds them in memory (never read back
    from a file), so the config composes from artmove's own config groups as the job's did. Lightning's
    DDP launch works there as it does outside sweeps, and everything it sets up ends with it. A run that
    fails records its failure itself; a process that dies before writing results.json raises here.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    job = RunFolder(Path(hydra_cfg.runtime.output_dir))
    job_dir = job.path
    job.results_file.unlink(missing_ok=True)
    overrides = list(hydra_cfg.overrides.task)
    command = [
        sys.executable,
        "-m",
        "artmove.train",
        *overrides,
        f"hydra.run.dir={hydra_string(str(job_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}",
    ]
    log.info("DDP inside a sweep: job %s runs in its own process (%s)", hydra_cfg.job.num, " ".join(overrides))
    returncode = subprocess.run(command, cwd=get_original_cwd()).returncode
    if not job.results:
        raise ChildProcessError(
            f"the job's DDP processes exited with code {returncode} before writing {job.results_file}: "
            f"see {job_dir}/train.log and the output above."
        )
    return job.results


def processes_started_externally() -> bool:
    """True when a cluster launcher (SLURM with one task per device, torchrun) started the ranks."""
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return True
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    return SLURMEnvironment.detect() and SLURMEnvironment.job_name() not in ("bash", "interactive") and slurm_tasks > 1

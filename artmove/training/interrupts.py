"""How a training run ends early: exit codes, Ctrl-C as a graceful stop, SLURM's requeue signal.

Lightning stops ``fit`` at the next step boundary once it has received SIGTERM
(``SIGTERMException``); ``artmove.training.callbacks.CheckpointOnStop`` saves ``last.ckpt`` then, and
``artmove.train`` exits with :data:`EXIT_INTERRUPTED`. A first Ctrl-C takes the same path; a
second one quits at once with :data:`EXIT_ABORTED`. Under SLURM, SIGUSR1 (``#SBATCH
--signal=USR1@120``) takes it too, and the job is requeued (``scontrol requeue``) once the
checkpoint is saved: the requeued job reruns in the same folder and ``resume=true`` continues.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped by a signal, last.ckpt saved, resume=true continues
EXIT_ABORTED = 130  # 128 + SIGINT: a second Ctrl-C, nothing saved beyond the last checkpoint


@contextlib.contextmanager
def _handled_in_main_process(signum: int, handle: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``signum`` calls ``handle()`` in this process (not in forked data-loader workers,
    which inherit the handler: the main process decides). Signal handlers belong to the main thread:
    elsewhere nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame) -> None:
        if os.getpid() == owner:
            handle()

    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextlib.contextmanager
def ctrl_c_stops_after_step() -> Iterator[None]:
    """Within the block, a first Ctrl-C asks Lightning to stop as on SIGTERM; a second exits at once."""
    presses = []

    def on_ctrl_c() -> None:
        presses.append(signal.SIGINT)
        if len(presses) > 1:
            os.write(2, b"\nsecond Ctrl-C: quitting now\n")
            os._exit(EXIT_ABORTED)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt  # Lightning is not listening yet: stop as Python does
        os.write(2, b"\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)\n")
        os.kill(os.getpid(), signal.SIGTERM)

    with _handled_in_main_process(signal.SIGINT, on_ctrl_c):
        yield


def slurm_job_id() -> str | None:
    """This SLURM job's id as ``scontrol`` takes it (``<array job>_<task>`` in a job array), else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


@contextlib.contextmanager
def slurm_usr1_requeues() -> Iterator[None]:
    """Within the block, under SLURM, SIGUSR1 stops the run as SIGTERM does; the job is requeued on the way out.

    Installed before ``fit``, this handler keeps Lightning's own (which writes ``hpc_ckpt_N.ckpt``
    from inside the signal handler, mid-step, where ``resume=true`` does not look) from being set.
    """
    job = slurm_job_id()
    if job is None:
        yield
        return
    asked: list[signal.Signals] = []

    def on_usr1() -> None:
        if not asked:
            asked.append(signal.SIGUSR1)
            os.write(2, b"\nSIGUSR1 (SLURM): saving a checkpoint after this step, then requeueing the job\n")
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        with _handled_in_main_process(signal.SIGUSR1, on_usr1):
            yield
    finally:
        if asked and int(os.environ.get("SLURM_PROCID", "0")) == 0:
            requeue(job)


def requeue(job: str) -> None:
    """``scontrol requeue <job>``: SLURM starts the same batch script again (same folder, resume=true)."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not requeue SLURM job %s (%s): resubmit it to continue", job, error)
        return
    if done.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed (%s): resubmit it to continue", job, done.stderr.strip() or done.returncode)

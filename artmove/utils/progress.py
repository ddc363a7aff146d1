"""A progress bar with images per second on stderr for long loops (feature extraction, prepare, evaluate, predict).

On a terminal it refreshes every second; in a log file (SLURM, nohup) every 30 s, so the log
stays short. ``TQDM_DISABLE=1`` turns it off (tqdm reads ``TQDM_*`` settings from the environment).
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, what: str) -> tqdm:
    """A bar over ``total`` images: ``bar.update(len(batch))`` after each batch."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=what, unit="img", file=sys.stderr, mininterval=1 if interactive else 30,
                dynamic_ncols=interactive, smoothing=0.1)  # fmt: skip

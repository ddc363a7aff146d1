"""A progress bar with images per second on stderr for long loops (feature extraction, prepare, evaluate, predict).

On a terminal it refreshes every second, in place; in a log file (SLURM, nohup, a pipe) it writes a
plain line every 30 s and no carriage returns, so the log reads line by line. ``TQDM_DISABLE=1``
turns it off (tqdm reads ``TQDM_*`` settings from the environment).
"""

from __future__ import annotations

import io
import sys

from tqdm import tqdm


class PlainLines(io.TextIOBase):
    """A text stream that writes each of tqdm's redraws (``\\r…``) as a line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, what: str) -> tqdm:
    """A bar over ``total`` images: ``bar.update(len(batch))`` after each batch."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=what,
        unit="img",
        file=sys.stderr if interactive else PlainLines(sys.stderr),
        mininterval=1 if interactive else 30,
        dynamic_ncols=interactive,
        smoothing=0.1,
    )

"""How a training run ends early: exit codes, and Ctrl-C as a graceful stop.

Lightning stops ``fit`` at the next step boundary once it has received SIGTERM
(``SIGTERMException``); ``artmove.callbacks.CheckpointOnStop`` saves ``last.ckpt`` then, and
``artmove.train`` exits with :data:`EXIT_INTERRUPTED`. A first Ctrl-C takes the same path; a
second one quits at once with :data:`EXIT_ABORTED`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped by a signal, last.ckpt saved, resume=true continues
EXIT_ABORTED = 130  # 128 + SIGINT: a second Ctrl-C, nothing saved beyond the last checkpoint


@contextlib.contextmanager
def ctrl_c_stops_after_step() -> Iterator[None]:
    """Within the block, a first Ctrl-C asks Lightning to stop as on SIGTERM; a second exits at once."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    owner, presses = os.getpid(), []

    def on_ctrl_c(signum, frame) -> None:
        if os.getpid() != owner:  # a forked data-loader worker: the main process decides
            return
        presses.append(signum)
        if len(presses) > 1:
            os.write(2, b"\nsecond Ctrl-C: quitting now\n")
            os._exit(EXIT_ABORTED)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt  # Lightning is not listening yet: stop as Python does
        os.write(2, b"\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)\n")
        os.kill(owner, signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

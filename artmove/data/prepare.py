"""`python -m artmove.data.prepare data=rasta data.root=... size=256 [format=npy|jpeg]`: write the resized cache once.

Each file gets a copy with its short side at ``size`` under ``data.prepared_dir``, keyed by
path, size and modification time (artmove/data/prepared.py); training then reads the copies.
Files that already have a current copy are skipped, so a second run does no work.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import hydra
from omegaconf import DictConfig

from artmove.data.images import UnreadableImageError
from artmove.data.prepared import FORMATS, cache_path, write_resized
from artmove.data.tools import all_files, load_datamodule, say, workers
from artmove.errors import ConfigError
from artmove.utils.cli import exit_on_user_error
from artmove.utils.progress import progress


def prepare_one(path: Path, prepared_dir: Path, size: int, fmt: str) -> str:
    """'written', 'present' or the reason the file was skipped."""
    try:
        target = cache_path(prepared_dir, path, size, fmt)
        if target.is_file():
            return "present"
        write_resized(path, target, size)
        return "written"
    except (UnreadableImageError, OSError) as error:
        return f"bad: {error}"


def prepare(paths: list[Path], prepared_dir: Path, size: int, processes: int, fmt: str = "npy") -> list[str]:
    outcomes = []
    with ProcessPoolExecutor(processes) as pool, progress(len(paths), f"prepare {size} px") as bar:
        for outcome in pool.map(partial(prepare_one, prepared_dir=prepared_dir, size=size, fmt=fmt), paths, chunksize=8):
            outcomes.append(outcome)
            bar.update()
    return outcomes


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="data_tools")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    started = time.time()
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: use one of {', '.join(FORMATS)}.")
    datamodule = load_datamodule(cfg)
    if datamodule.prepared_dir is None:
        raise ConfigError("data.prepared_dir is null: set data.prepared_dir=/path/for/the/cache.")
    paths = [p for p in all_files(datamodule) if p.exists()]
    outcomes = prepare(paths, datamodule.prepared_dir, int(cfg.size), workers(cfg.workers), cfg.format)
    counts = Counter(o if not o.startswith("bad") else "bad" for o in outcomes)
    say(
        "prepared %d files at short side %d px (%s) in %.1f s: %d written, %d already there, %d unreadable; cache %s",
        len(paths),
        cfg.size,
        cfg.format,
        time.time() - started,
        counts["written"],
        counts["present"],
        counts["bad"],
        datamodule.prepared_dir / f"s{cfg.size}",
    )
    for outcome in outcomes:
        if outcome.startswith("bad"):
            say("  %s", outcome)


if __name__ == "__main__":
    main()

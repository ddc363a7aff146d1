"""`python -m artmove.data.verify data=rasta data.root=...`: decode every file, write the bad list.

Writes ``bad_files.tsv`` (path, reason) to the run folder and exits with 1 when more than
``data.max_bad_fraction`` of the files are bad (training would stop on such a set).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import hydra
from omegaconf import DictConfig

from artmove.data.files import FileCheck, check_file
from artmove.data.tools import all_files, load_datamodule, say, workers
from artmove.utils.cli import exit_on_user_error
from artmove.utils.io import printable


def decode_check(path: Path) -> FileCheck:
    return check_file(path, decode=True) if path.exists() else FileCheck(path, None, "listed but missing")


def verify(paths: list[Path], processes: int) -> list[FileCheck]:
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(decode_check, paths, chunksize=16))


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="data_tools")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    started = time.time()
    datamodule = load_datamodule(cfg)
    paths = all_files(datamodule)
    bad = [check for check in verify(paths, workers(cfg.workers)) if check.error]
    report = Path(cfg.paths.output_dir) / "bad_files.tsv"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("".join(f"{printable(str(c.path))}\t{c.error}\n" for c in bad), encoding="utf-8")
    share = len(bad) / max(1, len(paths))
    say("verified %d files in %.1f s: %d bad (%.2f%%); list: %s", len(paths), time.time() - started, len(bad), 100 * share, report)
    for check in bad:
        say("  bad: %s (%s)", check.path, check.error)
    if share > cfg.data.max_bad_fraction:
        say(
            "more than data.max_bad_fraction=%s of the files are bad: training on this set would stop. Fix or remove "
            "the files listed in %s, or raise data.max_bad_fraction.",
            cfg.data.max_bad_fraction,
            report,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()

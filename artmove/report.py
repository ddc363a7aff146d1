"""`python -m artmove.report PATH [PATH ...]`: one table and two figures for a sweep (or any runs)
(``artmove.evaluation.report``): report.md, runs.csv, settings.csv and the PNGs beside the runs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from artmove.evaluation.report import RANKINGS, SELECTED, write_report
from artmove.runs.folder import find_runs
from artmove.utils.help import argparse_description, argparse_epilog


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m artmove.report",
        description=argparse_description("artmove.report"),
        epilog=argparse_epilog("report"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", help="a multirun folder, run folders, or folders holding runs")
    parser.add_argument("--out", help="where to write report.md, the CSVs and PNGs (default: PATH, or the paths' common folder)")
    parser.add_argument(
        "--metric",
        default=SELECTED,
        choices=RANKINGS,
        help="the column runs are ranked by (default: optimized_value, each job's value of the metric it was "
        "selected on, validation top-1 unless the sweep set optimized_metric)",
    )
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}")
    if not find_runs(args.paths):
        parser.error(f"no training runs (folders with results.json or .hydra/config.yaml) under {', '.join(args.paths)}")
    out = args.out or (args.paths[0] if len(args.paths) == 1 else os.path.commonpath([str(Path(p).resolve()) for p in args.paths]))
    report = write_report(args.paths, out, args.metric)
    print(report.read_text(encoding="utf-8"))
    print(f"Report: {report}")


if __name__ == "__main__":
    main()

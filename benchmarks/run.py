"""`make bench`: run every benchmarks/bench_*.py (or those named) and keep the numbers in results/.

Each module defines ``run() -> dict``: the measured numbers (ratios are measured side by side
in one run, since the machine is shared and noisy) and a ``summary`` line. The result is
written to ``benchmarks/results/<name>.json`` together with the machine it ran on, the date and
the command; a module whose numbers hold ``rows`` (one dict per measurement) also gets
``benchmarks/results/<name>.md``, a Markdown table of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def machine() -> dict:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def markdown(record: dict) -> str:
    """The rows as a Markdown table, headed by what produced them."""
    rows = record["rows"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    machine = record["machine"]
    lines = [
        f"# Benchmark `{record['benchmark']}`",
        "",
        f"`{record['command']}` on {record['date']}: {machine['cpu_count']} CPUs ({machine['platform']}), "
        f"torch {machine['torch']}, GPU: {machine['cuda'] or 'none'}; {record['seconds']} s."
        + (f" Note: {record['note']}." if record["note"] else ""),
        "",
        f"Settings: {json.dumps(record.get('settings', {}))}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |" for row in rows),
        "",
        record.get("summary", ""),
        "",
    ]
    return "\n".join(lines)


def write_results(name: str, numbers: dict, seconds: float, command: str, note: str = "", directory: Path = HERE / "results") -> Path:
    """``<directory>/<name>.json`` (and ``<name>.md`` when the numbers have rows), with machine, date and command."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(seconds, 1),
        "command": command,
        "note": note,
        "machine": machine(),
        **numbers,
    }
    (directory / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    if numbers.get("rows"):
        (directory / f"{name}.md").write_text(markdown(record))
    return directory / f"{name}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark names (bench_<name>.py); default: all (those needing a GPU only on one)")
    parser.add_argument("--note", default="", help="kept with the results, e.g. 'machine shared with other jobs'")
    parser.add_argument("--threads", type=int, help="torch threads (1 on a CPU shared with other jobs: no spinning threads)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("BENCH_")]  # the sizes used
    command = " ".join([*sizes, "python -m benchmarks.run", shlex.join(sys.argv[1:])])
    names = args.names or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if not args.names and getattr(module, "NEEDS_GPU", False) and not torch.cuda.is_available():
            print(f"[{name}] skipped: needs a CUDA GPU", flush=True)
            continue
        started = time.time()
        numbers = module.run()
        path = write_results(name, numbers, time.time() - started, command, args.note)
        print(f"[{name}] {numbers.get('summary', '')}  -> {path.relative_to(HERE.parent)}", flush=True)


if __name__ == "__main__":
    main()

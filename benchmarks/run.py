"""`make bench`: run every benchmarks/bench_*.py (or those named) and keep the numbers in results/.

Each module defines ``run() -> dict``: the measured numbers (ratios are measured side by side
in one run, since the machine is shared and noisy) and a ``summary`` line. The result is
written to ``benchmarks/results/<name>.json`` together with the machine it ran on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark names (bench_<name>.py); default: all")
    args = parser.parse_args()
    names = args.names or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    (HERE / "results").mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.time()
        numbers = module.run()
        record = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1),
                  "machine": machine(), **numbers}  # fmt: skip
        (HERE / "results" / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"[{name}] {numbers.get('summary', '')}  -> benchmarks/results/{name}.json", flush=True)


if __name__ == "__main__":
    main()

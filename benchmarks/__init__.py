"""Benchmarks run by `make bench`; each `bench_*.py` module writes its numbers to results/."""

import os
from pathlib import Path

# The real painting sets: $ARTMOVE_DATA, default ../shared/data beside the checkout (as the tests).
DATA = Path(os.environ.get("ARTMOVE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

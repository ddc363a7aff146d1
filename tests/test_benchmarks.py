"""The benchmarks run end to end at tiny sizes and write JSON + Markdown with machine, date and command."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_overhead, bench_partial, bench_setup
from benchmarks.run import write_results

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 30 s on 2 idle cores, 90 s on busy ones
def test_gpu_benchmark_smoke_runs_on_the_cpu(tmp_path, wikipaintings_small):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_gpu", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_smoke.json").read_text())
    cases = [row["case"] for row in record["rows"]]
    assert cases[:5] == [
        "full, fp32",
        "full, bf16-mixed",
        "full, bf16-mixed + channels-last (trainer=gpu)",
        "unfreeze=0.2, same settings",
        "plain loop, full, same settings",
    ]
    assert cases[5].startswith("end-to-end epoch") and all(row["images_per_s"] > 0 and row["peak_rss_mb"] > 100 for row in record["rows"])
    assert record["command"] == "python -m benchmarks.bench_gpu --smoke" and record["machine"]["torch"]
    assert set(record["ratios"]) == {"lightning_vs_plain", "unfreeze_0.2_vs_full", "end_to_end_vs_in_memory"}
    table = (tmp_path / "gpu_smoke.md").read_text()
    assert "| case | images_per_s | peak_rss_mb |" in table and "| full, fp32 |" in table


@pytest.mark.slow  # about 30 s on 2 busy cores
def test_training_benchmarks_at_tiny_sizes(monkeypatch, tmp_path):
    for module in (bench_overhead, bench_partial):
        monkeypatch.setattr(module, "IMAGE_SIZE", 32)
        monkeypatch.setattr(module, "BATCH", 4)
        monkeypatch.setattr(module, "STEPS", 3)
        monkeypatch.setattr(module, "REPEATS", 1)
    monkeypatch.setattr(bench_overhead, "CASES", [("test_resnet", 0.2)])
    monkeypatch.setattr(bench_partial, "BACKBONE", "test_resnet")
    (overhead,) = bench_overhead.run()["rows"]
    assert overhead["backbone"] == "test_resnet" and overhead["ratio"] == pytest.approx(
        overhead["lightning_images_per_s"] / overhead["plain_images_per_s"], abs=0.01
    )
    partial = bench_partial.run()
    assert [row["unfreeze"] for row in partial["rows"]] == [0.0, 0.2, 1.0, "forward only"] and partial["rows"][2][
        "speedup_vs_unfreeze_1"
    ] == 1.0
    forward = partial["rows"][3]  # the ceiling of any partial fine-tuning: full step time / forward time
    assert forward["speedup_vs_unfreeze_1"] == pytest.approx(forward["images_per_s"] / partial["rows"][2]["images_per_s"], abs=0.01)
    path = write_results("partial", partial, 1.0, "python -m benchmarks.run partial", "shared machine", tmp_path)
    assert json.loads(path.read_text())["note"] == "shared machine"
    assert "| backbone | unfreeze | images_per_s | speedup_vs_unfreeze_1 | peak_rss_mb |" in (tmp_path / "partial.md").read_text()


def test_setup_benchmark_remembers_the_screening(monkeypatch):
    monkeypatch.setattr(bench_setup, "FILES", 300)
    first, second = bench_setup.run()["rows"]
    assert first["files"] == second["files"] == 300 and second["met"] and second["seconds_to_first_step"] > 0


@pytest.mark.parametrize("module", sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"))
def test_every_benchmark_module_imports(module):
    """A benchmark that imports a name the code no longer has would only fail at `make bench`."""
    importlib.import_module(f"benchmarks.{module}")

"""`python -m benchmarks.compare_recipes`: the paintings recipe against plain fine-tuning -> docs/recipes.md.

Runs `python -m artmove.train` for every setting x data set x seed: the head-only probe and plain
`unfreeze=0.2` with today's defaults (tf_efficientnet_lite0, packaged ImageNet weights), and
`experiment=paintings` with each head (and with tf_efficientnet_lite2), on ../shared/data
(ARTMOVE_DATA) wikiart_sample and wikipaintings_small. Each run keeps its best epoch by validation
top-1 and is tested there; the table shows validation and test top-1 as mean ± std over the
seeds, and which recipe variant validation picks. Writes benchmarks/results/recipes.json and
docs/recipes.md; nothing in that table is typed by hand. `--set KEY=VALUE` adds overrides to every
run (a smaller scale: say so, it is printed with the table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from artmove.results import write_json
from benchmarks import DATA
from benchmarks.run import machine

REPO = Path(__file__).resolve().parents[1]
DATA_SETS = {
    # ArtGAN's official val images are the test split; 10 % of train is carved off for validation.
    "wikiart_sample": ["data=wikiart", "data.source.test_from=val"],
    "wikipaintings_small": ["data=rasta"],
}
BASELINE = ["backbone=tf_efficientnet_lite0", "pretrained=true"]
SETTINGS = (
    ("head-only probe", [*BASELINE, "unfreeze=0"]),
    ("plain unfreeze=0.2", [*BASELINE, "unfreeze=0.2"]),
    ("recipe", ["experiment=paintings"]),
    ("recipe, head=multiscale", ["experiment=paintings", "head=multiscale"]),
    ("recipe, head=gram", ["experiment=paintings", "head=gram"]),
    ("recipe, tf_efficientnet_lite2", ["experiment=paintings", "backbone=tf_efficientnet_lite2", "image_size=260"]),
)
RECIPES = tuple(name for name, _ in SETTINGS if name.startswith("recipe"))
SEEDS = (1, 2, 3)
RESULTS = REPO / "benchmarks" / "results" / "recipes.json"
DOC = REPO / "docs" / "recipes.md"

TEMPLATE = """# A recipe for paintings, measured

Produced by `{command}` (do not edit by hand: run it again). {scale}

Every run: `python -m artmove.train <setting> <data> seed=<seed> trainer.accelerator={accelerator}{extra}`;
each keeps its best epoch by validation top-1 and is tested there. Mean ± std over seeds {seeds}
({machine}; {date}; other jobs may have shared the machine, so wall times are rough).

{tables}

Settings:
{settings}

Data: `wikiart_sample` (ArtGAN's WikiArt style split, 11 styles; `data=wikiart data.source.test_from=val`:
the official val images are the test split, 10 % of train carved off for validation) and
`wikipaintings_small` (RASTA layout, 25 movements, its own train/val/test folders).
"""


def run_dir(out: Path, data: str, name: str, seed: int) -> Path:
    slug = name.replace(", ", "_").replace(" ", "_").replace("=", "")
    return out / data / slug / f"seed{seed}"


def train(job: tuple[str, str, list[str], int], out: Path, extra: list[str], threads: int, accelerator: str) -> dict:
    data, name, overrides, seed = job
    folder = run_dir(out, data, name, seed)
    command = [sys.executable, "-m", "artmove.train", *DATA_SETS[data], f"data.root={DATA / data}", *overrides,
               f"seed={seed}", f"trainer.accelerator={accelerator}", *extra, f"hydra.run.dir={folder}"]  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)  # a fresh run: never resume an earlier one's checkpoints
    started = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ARTMOVE_CACHE": str(out / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{data} / {name} / seed {seed} failed:\n{done.stderr[-3000:]}")
    results = json.loads((folder / "results.json").read_text())
    keys = ("best_val/top1", "test/top1", "test/top3", "test/top1_macro", "test/top1_ci95_low", "test/top1_ci95_high",
            "test/num_images", "trainable_params", "epochs")  # fmt: skip
    row = {"data": data, "name": name, "overrides": overrides, "seed": seed, **{k: results.get(k) for k in keys}}
    print(f"{data} / {name} / seed {seed}: val {row['best_val/top1']:.3f} test {row['test/top1']:.3f} "
          f"({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    return {**row, "wall_time_s": round(time.time() - started, 1)}


def summarise(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """{data: {setting: mean/std of val and test top-1, wall time, seeds}} in SETTINGS order."""
    summary: dict[str, dict[str, dict]] = {}
    for data in dict.fromkeys(r["data"] for r in runs):
        summary[data] = {}
        for name, _ in SETTINGS:
            members = [r for r in runs if r["data"] == data and r["name"] == name]
            if not members:
                continue
            item = {"seeds": [m["seed"] for m in members]}
            for key in ("best_val/top1", "test/top1", "wall_time_s"):
                values = [m[key] for m in members]
                item[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
            summary[data][name] = item
    return summary


def chosen_on_validation(settings: dict[str, dict]) -> str | None:
    """The recipe variant with the best mean validation top-1 (the test split plays no part)."""
    measured = [name for name in RECIPES if name in settings]
    return max(measured, key=lambda name: settings[name]["best_val/top1"][0]) if measured else None


def _mean_std(value: tuple[float, float | None], scale: float = 1.0, digits: int = 3) -> str:
    mean, std = value
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}" if std is not None else f"{mean * scale:.{digits}f}"


def tables(summary: dict[str, dict[str, dict]]) -> str:
    parts = []
    for data, settings in summary.items():
        chosen = chosen_on_validation(settings)
        plain = settings.get("plain unfreeze=0.2")
        lines = [f"### {data}", "", "| setting | seeds | val top-1 | test top-1 | test top-1 vs plain unfreeze=0.2 (points) | wall time (s) |",
                 "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name, item in settings.items():
            delta = "" if plain is None else f"{100 * (item['test/top1'][0] - plain['test/top1'][0]):+.1f}"
            label = f"**{name}** (chosen on val)" if name == chosen else name
            lines.append(f"| {label} | {' '.join(map(str, item['seeds']))} | {_mean_std(item['best_val/top1'])} | "
                         f"{_mean_std(item['test/top1'])} | {delta} | {_mean_std(item['wall_time_s'], digits=0)} |")  # fmt: skip
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render(record: dict) -> str:
    extra = record["extra"]
    command = "python -m benchmarks.compare_recipes " + " ".join(
        [f"--seeds {' '.join(map(str, record['seeds']))}", f"--data {' '.join(record['data'])}"]
        + [f"--set {o}" for o in extra] + [f"--jobs {record['jobs']} --threads {record['threads']}"])  # fmt: skip
    scale = ("Full scale: every setting as its preset or today's defaults say." if not extra else
             f"**Reduced scale** (`{' '.join(extra)}` on every run): not the full measurement; "
             "the full one is the command without `--set`.")  # fmt: skip
    settings = "\n".join(f"- {name}: `{' '.join(overrides)}`" for name, overrides in SETTINGS)
    m = record["machine"]
    return TEMPLATE.format(
        command=command, scale=scale, accelerator=record["accelerator"], extra="".join(f" {o}" for o in extra),
        seeds=", ".join(map(str, record["seeds"])), date=record["date"], tables=tables(summarise(record["runs"])),
        machine=f"{m['cpu_count']} CPUs, {record['threads']} torch thread(s) per run, {record['jobs']} run(s) at a time"
        + (f", {m['cuda']}" if m.get("cuda") else ""), settings=settings,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--data", nargs="+", choices=list(DATA_SETS), default=list(DATA_SETS))
    parser.add_argument("--settings", nargs="+", choices=[name for name, _ in SETTINGS], metavar="NAME",
                        help="only these settings (default: all)")  # fmt: skip
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, e.g. --set trainer.max_epochs=2 (a reduced scale, stated in the doc)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (a GPU or many cores)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator of every run (cpu, gpu, auto)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "recipes", help="where the runs go")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--render", action="store_true", help="only rewrite the doc from the results JSON")
    args = parser.parse_args(argv)
    if args.render:
        record = json.loads(args.results.read_text())
    else:
        missing = [name for name in args.data if not (DATA / name).is_dir()]
        if missing:
            raise SystemExit(f"{', '.join(missing)} not found in {DATA}: set ARTMOVE_DATA to the folder holding them.")
        chosen = [(name, overrides) for name, overrides in SETTINGS if not args.settings or name in args.settings]
        jobs = [(data, name, overrides, seed) for data in args.data for name, overrides in chosen for seed in args.seeds]
        record = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "seeds": args.seeds, "data": args.data,
                  "extra": args.extra, "jobs": args.jobs, "threads": args.threads, "accelerator": args.accelerator,
                  "runs": []}  # fmt: skip
        lock = threading.Lock()

        def run_and_keep(job):  # each finished run is saved at once: a later failure loses nothing
            row = train(job, args.out, args.extra, args.threads, args.accelerator)
            with lock:
                record["runs"].append(row)
                record["runs"].sort(key=lambda r: jobs.index((r["data"], r["name"], r["overrides"], r["seed"])))
                write_json(args.results, record)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(run_and_keep, jobs))
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(record))
    print(f"-> {args.doc}, {args.results}", flush=True)


if __name__ == "__main__":
    main()

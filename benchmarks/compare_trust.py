"""`python -m benchmarks.compare_trust`: calibration, "not sure" and the ensemble of a sweep's seeds, measured -> docs/recipes.md.

For each data set (wikiart_sample, wikipaintings_small on ARTMOVE_DATA) and seed, trains the recipe
(`experiment=paintings`) and plain `unfreeze=0.2` as benchmarks.compare_recipes does (with today's
defaults: `calibrate=true abstain_target=0.9`), then reads each run's results.json: the temperature
fitted on validation, test ECE and NLL of the raw logits and of the calibrated ones, and the test
coverage and top-1 of the answers at or above the "not sure" threshold chosen on validation.
`python -m artmove.evaluate` scores each run on the test split (its ECE beside what a perfectly
calibrated model would show on those images: `ece_floor`, `ece_p`), and the ensemble of the recipe's
seeds (`ckpt_path=[seed1,seed2,…]`): top-1, top-5 and ECE of the ensemble against the mean single seed.
Writes benchmarks/results/trust.json, and its section of docs/recipes.md through benchmarks.compare_recipes
(nothing in it is typed by hand). `--set KEY=VALUE` adds overrides to every
run (a reduced scale, stated in the doc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from artmove.utils.io import write_json
from benchmarks import DATA
from benchmarks.compare_recipes import DATA_SETS, REPO, SETTINGS, add_measurement_arguments, row_of, run_dir
from benchmarks.compare_recipes import main as render_recipes
from benchmarks.compare_recipes import train as train_setting
from benchmarks.run import machine

RESULTS = REPO / "benchmarks" / "results" / "trust.json"
TRUSTED = ("recipe", "plain unfreeze=0.2")
ENSEMBLED = "recipe"  # the setting whose seeds are averaged
SEEDS = (1, 2, 3)
#: The issue's targets: ECE after temperature scaling on both sets, the ensemble's gain on wikiart_sample.
ECE_TARGET, ENSEMBLE_TARGET_POINTS = 0.03, 1.5
TRUST_KEYS = ("test/top1", "test/top5", "test/ece", "test/nll", "test/ece_uncalibrated", "test/nll_uncalibrated",
              "test/abstain_coverage", "test/abstain_top1", "calibration", "abstain")  # fmt: skip
#: What `evaluate` adds to each run: a perfectly calibrated model's mean ECE on these images, the share of its draws at or above
#: the ECE, and the mean top-1 probability (above top-1: over-confident).
REFERENCE_KEYS = ("test/ece_floor", "test/ece_p", "test/confidence")
#: An ECE whose ece_p is at least this is one a calibrated model shows on this split.
CONSISTENT_P = 0.05


def train(job: tuple[str, str, list[str], int], out: Path, extra: list[str], threads: int, accelerator: str, keep_finished: bool) -> dict:
    """compare_recipes' run, plus what calibration and the threshold left in its results.json, and its ECE's
    reference from `evaluate` on the test split. With ``keep_finished``, a run folder that already holds a
    finished, calibrated run of this job is read, not retrained (and its evaluation, when it has one, kept)."""
    folder = run_dir(out, job[0], job[1], job[3])
    evaluated = folder / "eval" / "test"
    results = finished(folder, job, extra, accelerator) if keep_finished else None
    scores = None
    if results is not None:  # kept, with its evaluation when it has one
        row, scores = row_of(job, results, results.get("wall_time_s")), evaluated_scores(evaluated)
        print(f"{job[0]} / {job[1]} / seed {job[3]}: kept the finished run in {folder}", flush=True)
    else:
        row = train_setting(job, out, extra, threads, accelerator)
        results = json.loads((folder / "results.json").read_text())
    scores = scores or evaluate([folder], evaluated, threads, device_of(accelerator))
    return {**row, **{key: results.get(key) for key in TRUST_KEYS}, **{key: scores.get(key) for key in REFERENCE_KEYS}}


def device_of(accelerator: str) -> str:
    return "cuda" if accelerator == "gpu" else "cpu" if accelerator == "cpu" else "auto"


def finished(folder: Path, job: tuple[str, str, list[str], int], extra: list[str], accelerator: str) -> dict | None:
    """The run's results.json when it finished calibrated with the very command this job gives, else None."""
    data, _, overrides, seed = job
    try:
        results = json.loads((folder / "results.json").read_text())
        given = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    command = [*DATA_SETS[data], f"data.root={DATA / data}", *overrides, f"seed={seed}", f"trainer.accelerator={accelerator}", *extra]
    if results.get("status") != "ok" or "calibration" not in results or given != command:
        return None
    return results


def evaluate(checkpoints: list[Path], folder: Path, threads: int, device: str) -> dict:
    """`python -m artmove.evaluate` of one run or of the ensemble of several, on its test split: its scores."""
    target = f"ckpt_path={checkpoints[0]}" if len(checkpoints) == 1 else "ckpt_path=[" + ",".join(f"'{path}'" for path in checkpoints) + "]"
    command = [sys.executable, "-m", "artmove.evaluate", target, "split=test", f"device={device}", f"hydra.run.dir={folder}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"evaluate {target} failed:\n{done.stderr[-3000:]}")
    return evaluated_scores(folder)


def evaluated_scores(folder: Path) -> dict | None:
    """What an evaluation folder's metrics.json says of the test split (None: no evaluation with the ECE's reference there)."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if any(key not in metrics for key in REFERENCE_KEYS):
        return None
    return {key: metrics.get(key) for key in ("test/top1", "test/top5", "test/ece", "test/nll", "test/num_images", *REFERENCE_KEYS)}


def ensemble(record: dict, data: str, out: Path, threads: int, device: str) -> dict | None:
    """One data set: all seeds of the ensembled setting as one ensemble, against each alone (None: fewer than two seeds)."""
    rows = sorted((r for r in record["runs"] if r["data"] == data and r["name"] == ENSEMBLED), key=lambda r: r["seed"])
    if len(rows) < 2:
        return None
    seeds = [r["seed"] for r in rows]
    singles = [{key: r.get(key) for key in ("test/top1", "test/top5", "test/ece", *REFERENCE_KEYS)} for r in rows]  # as evaluated alone
    members = [run_dir(out, data, ENSEMBLED, seed) for seed in seeds]
    together = evaluate(members, out / data / "ensemble" / "-".join(map(str, seeds)), threads, device)
    print(f"{data}: ensemble of {len(seeds)} {ENSEMBLED} seeds: top-1 {together['test/top1']:.3f} against "
          f"{statistics.fmean(s['test/top1'] for s in singles):.3f} for the mean single seed", flush=True)  # fmt: skip
    return {"data": data, "setting": ENSEMBLED, "seeds": seeds, "singles": singles, "ensemble": together}


# --- the doc section ---------------------------------------------------------------------------------
SECTION = """## Calibrated probabilities, "not sure", and the ensemble of a sweep's seeds

Produced by `{command}` (do not edit by hand: run it again). {scale}

Every run: `python -m artmove.train <setting> <data> seed=<seed> trainer.accelerator={accelerator}{extra}`
with today's defaults `calibrate=true abstain_target=0.9`: when training ends, a temperature is fitted
on the validation split (LBFGS on the NLL) and the "not sure" threshold is chosen there (the lowest top-1
probability at which the answers kept reach top-1 0.9); both are then measured on the test split. ECE:
15 equal-width bins of top-1 confidence. ECE is biased upwards on a split of a few hundred images: the
ECE floor is the mean ECE a perfectly calibrated model with the same confidences would show there (each
answer drawn right with probability its confidence, 1,000 draws), and a seed is consistent with calibration
when at least {consistent_p:.0%} of those draws reach its ECE (`ece_p` in `evaluate`'s metrics.json; docs/evaluation.md).
Mean ± std over seeds {seeds} ({machine}; {date}).

{tables}

{verdict}"""


def _mean_std(values: list[float | None], digits: int = 3, scale: float = 1.0) -> str:
    values = [v * scale for v in values if v is not None and v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return statistics.fmean(values) if values else None


def _consistent(rows: list[dict]) -> str:
    """How many seeds' test ECE a perfectly calibrated model shows on their images (ece_p >= CONSISTENT_P)."""
    measured = [r["test/ece_p"] for r in rows if r.get("test/ece_p") is not None]
    return f"{sum(p >= CONSISTENT_P for p in measured)} of {len(measured)}" if measured else "–"


def tables(record: dict) -> str:
    parts = []
    for data in record["data"]:
        runs = [r for r in record["runs"] if r["data"] == data]
        if not runs:
            continue
        lines = [f"### {data}", "", "| setting | seeds | temperature | test ECE, raw logits | test ECE, calibrated | ECE floor (calibrated model, "
                 "same images) | seeds consistent with calibration | test NLL, raw | test NLL, calibrated | not sure below p (chosen on val) | "
                 "val coverage | test coverage | test top-1 of the kept | test mean top-1 probability | test top-1, all |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for name in [n for n, _ in SETTINGS if any(r["name"] == n for r in runs)]:
            rows = [r for r in runs if r["name"] == name]
            temperatures = [(r.get("calibration") or {}).get("temperature") for r in rows]
            abstain = [r.get("abstain") or {} for r in rows]
            cells = [_mean_std(temperatures), *(_mean_std([r.get(k) for r in rows], 4) for k in ("test/ece_uncalibrated", "test/ece", "test/ece_floor")),
                     _consistent(rows), *(_mean_std([r.get(k) for r in rows], 4) for k in ("test/nll_uncalibrated", "test/nll")),
                     _mean_std([a.get("threshold") for a in abstain]),
                     _mean_std([a.get("val/coverage") for a in abstain], 1, 100) + " %", _mean_std([r.get("test/abstain_coverage") for r in rows], 1, 100) + " %",
                     *(_mean_std([r.get(k) for r in rows]) for k in ("test/abstain_top1", "test/confidence", "test/top1"))]  # fmt: skip
            lines.append(f"| {name} | {' '.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")
        for row in (r for r in record.get("ensembles", []) if r["data"] == data):
            lines += ["", *ensemble_table(row)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def ensemble_table(row: dict) -> list[str]:
    """The ensemble of a setting's seeds against each seed alone, on the test split."""
    singles, together = row["singles"], row["ensemble"]
    p = together.get("test/ece_p")
    consistent = "–" if p is None else f"{'yes' if p >= CONSISTENT_P else 'no'} (p={p:.3f})"
    return [f"Ensemble of the {row['setting']} seeds ({' '.join(map(str, row['seeds']))}), their calibrated probabilities averaged "
            "(`python -m artmove.evaluate ckpt_path=[seed1,seed2,…]`; each seed alone with `ckpt_path=<run>`), test split:", "",
            "| | top-1 | top-5 | mean top-1 probability | ECE | ECE floor: a calibrated model, same confidences and images | "
            "consistent with calibration |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            "| single seed (mean ± std) | " + " | ".join(_mean_std([s.get(k) for s in singles], 4 if "ece" in k else 3)
                                                   for k in ("test/top1", "test/top5", "test/confidence", "test/ece", "test/ece_floor"))
            + f" | {_consistent(singles)} seeds |",
            f"| ensemble of {len(row['seeds'])} | " + " | ".join(_mean_std([together.get(k)], 4 if "ece" in k else 3)
                                                                for k in ("test/top1", "test/top5", "test/confidence", "test/ece", "test/ece_floor"))
            + f" | {consistent} |",
            "| ensemble − mean single seed | " + " | ".join(f"{100 * (together[k] - _mean([s[k] for s in singles])):+.1f} points"
                                                        for k in ("test/top1", "test/top5"))
            + f" | | {together['test/ece'] - _mean([s['test/ece'] for s in singles]):+.4f} | | |"]  # fmt: skip


def verdict(record: dict) -> str:
    """The issue's targets, computed: ECE after scaling <= 0.03 on both sets, the ensemble +1.5 points on wikiart_sample."""
    lines = []
    for data in record["data"]:
        for name in TRUSTED:
            rows = [r for r in record["runs"] if r["data"] == data and r["name"] == name]
            ece, raw, floor = (_mean([r.get(key) for r in rows]) for key in ("test/ece", "test/ece_uncalibrated", "test/ece_floor"))
            if ece is not None:
                met = "meets" if ece <= ECE_TARGET else "misses"
                before = f" (raw logits: {raw:.4f})" if raw is not None else ""
                line = f"- {data}, {name}: mean test ECE after temperature scaling {ece:.4f}{before}: {met} the target (<= {ECE_TARGET})."
                if floor is not None:
                    images = _mean([r.get("test/num_images") for r in rows])
                    below = ": the target is below what this split can show" if floor > ECE_TARGET else ""
                    line += (f" A perfectly calibrated model with the same confidences shows {floor:.4f} on these {images:.0f} test images{below};"
                             f" {_consistent(rows)} seeds are consistent with calibration.")  # fmt: skip
                confidence, top1, val = (_mean([r.get(key) for r in rows]) for key in ("test/confidence", "test/top1", "best_val/top1"))
                if confidence is not None and top1 is not None:
                    way = "under" if confidence < top1 else "over"
                    line += f" Mean top-1 probability {confidence:.3f} against top-1 {top1:.3f}: {way}-confident on test"
                    line += f"; on validation, where the temperature was fitted, the best top-1 was {val:.3f}." if val is not None else "."
                lines.append(line)
        for row in (r for r in record.get("ensembles", []) if r["data"] == data):
            gain = 100 * (row["ensemble"]["test/top1"] - _mean([s["test/top1"] for s in row["singles"]]))
            bar = f": {'meets' if gain >= ENSEMBLE_TARGET_POINTS else 'misses'} the target (>= +{ENSEMBLE_TARGET_POINTS} points)" if data == "wikiart_sample" else ""
            lines.append(f"- {data}: the ensemble of {len(row['seeds'])} {row['setting']} seeds vs the mean single seed: {gain:+.1f} points test top-1{bar}.")
            together = row["ensemble"]
            if together.get("test/ece_p") is not None and together["test/ece_p"] < CONSISTENT_P and together.get("test/confidence") is not None:
                way = "under" if together["test/confidence"] < together["test/top1"] else "over"
                lines.append(f"- {data}: the ensemble's ECE {together['test/ece']:.4f} is beyond what a calibrated model shows on these images "
                             f"(p={together['test/ece_p']:.3f}): its mean top-1 probability {together['test/confidence']:.3f} against top-1 "
                             f"{together['test/top1']:.3f} makes it {way}-confident.")  # fmt: skip
    unfinished = [(data, name, sum(r["data"] == data and r["name"] == name for r in record["runs"]))
                  for data in record["data"] for name in record.get("settings", TRUSTED)]  # fmt: skip
    for data, name, measured in unfinished:
        if measured < len(record["seeds"]):
            lines.append(f"- {data}, {name}: {measured} of {len(record['seeds'])} seeds measured so far; the command above with "
                         "`--keep-finished` continues the measurement.")  # fmt: skip
    incomplete = any(measured < len(record["seeds"]) for _, _, measured in unfinished)
    if lines and (record["extra"] or len(record["seeds"]) < 3 or incomplete):
        lines.append("- At this scale these numbers are indicative only: the targets are judged on the full measurement (3 seeds, full scale).")
    return "\n".join(lines)


def command_line(record: dict, results: Path) -> str:
    parts = [f"--seeds {' '.join(map(str, record['seeds']))}", f"--data {' '.join(record['data'])}"]
    if list(record["settings"]) != list(TRUSTED):
        parts.append("--settings " + " ".join(repr(n) if " " in n else n for n in record["settings"]))
    parts += [f"--set {o}" for o in record["extra"]] + [f"--jobs {record['jobs']} --threads {record['threads']}"]
    if results.resolve() != RESULTS:
        parts.append(f"--results {results}")
    return "python -m benchmarks.compare_trust " + " ".join(parts)


def doc_section(results: Path = RESULTS) -> str:
    """The section docs/recipes.md shows (compare_recipes renders it): empty until the measurement has run."""
    if not results.is_file():
        return ""
    record = json.loads(results.read_text())
    extra = record["extra"]
    scale = ("Full scale: every setting as its preset or today's defaults say." if not extra else
             f"**Reduced scale** (`{' '.join(extra)}` on every run): the numbers are indicative only.")  # fmt: skip
    m = record["machine"]
    return SECTION.format(command=command_line(record, results), scale=scale, consistent_p=CONSISTENT_P, accelerator=record["accelerator"],
                          extra="".join(f" {o}" for o in extra), seeds=", ".join(map(str, record["seeds"])), date=record["date"],
                          machine=f"{m['cpu_count']} CPUs, {record['threads']} torch thread(s) per run, {record['jobs']} run(s) at a time"
                          + (f", {m['cuda']}" if m.get("cuda") else ""), tables=tables(record), verdict=verdict(record))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_measurement_arguments(parser, REPO / "outputs" / "trust", list(TRUSTED),
                              f"settings to train (default: {', '.join(TRUSTED)}); the seeds of '{ENSEMBLED}' are ensembled", RESULTS)
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "recipes.md")
    parser.add_argument("--render", action="store_true", help="only rewrite the doc from the results JSONs")
    parser.add_argument("--keep-finished", action="store_true",
                        help="read a run that already finished in --out with the same command instead of training it again (continue a measurement)")
    args = parser.parse_args(argv)
    if not args.render:
        missing = [name for name in args.data if not (DATA / name).is_dir()]
        if missing:
            raise SystemExit(f"{', '.join(missing)} not found in {DATA}: set ARTMOVE_DATA to the folder holding them.")
        chosen = [(name, overrides) for name in args.settings for known, overrides in SETTINGS if known == name]  # in the order given
        record = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "seeds": args.seeds, "data": args.data, "settings": args.settings,
                  "extra": args.extra, "jobs": args.jobs, "threads": args.threads, "accelerator": args.accelerator, "runs": [],
                  "ensembles": []}  # fmt: skip
        lock = threading.Lock()
        device = device_of(args.accelerator)

        def run_and_keep(job):  # each finished run is saved at once: a later failure loses nothing
            row = train(job, args.out, args.extra, args.threads, args.accelerator, args.keep_finished)
            with lock:
                record["runs"].append(row)
                record["runs"].sort(key=lambda r: (args.data.index(r["data"]), args.settings.index(r["name"]), r["seed"]))
                write_json(args.results, record)

        for data in args.data:  # a data set's runs, then its ensemble, saved before the next set starts
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(run_and_keep, [(data, name, overrides, seed) for name, overrides in chosen for seed in args.seeds]))
            row = ensemble(record, data, args.out, args.threads, device)
            if row is not None:
                record["ensembles"].append(row)
                write_json(args.results, record)
    render_recipes(["--render", "--doc", str(args.doc), "--trust", str(args.results)])


if __name__ == "__main__":
    main()

"""`python -m benchmarks.compare_trust`: calibration, "not sure" and the ensemble of a sweep's seeds, measured -> docs/recipes.md.

For each data set (wikiart_sample, wikipaintings_small on ARTMOVE_DATA) and seed, trains the recipe
(`experiment=paintings`) and plain `unfreeze=0.2` as benchmarks.compare_recipes does (with today's
defaults: `calibrate=true abstain_target=0.9`), then reads each run's results.json: the temperature
fitted on validation, test ECE and NLL of the raw logits and of the calibrated ones, and the test
coverage and top-1 of the answers at or above the "not sure" threshold chosen on validation.
`python -m artmove.evaluate` scores each run on the test split (its ECE beside what a perfectly
calibrated model would show on those images: `ece_floor`, `ece_p`), and the ensemble of the recipe's
seeds (`ckpt_path=[seed1,seed2,…]`, calibrated as one model when evaluate opens it): top-1, top-5 and ECE of
the ensemble against the mean single seed.
Each run and each ensemble is also evaluated on the validation split; from the two `probabilities.csv`,
with artmove's own functions (artmove.models.conformal, artmove.models.calibration): 90 % prediction sets
(lac, aps, raps, and lac per movement) fitted on validation and measured on test (coverage with its
Clopper-Pearson 95 % interval, mean size, the worst movement's coverage), the smallest fixed top-k reaching
90 % there, and the "not sure" rules chosen on validation, the guaranteed one (`guaranteed_threshold`) beside
the previous one (`threshold_for_target`, no margin): their test coverage and kept top-1. The test split's
artist overlap with train (evaluate's metrics.json) is recorded beside the coverage.
Writes benchmarks/results/trust.json and its section (benchmarks/results/trust.md), which benchmarks.compare_recipes
places in docs/recipes.md (nothing in it is typed by hand). `--set KEY=VALUE` adds overrides to every
run (a reduced scale, stated in the doc).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from artmove.models import conformal
from artmove.models.calibration import guaranteed_threshold, kept_at, threshold_for_target
from artmove.utils.io import write_json
from benchmarks import DATA
from benchmarks.measure import DATA_SETS, REPO, SETTINGS, add_measurement_arguments, row_of, run_dir, section_file
from benchmarks.measure import train_run as train_setting
from benchmarks.run import machine

RESULTS = REPO / "benchmarks" / "results" / "trust.json"
TRUSTED = ("recipe", "plain unfreeze=0.2")
ENSEMBLED = "recipe"  # the setting whose seeds are averaged
SEEDS = (1, 2, 3)
#: The issue's targets: ECE after temperature scaling on both sets, the ensemble's gain on wikiart_sample.
ECE_TARGET, ENSEMBLE_TARGET_POINTS = 0.03, 1.5
TRUST_KEYS = (
    "test/top1",
    "test/top5",
    "test/ece",
    "test/nll",
    "test/ece_uncalibrated",
    "test/nll_uncalibrated",
    "test/abstain_coverage",
    "test/abstain_top1",
    "calibration",
    "abstain",
)
#: What `evaluate` adds to each run: a perfectly calibrated model's mean ECE on these images, the share of its draws at or above
#: the ECE, and the mean top-1 probability (above top-1: over-confident).
REFERENCE_KEYS = ("test/ece_floor", "test/ece_p", "test/confidence")
#: An ECE whose ece_p is at least this is one a calibrated model shows on this split.
CONSISTENT_P = 0.05
#: The prediction sets measured: (name, score, one threshold per movement), each at this coverage, fitted on validation.
COVERAGE = 0.9
SET_KINDS = (("lac", "lac", False), ("aps", "aps", False), ("raps", "raps", False), ("lac per movement", "lac", True))
RAPS = {"k_reg": 1, "lam": 0.01}  # evaluate's defaults (conf/evaluate.yaml)
#: The "not sure" rules' target top-1 when a run records none (an ensemble: its members' default).
ABSTAIN_TARGET = 0.9


def train(
    job: tuple[str, str, list[str], int], out: Path, extra: list[str], threads: int, accelerator: str, keep_finished: bool
) -> tuple[dict, bool]:
    """compare_recipes' run, plus what calibration and the threshold left in its results.json, its ECE's
    reference from `evaluate` on the test split, and its sets and "not sure" rules (:func:`trusted`, from
    `evaluate` on validation and test). With ``keep_finished``, a run folder that already holds a finished,
    calibrated run of this job is read, not retrained (and its evaluations, where it has them, kept).
    Returns the row and whether the run was kept."""
    folder = run_dir(out, job[0], job[1], job[3])
    evaluated = folder / "eval"
    results = finished(folder, job, extra, accelerator) if keep_finished else None
    if results is not None:  # kept, with its evaluations where it has them
        row = row_of(job, results, results.get("wall_time_s"))
        print(f"{job[0]} / {job[1]} / seed {job[3]}: kept the finished run in {folder}", flush=True)
    else:  # a fresh folder: no evaluation in it
        row = train_setting(job, out, extra, threads, accelerator)
        results = json.loads((folder / "results.json").read_text())
    device = device_of(accelerator)
    scores = evaluated_scores(evaluated / "test") or evaluate([folder], evaluated / "test", threads, device)
    if evaluated_scores(evaluated / "val", "val") is None:
        evaluate([folder], evaluated / "val", threads, device, "val")
    target = (results.get("abstain") or {}).get("target") or ABSTAIN_TARGET
    return {
        **row,
        **{key: results.get(key) for key in TRUST_KEYS},
        **{key: scores.get(key) for key in REFERENCE_KEYS},
        "test/artist_overlap": scores.get("artist_overlap"),
        "trust": trusted(evaluated / "val", evaluated / "test", target),
    }, results is not None


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


def evaluate(checkpoints: list[Path], folder: Path, threads: int, device: str, split: str = "test") -> dict:
    """`python -m artmove.evaluate` of one run or of the ensemble of several (which evaluate calibrates as one model,
    on the first member's validation split), on ``split``: its scores."""
    target = f"ckpt_path={checkpoints[0]}" if len(checkpoints) == 1 else "ckpt_path=[" + ",".join(f"'{path}'" for path in checkpoints) + "]"
    command = [sys.executable, "-m", "artmove.evaluate", target, f"split={split}", f"device={device}", f"hydra.run.dir={folder}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise SystemExit(f"evaluate {target} failed:\n{done.stderr[-3000:]}")
    return evaluated_scores(folder, split)


def evaluated_scores(folder: Path, split: str = "test") -> dict | None:
    """What an evaluation folder's metrics.json says of ``split`` (None: no evaluation of it with the ECE's reference and
    the probabilities there), with the split's artist overlap and, for an ensemble, its own temperature."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    keys = [
        key.replace("test/", f"{split}/") for key in ("test/top1", "test/top5", "test/ece", "test/nll", "test/num_images", *REFERENCE_KEYS)
    ]
    if metrics.get("split") != split or any(key not in metrics for key in keys) or not (folder / "probabilities.csv").is_file():
        return None
    ensemble = metrics.get("ensemble") or {}
    return {
        **{key.replace(f"{split}/", "test/"): metrics.get(key) for key in keys},
        "artist_overlap": metrics.get("artist_overlap"),
        "temperature": ensemble.get("temperature"),
    }


def read_probabilities(folder: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """An evaluation's probabilities.csv: the classes, ``[N, C]`` probabilities and the true classes' indices."""
    with (folder / "probabilities.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    classes = rows[0][2:]  # path, true, one column per class
    probs = torch.tensor([[float(value) for value in row[2:]] for row in rows[1:]], dtype=torch.float64)
    labels = torch.tensor([classes.index(row[1]) for row in rows[1:]], dtype=torch.long)
    return classes, probs, labels


def _finite(value):
    return None if isinstance(value, float) and value != value else value


def trusted(val_folder: Path, test_folder: Path, target: float) -> dict:
    """From one model's validation and test probabilities: the 90 % prediction sets of each of SET_KINDS fitted on
    validation and measured on test, the smallest fixed top-k reaching 90 % on test, and the "not sure" rules chosen
    on validation (guaranteed, and the previous rule with no margin) with their test coverage and kept top-1."""
    classes, val_probs, val_labels = read_probabilities(val_folder)
    test_classes, test_probs, test_labels = read_probabilities(test_folder)
    if test_classes != classes:
        raise SystemExit(f"{val_folder} and {test_folder} name different classes: {classes} against {test_classes}")
    topk = conformal.fixed_k(test_probs, test_labels, range(1, len(classes) + 1))
    reaching = [row["k"] for row in topk if row["coverage"] >= COVERAGE - 1e-12]
    sets = {}
    for name, score, per_movement in SET_KINDS:
        record = conformal.fit(val_probs, val_labels, COVERAGE, score, per_movement, **(RAPS if score == "raps" else {}), split="val")
        measured = conformal.set_metrics(conformal.prediction_sets(test_probs, record), test_labels, test_probs)
        worst = measured["worst_class"]
        sets[name] = {
            "score": score,
            "class_conditional": per_movement,
            "classes_always_in": record["classes_always_in"],
            **{key: _finite(measured[key]) for key in ("coverage", "coverage_low", "coverage_high", "mean_size")},
            "worst_movement": None if worst is None else classes[worst],
            "worst_coverage": _finite(measured["worst_coverage"]),
            "fixed_k_same_coverage": measured["fixed_k"],
        }
    rules = {
        "guaranteed": guaranteed_threshold(val_probs, val_labels, target),
        "previous": threshold_for_target(val_probs, val_labels, target),
    }
    not_sure: dict = {"target": target}
    for name, chosen in rules.items():
        kept = kept_at(test_probs, test_labels, chosen["threshold"])
        not_sure[name] = {
            "threshold": chosen["threshold"],
            "reached": chosen["reached"],
            "val/coverage": _finite(chosen["coverage"]),
            "val/top1": _finite(chosen["top1"]),
            "test/coverage": _finite(kept["coverage"]),
            "test/top1": _finite(kept["top1"]),
        }
    return {
        "coverage_target": COVERAGE,
        "val/num_images": len(val_labels),
        "test/num_images": len(test_labels),
        "fixed_k_90": reaching[0] if reaching else len(classes),
        "sets": sets,
        "not_sure": not_sure,
    }


def ensemble(record: dict, data: str, out: Path, threads: int, device: str, reuse: bool = False) -> dict | None:
    """One data set: all seeds of the ensembled setting as one ensemble (calibrated as one model by evaluate), against each
    alone, with its sets and "not sure" rules (None: fewer than two seeds). ``reuse``: its evaluations, where they are there
    (every member kept), are read, not run again."""
    rows = sorted((r for r in record["runs"] if r["data"] == data and r["name"] == ENSEMBLED), key=lambda r: r["seed"])
    if len(rows) < 2:
        return None
    seeds = [r["seed"] for r in rows]
    singles = [{key: r.get(key) for key in ("test/top1", "test/top5", "test/ece", *REFERENCE_KEYS)} for r in rows]  # as evaluated alone
    members = [run_dir(out, data, ENSEMBLED, seed) for seed in seeds]
    folder = out / data / "ensemble" / "-".join(map(str, seeds))
    together = (reuse and evaluated_scores(folder / "test")) or evaluate(members, folder / "test", threads, device)
    if not (reuse and evaluated_scores(folder / "val", "val")):
        evaluate(members, folder / "val", threads, device, "val")
    gain = 100 * (together["test/top1"] - statistics.fmean(s["test/top1"] for s in singles))
    print(
        f"{data}: ensemble of {len(seeds)} {ENSEMBLED} seeds: top-1 {together['test/top1']:.3f}, {gain:+.1f} points against the mean "
        f"single seed; ECE after its own temperature {together['test/ece']:.4f} (floor {together['test/ece_floor']:.4f}, "
        f"p={together['test/ece_p']:.3f})",
        flush=True,
    )
    return {
        "data": data,
        "setting": ENSEMBLED,
        "seeds": seeds,
        "singles": singles,
        "ensemble": together,
        "top1_gain_points": gain,
        "trust": trusted(folder / "val", folder / "test", ABSTAIN_TARGET),
    }


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

The script also evaluates each run and the ensemble on the validation split and, from the two splits'
`probabilities.csv`, measures 90 % prediction sets (`lac`, `aps`, `raps` and `lac` per movement) fitted on
validation: their test coverage with its Clopper-Pearson 95 % interval, mean set size beside the smallest
fixed top-k reaching 90 % on test, and the worst movement's coverage; the guaranteed "not sure" rule
(`guaranteed_threshold`) beside the previous one (`threshold_for_target`, no margin), both chosen on
validation: test share kept and kept top-1, mean ± std over seeds; the ensemble's ECE after its own
temperature; and the test split's artist overlap with train, which the coverage holds for (artmove's
default splits keep artists apart). Where the tables below lack these, they are not measured yet:
`python -m benchmarks.compare_trust --seeds 1 2 3 --data wikiart_sample wikipaintings_small --keep-finished`
adds them (finished runs are read, not trained again).

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
        lines = [
            f"### {data}",
            "",
            "| setting | seeds | temperature | test ECE, raw logits | test ECE, calibrated | ECE floor (calibrated model, "
            "same images) | seeds consistent with calibration | test NLL, raw | test NLL, calibrated | not sure below p (chosen on val) | "
            "val coverage | test coverage | test top-1 of the kept | test mean top-1 probability | test top-1, all |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name in [n for n, _ in SETTINGS if any(r["name"] == n for r in runs)]:
            rows = [r for r in runs if r["name"] == name]
            temperatures = [(r.get("calibration") or {}).get("temperature") for r in rows]
            abstain = [r.get("abstain") or {} for r in rows]
            cells = [
                _mean_std(temperatures),
                *(_mean_std([r.get(k) for r in rows], 4) for k in ("test/ece_uncalibrated", "test/ece", "test/ece_floor")),
                _consistent(rows),
                *(_mean_std([r.get(k) for r in rows], 4) for k in ("test/nll_uncalibrated", "test/nll")),
                _mean_std([a.get("threshold") for a in abstain]),
                _mean_std([a.get("val/coverage") for a in abstain], 1, 100) + " %",
                _mean_std([r.get("test/abstain_coverage") for r in rows], 1, 100) + " %",
                *(_mean_std([r.get(k) for r in rows]) for k in ("test/abstain_top1", "test/confidence", "test/top1")),
            ]
            lines.append(f"| {name} | {' '.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")
        for row in (r for r in record.get("ensembles", []) if r["data"] == data):
            lines += ["", *ensemble_table(row)]
        lines += ["", trust_table(record, data, heading=False)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _set_cell(measured: dict | None) -> str:
    """A set's test coverage [Clopper-Pearson 95 %], then its mean size."""
    if not measured or measured.get("coverage") is None:
        return "–"
    interval = f" [{measured['coverage_low']:.3f}, {measured['coverage_high']:.3f}]" if measured.get("coverage_low") is not None else ""
    return f"{measured['coverage']:.3f}{interval}, size {measured['mean_size']:.2f}"


def _worst_cell(measured: dict | None) -> str:
    if not measured or measured.get("worst_movement") is None:
        return "–"
    return f"{measured['worst_movement']} {measured['worst_coverage']:.2f}"


def _overlap_cell(overlap: dict | None) -> str:
    """The test split's artists shared with train, from evaluate's ``artist_overlap``."""
    if not overlap:
        return "–"
    if "test" not in overlap:
        return "unknown artists"
    row = overlap["test"]
    return f"{100 * row['share']:.1f} % of images ({row['artists_in_train']} of {row['artists']} artists)"


def _rule_cell(rule: dict | None) -> str:
    if not rule:
        return "–"
    top1 = "–" if rule.get("test/top1") is None else f"{rule['test/top1']:.3f}"
    return f"p >= {rule['threshold']:.2f}: {100 * rule['test/coverage']:.1f} % kept, top-1 {top1}"


def trust_table(record: dict, data: str, heading: bool = True) -> str:
    """One data set's prediction sets and "not sure" rules, per run and for the ensemble (test split; fitted and chosen on
    validation), then the two rules' test coverage and kept top-1 as mean ± std over the seeds."""
    runs = [r for r in record["runs"] if r["data"] == data and r.get("trust")]
    ensembles = [r for r in record.get("ensembles", []) if r["data"] == data and r.get("trust")]
    if not runs and not ensembles:
        return (
            'The 90 % prediction sets, the guaranteed "not sure" rule and the test split\'s artist overlap are not measured yet in '
            "these results: the command above with `--keep-finished` adds them without training again."
        )
    names = [name for name, _, _ in SET_KINDS]
    lines = [
        f'{data}: 90 % prediction sets and "not sure" rules, fitted on validation, measured on test'
        if heading
        else '90 % prediction sets (fitted on validation; test coverage [Clopper-Pearson 95 %], mean set size) and "not sure" rules '
        "(chosen on validation for top-1 0.9: the guaranteed rule, `guaranteed_threshold`, and the previous one, "
        "`threshold_for_target` with no margin; test share kept and its top-1):",
        "",
        "| model | test artists also in train | " + " | ".join(names) + " | worst movement (aps; lac per movement) | "
        "smallest top-k reaching 90 % | not sure, guaranteed | not sure, previous rule |",
        "| --- | --- |" + " ---: |" * len(names) + " --- | ---: | --- | --- |",
    ]
    models = [(f"{r['name']}, seed {r['seed']}", r["trust"], r.get("test/artist_overlap")) for r in runs]
    models += [(f"ensemble of {len(r['seeds'])} {r['setting']} seeds", r["trust"], r["ensemble"].get("artist_overlap")) for r in ensembles]
    for label, measured, overlap in models:
        sets, not_sure = measured["sets"], measured["not_sure"]
        lines.append(
            f"| {label} | {_overlap_cell(overlap)} | "
            + " | ".join(_set_cell(sets.get(name)) for name in names)
            + f" | {_worst_cell(sets.get('aps'))}; {_worst_cell(sets.get('lac per movement'))} | {measured['fixed_k_90']} | "
            + f"{_rule_cell(not_sure.get('guaranteed'))} | {_rule_cell(not_sure.get('previous'))} |"
        )
    lines += [
        "",
        "| setting | seeds | guaranteed: test kept | guaranteed: kept top-1 | previous rule: test kept | previous rule: kept top-1 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["name"] for r in runs):
        rules = [r["trust"]["not_sure"] for r in runs if r["name"] == name]
        cells = [
            _mean_std([(rule.get(which) or {}).get(key) for rule in rules], *((1, 100) if key == "test/coverage" else (3, 1)))
            + (" %" if key == "test/coverage" else "")
            for which in ("guaranteed", "previous")
            for key in ("test/coverage", "test/top1")
        ]
        seeds = " ".join(str(r["seed"]) for r in runs if r["name"] == name)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    for row in ensembles:
        lines.append(
            f"\nEnsemble of {len(row['seeds'])} {row['setting']} seeds, after its own temperature "
            f"({row['ensemble'].get('temperature') or float('nan'):.3f}): test ECE {row['ensemble']['test/ece']:.4f} "
            f"(floor {row['ensemble']['test/ece_floor']:.4f}, p={row['ensemble']['test/ece_p']:.3f}); top-1 "
            f"{row['top1_gain_points']:+.1f} points over the mean single seed."
        )
    return "\n".join(lines)


def ensemble_table(row: dict) -> list[str]:
    """The ensemble of a setting's seeds against each seed alone, on the test split."""
    singles, together = row["singles"], row["ensemble"]
    p = together.get("test/ece_p")
    consistent = "–" if p is None else f"{'yes' if p >= CONSISTENT_P else 'no'} (p={p:.3f})"
    return [
        f"Ensemble of the {row['setting']} seeds ({' '.join(map(str, row['seeds']))}), their calibrated probabilities averaged "
        "(`python -m artmove.evaluate ckpt_path=[seed1,seed2,…]`; each seed alone with `ckpt_path=<run>`), test split:",
        "",
        "| | top-1 | top-5 | mean top-1 probability | ECE | ECE floor: a calibrated model, same confidences and images | "
        "consistent with calibration |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| single seed (mean ± std) | "
        + " | ".join(
            _mean_std([s.get(k) for s in singles], 4 if "ece" in k else 3)
            for k in ("test/top1", "test/top5", "test/confidence", "test/ece", "test/ece_floor")
        )
        + f" | {_consistent(singles)} seeds |",
        f"| ensemble of {len(row['seeds'])} | "
        + " | ".join(
            _mean_std([together.get(k)], 4 if "ece" in k else 3)
            for k in ("test/top1", "test/top5", "test/confidence", "test/ece", "test/ece_floor")
        )
        + f" | {consistent} |",
        "| ensemble − mean single seed | "
        + " | ".join(f"{100 * (together[k] - _mean([s[k] for s in singles])):+.1f} points" for k in ("test/top1", "test/top5"))
        + f" | | {together['test/ece'] - _mean([s['test/ece'] for s in singles]):+.4f} | | |",
    ]


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
                    line += (
                        f" A perfectly calibrated model with the same confidences shows {floor:.4f} on these {images:.0f} test"
                        f" images{below};"
                        f" {_consistent(rows)} seeds are consistent with calibration."
                    )
                confidence, top1, val = (_mean([r.get(key) for r in rows]) for key in ("test/confidence", "test/top1", "best_val/top1"))
                if confidence is not None and top1 is not None:
                    way = "under" if confidence < top1 else "over"
                    line += f" Mean top-1 probability {confidence:.3f} against top-1 {top1:.3f}: {way}-confident on test"
                    line += f"; on validation, where the temperature was fitted, the best top-1 was {val:.3f}." if val is not None else "."
                lines.append(line)
        for row in (r for r in record.get("ensembles", []) if r["data"] == data):
            gain = 100 * (row["ensemble"]["test/top1"] - _mean([s["test/top1"] for s in row["singles"]]))
            bar = (
                f": {'meets' if gain >= ENSEMBLE_TARGET_POINTS else 'misses'} the target (>= +{ENSEMBLE_TARGET_POINTS} points)"
                if data == "wikiart_sample"
                else ""
            )
            lines.append(
                f"- {data}: the ensemble of {len(row['seeds'])} {row['setting']} seeds vs the mean single seed: "
                f"{gain:+.1f} points test top-1{bar}."
            )
            together = row["ensemble"]
            if (
                together.get("test/ece_p") is not None
                and together["test/ece_p"] < CONSISTENT_P
                and together.get("test/confidence") is not None
            ):
                way = "under" if together["test/confidence"] < together["test/top1"] else "over"
                lines.append(
                    f"- {data}: the ensemble's ECE {together['test/ece']:.4f} is beyond what a calibrated model shows on these images "
                    f"(p={together['test/ece_p']:.3f}): its mean top-1 probability {together['test/confidence']:.3f} against top-1 "
                    f"{together['test/top1']:.3f} makes it {way}-confident."
                )
    unfinished = [
        (data, name, sum(r["data"] == data and r["name"] == name for r in record["runs"]))
        for data in record["data"]
        for name in record.get("settings", TRUSTED)
    ]
    for data, name, measured in unfinished:
        if measured < len(record["seeds"]):
            lines.append(
                f"- {data}, {name}: {measured} of {len(record['seeds'])} seeds measured so far; the command above with "
                "`--keep-finished` continues the measurement."
            )
    incomplete = any(measured < len(record["seeds"]) for _, _, measured in unfinished)
    if lines and (record["extra"] or len(record["seeds"]) < 3 or incomplete):
        lines.append(
            "- At this scale these numbers are indicative only: the targets are judged on the full measurement (3 seeds, full scale)."
        )
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
    scale = (
        "Full scale: every setting as its preset or today's defaults say."
        if not extra
        else f"**Reduced scale** (`{' '.join(extra)}` on every run): the numbers are indicative only."
    )
    m = record["machine"]
    return SECTION.format(
        command=command_line(record, results),
        scale=scale,
        consistent_p=CONSISTENT_P,
        accelerator=record["accelerator"],
        extra="".join(f" {o}" for o in extra),
        seeds=", ".join(map(str, record["seeds"])),
        date=record["date"],
        machine=f"{m['cpu_count']} CPUs, {record['threads']} torch thread(s) per run, {record['jobs']} run(s) at a time"
        + (f", {m['cuda']}" if m.get("cuda") else ""),
        tables=tables(record),
        verdict=verdict(record),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_measurement_arguments(
        parser,
        REPO / "outputs" / "trust",
        list(TRUSTED),
        f"settings to train (default: {', '.join(TRUSTED)}); the seeds of '{ENSEMBLED}' are ensembled",
        RESULTS,
    )
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "recipes.md")
    parser.add_argument("--render", action="store_true", help="only rewrite the doc from the results JSONs")
    parser.add_argument(
        "--keep-finished",
        action="store_true",
        help="read a run that already finished in --out with the same command instead of training it again (continue a measurement)",
    )
    args = parser.parse_args(argv)
    if not args.render:
        missing = [name for name in args.data if not (DATA / name).is_dir()]
        if missing:
            raise SystemExit(f"{', '.join(missing)} not found in {DATA}: set ARTMOVE_DATA to the folder holding them.")
        chosen = [(name, overrides) for name in args.settings for known, overrides in SETTINGS if known == name]  # in the order given
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "seeds": args.seeds,
            "data": args.data,
            "settings": args.settings,
            "extra": args.extra,
            "jobs": args.jobs,
            "threads": args.threads,
            "accelerator": args.accelerator,
            "runs": [],
            "ensembles": [],
        }
        lock = threading.Lock()
        device = device_of(args.accelerator)
        kept: set[tuple[str, str, int]] = set()

        def run_and_keep(job):  # each finished run is saved at once: a later failure loses nothing
            row, was_kept = train(job, args.out, args.extra, args.threads, args.accelerator, args.keep_finished)
            with lock:
                if was_kept:
                    kept.add((row["data"], row["name"], row["seed"]))
                record["runs"].append(row)
                record["runs"].sort(key=lambda r: (args.data.index(r["data"]), args.settings.index(r["name"]), r["seed"]))
                write_json(args.results, record)

        for data in args.data:  # a data set's runs, then its ensemble, saved before the next set starts
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(run_and_keep, [(data, name, overrides, seed) for name, overrides in chosen for seed in args.seeds]))
            reuse = args.keep_finished and all((data, ENSEMBLED, seed) in kept for seed in args.seeds)
            row = ensemble(record, data, args.out, args.threads, device, reuse)
            if row is not None:
                record["ensembles"].append(row)
                write_json(args.results, record)
            print(trust_table(record, data), flush=True)
    write_section(args.results)
    # docs/recipes.md is benchmarks.compare_recipes' to write (it places the section written above): run, not imported.
    command = [sys.executable, "-m", "benchmarks.compare_recipes", "--render", "--doc", str(args.doc), "--trust", str(args.results)]
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed")


def write_section(results: Path = RESULTS) -> Path:
    """The section of docs/recipes.md rendered from ``results``, into the file beside it (none: removed)."""
    path, section = section_file(results), doc_section(results)
    if section:
        path.write_text(section + "\n")
    else:
        path.unlink(missing_ok=True)
    return path


if __name__ == "__main__":
    main()

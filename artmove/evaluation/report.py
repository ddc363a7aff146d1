"""The report of a sweep (or any runs), which ``python -m artmove.report`` prints and a sweep writes when
its last job ends: one table and two figures.

Every training run folder below PATH (a multirun folder, a run folder, or several) is read:
its composed config (``.hydra/config.yaml``) and ``results.json``. A failed job shows as failed
with its error; a folder that never wrote results.json (a killed job) too. Settings run with
several seeds are summarised as mean ± std; a setting run once shows its top-1 with the bootstrap
95 % interval training stored (``test/top1_ci95_low``/``_high``: the test split's sampling noise).

Runs are ranked by what they were selected on: each job's ``optimized_value`` (its
``optimized_metric``, validation top-1 by default: what a sweeper optimises and what
``ckpt_path=<sweep folder>`` picks the best job by), with the test scores beside it, never used to
rank. The job ``ckpt_path=<sweep folder>`` loads is marked, found by the same resolution
(``artmove.runs.checkpoints.resolve_checkpoint``), so the report and the commands cannot disagree.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from artmove.errors import ConfigError
from artmove.evaluation.plots import save_png
from artmove.runs.checkpoints import resolve_checkpoint
from artmove.runs.folder import RunFolder, find_runs, selection_direction
from artmove.runs.plain import read_yaml, select
from artmove.utils.tables import markdown_table, markdown_text, write_csv

#: Each job's value of the metric it was selected on (results.json ``optimized_value``): the default ranking.
SELECTED = "optimized_value"
METRICS = ("test/top1", "test/top3", "test/top5", "test/top1_macro", "best_val/top1")
RANKINGS = (SELECTED, *METRICS)
# A setting = everything but the seed: runs that differ only by seed are averaged together.
SETTING = ("data", "backbone", "policy", "unfreeze", "other")
CI95 = ("test/top1_ci95_low", "test/top1_ci95_high")
RUN_COLUMNS = (
    "loaded",
    "run",
    "status",
    *SETTING,
    "seed",
    "optimized_metric",
    SELECTED,
    *METRICS,
    *CI95,
    "test_artist_overlap",
    "weights",
    "epochs",
    "wall_time_s",
    "error",
)
RUN_HEADERS = (
    "ckpt_path",
    "run",
    "status",
    "data",
    "backbone",
    "policy",
    "unfreeze",
    "other overrides",
    "seed",
    "selected on",
    "selected value",
    "test top-1",
    "test top-3",
    "test top-5",
    "test top-1 macro",
    "best val top-1",
    "top-1 95% low",
    "top-1 95% high",
    "test images by train artists",
    "weights",
    "epochs",
    "wall time (s)",
    "error",
)
#: How report.md marks the job ``ckpt_path=<sweep folder>`` loads.
LOADED = "→"


# --- collecting runs -------------------------------------------------------------------------
def _policy_name(target: str | None) -> str | None:
    """``artmove.finetune.Gradual`` -> ``gradual`` (a user's own policy keeps its class name)."""
    return target.rsplit(".", 1)[-1].lower() if target else None


def read_run(run: RunFolder, root: Path | None = None) -> dict[str, Any]:
    """One row: the run's settings (config, else results) and its results, or its failure."""
    folder = run.path
    config = _load_config(run)
    results = run.results or {"status": "failed", "error": "no results.json: the job was killed or crashed before writing it"}

    def setting(key: str):
        value = results.get(key)
        return value if value is not None else _select(config, key)

    data = results.get("data") or {}
    error = str(results.get("error") or "").strip().splitlines()
    selected, metric = results.get(SELECTED), results.get("optimized_metric")
    if not isinstance(selected, (int, float)) and isinstance(results.get("best_val/top1"), (int, float)):
        selected, metric = results["best_val/top1"], "val/top1"  # written before optimized_value was
    row = {
        "run": folder.name if root is None or folder == root else os.path.relpath(folder, root),
        "status": results.get("status", "ok"),
        "data": _data_name(
            data.get("root") or _select(config, "data.root"), data.get("source") or _select(config, "data.source._target_"), run
        ),
        "backbone": setting("backbone"),
        "policy": _policy_name(_select(config, "finetune._target_")),
        "unfreeze": setting("unfreeze"),
        "seed": setting("seed"),
        "other": " ".join(_other_overrides(run)),
        "test_artist_overlap": test_artist_overlap(results.get("artist_overlap")),
        "weights": weights_name(results.get("pretrained_cfg")),
        "optimized_metric": metric,
        SELECTED: selected,
        "epochs": results.get("epochs"),
        "wall_time_s": results.get("wall_time_s"),
        "error": error[0] if error else "",
        "folder": str(folder),
        "loaded": False,
    }
    row.update({metric: results.get(metric) for metric in (*METRICS, *CI95)})
    return row


def test_artist_overlap(overlap: dict | None) -> str:
    """``42.0 % (5/12 artists)``: the test images whose artist also paints in train; ``unknown`` when the
    artists could not be told; empty for runs that did not record it."""
    if not overlap:
        return ""
    if "unknown" in overlap:
        return "unknown"
    test = overlap.get("test") or {}
    return f"{100 * test['share']:.1f} % ({test['artists_in_train']}/{test['artists']} artists)" if test.get("images") else ""


def weights_name(pretrained_cfg: dict | None) -> str:
    """The backbone's resolved pretrained weights: ``resnet50.tv_in1k (hf-hub timm/resnet50.tv_in1k)``."""
    if not pretrained_cfg:
        return ""
    return f"{pretrained_cfg.get('tag_name', '?')} ({pretrained_cfg.get('source', '?')})"


SHOWN_KEYS = {"seed", "backbone", "unfreeze", "data", "data.root", "finetune"}


def _other_overrides(run: RunFolder) -> list[str]:
    """The job's command-line overrides besides the seed and the columns above (e.g. optimizer.lr=…)."""
    path = run.hydra_file("overrides")
    saved = read_yaml(path) if path.is_file() else []
    overrides = [str(o) for o in saved] if isinstance(saved, list) else []
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SHOWN_KEYS and not o.startswith("hydra"))


def _load_config(run: RunFolder) -> dict:
    """The saved config, read as plain data (report builds nothing from it)."""
    return run.saved_config or {}


def _select(config: dict, key: str):
    """A setting as written; an interpolation (never resolved) reads as unknown."""
    value = select(config, key)
    return None if isinstance(value, str) and "${" in value else value


def _data_name(root: str | None, source: str | None, run: RunFolder) -> str:
    """The data set's folder name; for generated data, the Hydra choice or the source's name."""
    if root:
        return Path(str(root)).name
    hydra_file = run.hydra_file("hydra")
    if hydra_file.is_file():
        choice = select(read_yaml(hydra_file), "hydra.runtime.choices.data")
        if isinstance(choice, str) and choice:
            return str(choice)
    return str(source or "?").rsplit(".", 1)[-1]


# --- tables ----------------------------------------------------------------------------------
def sort_runs(rows: list[dict], metric: str, minimize: bool = False) -> list[dict]:
    """Best first (the highest, or the lowest with ``minimize``); failed runs and runs without the metric last."""
    sign = 1.0 if minimize else -1.0

    def key(row):
        value = row.get(metric)
        scored = row["status"] == "ok" and isinstance(value, (int, float)) and not math.isnan(value)
        return (not scored, sign * (value if scored else 0.0), row["run"])

    return sorted(rows, key=key)


def loaded_jobs(paths: Sequence[str | Path]) -> tuple[dict[Path, Path], list[str]]:
    """For each path that is a sweep folder (not a run): the job ``ckpt_path=<path>`` loads, resolved as the
    commands resolve it (``{job folder: sweep folder}``), and a line for each sweep it resolves for none."""
    loaded, notes = {}, []
    for path in map(Path, paths):
        if RunFolder.is_run(path):
            continue
        try:
            loaded[resolve_checkpoint(path).run.path.resolve()] = path
        except Exception as error:  # noqa: BLE001 - the report says so and goes on: it only reads
            reason = error if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            notes.append(f"`ckpt_path={path}` loads no job: {reason}")
    return loaded, notes


def summarise(rows: list[dict], metric: str, minimize: bool = False) -> list[dict]:
    """Per setting (data, backbone, policy, unfreeze): mean ± std of each metric over its seeds (ok runs)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[tuple(row[key] for key in SETTING)].append(row)
    summary = []
    for setting, members in groups.items():
        item = dict(
            zip(SETTING, setting, strict=True),
            runs=len(members),
            seeds=" ".join(map(str, sorted((m["seed"] for m in members), key=_seed_key))),
        )
        for name in (*RANKINGS, "wall_time_s"):
            values = [m[name] for m in members if isinstance(m.get(name), (int, float))]
            item[f"{name} mean"] = statistics.fmean(values) if values else None
            item[f"{name} std"] = statistics.stdev(values) if len(values) > 1 else None
        interval = [members[0].get(key) for key in CI95]
        item["test/top1 ci95"] = interval if len(members) == 1 and None not in interval else None
        summary.append(item)
    sign = 1.0 if minimize else -1.0
    return sorted(summary, key=lambda s: (s[f"{metric} mean"] is None, sign * (s[f"{metric} mean"] or 0.0)))


def _seed_key(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _shown(row: dict) -> dict:
    """Settings as typed (unfreeze 0.2, not 0.2000) and wall time to the tenth of a second."""
    shown = dict(row)
    if "loaded" in row:
        shown["loaded"] = LOADED if row["loaded"] else ""
    if isinstance(row.get("unfreeze"), float):
        shown["unfreeze"] = f"{row['unfreeze']:g}"
    if isinstance(row.get("wall_time_s"), (int, float)):
        shown["wall_time_s"] = f"{row['wall_time_s']:.1f}"
    return shown


def _mean_std(item: dict, name: str) -> str:
    """``mean ± std`` over seeds; one run's top-1 with its bootstrap interval, ``0.6150 [0.5700, 0.6600]``."""
    mean, std = item[f"{name} mean"], item[f"{name} std"]
    if mean is None:
        return ""
    if std is not None:
        return f"{mean:.4f} ± {std:.4f}"
    interval = item.get(f"{name} ci95")
    return f"{mean:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else f"{mean:.4f}"


def summary_markdown(summary: list[dict]) -> str:
    rows = [
        {
            **{k: _shown(s)[k] for k in SETTING},
            "runs": s["runs"],
            "seeds": s["seeds"],
            **{m: _mean_std(s, m) for m in RANKINGS},
            "wall": _mean_std(s, "wall_time_s"),
        }
        for s in summary
    ]
    return markdown_table(
        rows,
        [*SETTING, "runs", "seeds", *RANKINGS, "wall"],
        [
            *SETTING[:-1],
            "other overrides",
            "runs",
            "seeds",
            "selected value",
            "test top-1",
            "test top-3",
            "test top-5",
            "test top-1 macro",
            "best val top-1",
            "wall time (s)",
        ],
    )


# --- figures ---------------------------------------------------------------------------------
def plot_metric_vs_unfreeze(summary: list[dict], metric: str, path: Path) -> Path | None:
    """Mean metric (± std over seeds) against the unfreeze fraction: a line per backbone and data set
    (and per policy and other overrides, when they vary)."""
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for item in summary:
        if isinstance(item["unfreeze"], (int, float)) and item[f"{metric} mean"] is not None:
            lines[(item["backbone"], item["data"], item["policy"], item["other"])].append(item)
    if not lines:
        return None
    several_policies = len({key[2] for key in lines}) > 1
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for (backbone, data, policy, other), items in sorted(lines.items(), key=lambda kv: tuple(map(str, kv[0]))):
        items.sort(key=lambda item: item["unfreeze"])
        label = f"{backbone} · {data}" + (f" · {policy}" if several_policies else "") + (f" · {other}" if other else "")
        ax.errorbar(
            [i["unfreeze"] for i in items],
            [i[f"{metric} mean"] for i in items],
            yerr=[i[f"{metric} std"] or 0.0 for i in items],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xlabel("unfreeze (fraction of the backbone retrained)")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_xlim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} against unfreeze")
    return save_png(fig, path)


def learning_curves(folder: Path, names: Sequence[str] = ("val/top1", "train/loss_epoch")) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of ``names`` (by default what the sweep's figure plots) from the run's csv/metrics.csv:
    the last value logged for each epoch, the epochs in order."""
    path = RunFolder(folder).metrics_file
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    if path.is_file():
        with path.open(encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                epoch = record.get("epoch")
                for name in names:
                    if epoch not in (None, "") and record.get(name) not in (None, ""):
                        curves[name][int(float(epoch))] = float(record[name])
    return {name: sorted(points.items()) for name, points in curves.items()}


def plot_learning_curves(rows: list[dict], path: Path) -> Path | None:
    """Validation top-1 and training loss per epoch, one line per run."""
    curves = [(row, learning_curves(Path(row["folder"]))) for row in rows]
    curves = [(row, c) for row, c in curves if c]
    if not curves:
        return None
    fig = Figure(figsize=(12, 4.6))
    left, right = fig.subplots(1, 2)
    for row, c in curves:
        label = f"{row['backbone']} u={row['unfreeze']} s={row['seed']} · {row['data']}"
        for ax, name in ((left, "val/top1"), (right, "train/loss_epoch")):
            if name in c:
                ax.plot(*zip(*c[name], strict=True), marker="o", markersize=3, label=label)
    for ax, name in ((left, "validation top-1"), (right, "training loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    if handles:
        fig.legend(handles[:20], labels[:20], loc="upper center", ncol=2, fontsize=7, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Learning curves")
    return save_png(fig, path)


# --- the report ------------------------------------------------------------------------------
def write_report(paths: Sequence[str | Path], out_dir: str | Path, metric: str = SELECTED) -> Path:
    """Collect every run below ``paths``; write report.md, runs.csv, settings.csv and the figures
    into ``out_dir``; return the Markdown file's path. ``metric``: the ranking, by default each job's
    value of the metric it was selected on (``optimized_value``; lowest first where the sweep minimised)."""
    if metric not in RANKINGS:
        raise ValueError(f"metric {metric!r}: use one of {', '.join(RANKINGS)}.")
    out = Path(out_dir)
    folders = find_runs(paths)
    root = Path(os.path.commonpath([p.resolve() for p in map(Path, paths)]))
    root = root if root.is_dir() else root.parent
    runs = [RunFolder(run.path.resolve()) for run in folders]
    scored = [run for run in runs if run.finished and isinstance(run.results.get(SELECTED), (int, float))]
    minimize = metric == SELECTED and bool(scored) and selection_direction(scored[0]) == "minimize"  # as ckpt_path=<sweep> chooses
    rows = [read_run(run, root) for run in runs]
    loaded, notes = loaded_jobs(paths)
    for row in rows:
        row["loaded"] = Path(row["folder"]) in loaded
    rows = sort_runs(rows, metric, minimize)
    summary = summarise(rows, metric, minimize)
    write_csv(out / "runs.csv", rows, RUN_COLUMNS)
    settings_columns = [*SETTING, "runs", "seeds"] + [f"{m} {s}" for m in (*RANKINGS, "wall_time_s") for s in ("mean", "std")]
    write_csv(out / "settings.csv", summary, settings_columns)
    figure_metric = metric if metric in METRICS else "test/top1"  # the sweep's result against unfreeze
    figures = [
        plot_metric_vs_unfreeze(summary, figure_metric, out / f"{figure_metric.replace('/', '_')}_vs_unfreeze.png"),
        plot_learning_curves(rows, out / "learning_curves.png"),
    ]
    failed = sum(row["status"] != "ok" for row in rows)
    metrics = sorted({str(row["optimized_metric"]) for row in rows if row.get("optimized_metric")})
    if metric == SELECTED:
        ranking = (
            f"ranked by the metric each job was selected on ({', '.join(f'`{m}`' for m in metrics) or 'none recorded'}: "
            f"its `optimized_value`, {'lowest' if minimize else 'highest'} first), as a sweeper optimises it and "
            "`ckpt_path=<sweep folder>` chooses; the test scores are beside it, not used to rank"
        )
    else:
        ranking = f"sorted by `{metric}`" + (
            " (the test split: choose on validation, the default ranking)" if metric.startswith("test/") else ""
        )
    marks = [
        f"{LOADED} marks the job `ckpt_path={sweep}` loads (evaluate, predict, export, demo): "
        f"{os.path.relpath(job, root) if job != root else job.name}."
        for job, sweep in loaded.items()
    ]
    lines = [
        f"# Sweep report: {len(rows)} run(s), {failed} failed",
        "",
        f"Runs under {markdown_text(', '.join(map(str, paths)))}, {ranking} (failed runs last).",
        "",
        *[line for mark in [*marks, *notes] for line in (mark, "")],
        "## Settings (mean ± std over seeds; one run: top-1 [bootstrap 95% interval])",
        "",
        summary_markdown(summary),
        "",
        "## Runs",
        "",
        markdown_table(map(_shown, rows), RUN_COLUMNS, RUN_HEADERS),
        "",
    ]
    lines += [f"![{figure.stem}]({figure.name})\n" for figure in figures if figure is not None]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report

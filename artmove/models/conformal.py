"""Prediction sets with a coverage guarantee: split conformal prediction on calibrated probabilities.

Instead of one answer, a *set* of movements that holds the true one with probability at least
``coverage`` (say 0.9), over the draw of the calibration split and the new painting, provided they
are exchangeable (drawn alike: same collection, same artists' mix). The threshold is fitted on
``n`` calibration images (validation) as the ``ceil((n + 1) coverage) / n`` empirical quantile of
their non-conformity scores (the finite-sample correction that makes the guarantee exact); a class
is in a painting's set when its score is at or below the threshold. When that level exceeds 1 (too
few images for the coverage asked), no finite threshold has the guarantee: every class is in every set.

Scores (the smaller, the more the class conforms):

- ``lac`` (least ambiguous set-valued classifier; Sadinle, Lei & Wasserman 2019): 1 - p(class);
- ``aps`` (adaptive prediction sets; Romano, Sesia & Candès 2020): the probabilities of the classes
  ranked above it, plus u * p(class), u ~ U(0, 1) (randomised, so coverage is exact, not just at least);
- ``raps`` (regularised APS; Angelopoulos et al. 2021, "Uncertainty sets for image classifiers using
  conformal prediction"): APS with ``lam`` added to each class ranked below ``k_reg``, which keeps
  the unlikely tail out of the sets.

``class_conditional`` (Mondrian conformal; Vovk 2003): one threshold per class, each the corrected
quantile of that class's own calibration images, so the guarantee holds for every movement alone,
not only on average over movements.

Written here rather than taken from TorchCP or MAPIE: both pull in training frameworks (MAPIE scikit-learn
estimators) for what is a quantile and a sort; these few dozen lines follow the papers' definitions.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from artmove.errors import ConfigError
from artmove.models.calibration import clopper_pearson
from artmove.utils.config import is_number

SCORES = ("lac", "aps", "raps")
#: The fixed top-k sets compared against (evaluate's table and sets.png).
FIXED_K = (1, 2, 3, 4, 5)


def check_settings(coverage: Any, score: Any, class_conditional: Any = False, k_reg: Any = 1, lam: Any = 0.0, where: str = "") -> None:
    """Each setting in one line, before anything is built (``where``: the config node's prefix, e.g. ``conformal.``)."""
    if coverage is not None and (not is_number(coverage) or not 0 < coverage < 1):
        raise ConfigError(
            f"coverage={coverage!r}: give the share of prediction sets that must hold the true movement, "
            "in (0, 1), e.g. 0.9, or null (no sets)."
        )
    if score not in SCORES:
        raise ConfigError(f"{where}score={score!r}: use one of {', '.join(SCORES)}.")
    if not isinstance(class_conditional, bool):
        raise ConfigError(f"{where}class_conditional={class_conditional!r}: give true (one threshold per movement) or false.")
    if isinstance(k_reg, bool) or not isinstance(k_reg, int) or k_reg < 0:
        raise ConfigError(f"{where}k_reg={k_reg!r}: give a whole number >= 0 (raps: classes ranked beyond it pay lam each).")
    if not is_number(lam) or not 0 <= lam < float("inf"):
        raise ConfigError(f"{where}lam={lam!r}: give a number >= 0 (raps's penalty per class ranked beyond k_reg; 0 is aps).")


def class_scores(probs: torch.Tensor, score: str, u: torch.Tensor, k_reg: int = 1, lam: float = 0.0) -> torch.Tensor:
    """``[N, C]`` non-conformity score of every class for every image (``u``: ``[N]`` uniforms, for aps and raps)."""
    probs = probs.double()
    if score == "lac":
        return 1 - probs
    order = probs.argsort(dim=1, descending=True, stable=True)
    ranked = probs.gather(1, order)
    if score == "raps":
        ranked = ranked + lam * (torch.arange(probs.shape[1]) >= k_reg).double()
    sorted_scores = ranked.cumsum(1) - u.double().view(-1, 1) * ranked
    return torch.empty_like(sorted_scores).scatter_(1, order, sorted_scores)


def uniforms(count: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(count, generator=generator, dtype=torch.float64)


def quantile(scores: torch.Tensor, coverage: float) -> float | None:
    """The ``ceil((n + 1) coverage) / n`` empirical quantile (the ``ceil((n + 1) coverage)``-th smallest score);
    None when that rank exceeds ``n``: no finite threshold has the guarantee, every class is then in the set."""
    n = len(scores)
    rank = math.ceil((n + 1) * coverage - 1e-12)
    if rank > n:
        return None
    return float(scores.sort().values[rank - 1])


def fit(
    probs: torch.Tensor,
    labels: torch.Tensor,
    coverage: float,
    score: str = "aps",
    class_conditional: bool = False,
    k_reg: int = 1,
    lam: float = 0.0,
    split: str = "val",
    seed: int = 0,
) -> dict[str, Any]:
    """The record that rebuilds the sets: plain data, for a checkpoint, results.json or conformal.json."""
    generator = torch.Generator().manual_seed(seed)
    scores = class_scores(probs, score, uniforms(len(labels), generator), k_reg, lam).gather(1, labels.view(-1, 1)).squeeze(1)
    if class_conditional:
        threshold: Any = [quantile(scores[labels == c], coverage) for c in range(probs.shape[1])]
        every = sum(value is None for value in threshold)
    else:
        threshold = quantile(scores, coverage)
        every = probs.shape[1] if threshold is None else 0
    return {
        "score": score,
        "coverage": float(coverage),
        "threshold": threshold,
        "class_conditional": class_conditional,
        "k_reg": int(k_reg),
        "lam": float(lam),
        "split": split,
        "images": len(labels),
        "seed": int(seed),
        "classes_always_in": every,
    }


def prediction_sets(probs: torch.Tensor, record: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
    """``[N, C]`` boolean: class c is in image n's set. ``generator`` draws aps/raps's uniforms (None: seeded by the record)."""
    generator = generator or torch.Generator().manual_seed(record["seed"])
    scores = class_scores(probs, record["score"], uniforms(len(probs), generator), record["k_reg"], record["lam"])
    threshold = record["threshold"]
    values = threshold if isinstance(threshold, list) else [threshold] * probs.shape[1]
    limit = torch.tensor([math.inf if value is None else value for value in values], dtype=torch.float64)
    return scores <= limit


def fixed_k(probs: torch.Tensor, labels: torch.Tensor, ks=FIXED_K) -> list[dict[str, float]]:
    """Coverage of the fixed top-k sets (the top-k accuracy), k in ``ks`` (no more than the classes)."""
    ranks = (probs > probs.gather(1, labels.view(-1, 1))).sum(1)  # how many classes are more probable than the true one
    return [{"k": k, "coverage": float((ranks < k).double().mean())} for k in ks if k <= probs.shape[1]]


def set_metrics(mask: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor | None = None) -> dict[str, Any]:
    """Coverage (with its exact binomial 95 % interval), set sizes, coverage per class and the worst class;
    with ``probs``, the smallest fixed top-k that covers as often on these images."""
    n, classes = mask.shape
    covered = mask.gather(1, labels.view(-1, 1)).squeeze(1)
    sizes = mask.sum(1)
    low, high = clopper_pearson(int(covered.sum()), n)
    per_class = [float(covered[labels == c].double().mean()) if bool((labels == c).any()) else None for c in range(classes)]
    present = [(value, c) for c, value in enumerate(per_class) if value is not None]
    worst = min(present)[1] if present else None
    coverage = float(covered.double().mean()) if n else math.nan
    metrics = {
        "coverage": coverage,
        "coverage_low": low,
        "coverage_high": high,
        "images": n,
        "mean_size": float(sizes.double().mean()) if n else math.nan,
        "size_histogram": torch.bincount(sizes, minlength=classes + 1).tolist(),
        "per_class": per_class,
        "worst_class": worst,
        "worst_coverage": per_class[worst] if worst is not None else None,
    }
    if probs is not None:
        reaching = [row["k"] for row in fixed_k(probs, labels, range(1, classes + 1)) if row["coverage"] >= coverage - 1e-12]
        metrics["fixed_k"] = reaching[0] if reaching else classes
    return metrics


def describe(record: dict[str, Any]) -> str:
    """One line: the sets' settings and threshold, and when every class is always in."""
    how = f"{record['score']}" + (f" (k_reg={record['k_reg']}, lam={record['lam']:g})" if record["score"] == "raps" else "")
    how += ", one threshold per movement" if record["class_conditional"] else ""
    threshold = record["threshold"]
    if isinstance(threshold, list):
        value = f"{sum(t is not None for t in threshold)} of {len(threshold)} movements with a threshold"
    else:
        value = "threshold none" if threshold is None else f"threshold {threshold:.4f}"
    line = f"{100 * record['coverage']:g} % prediction sets ({how}) fitted on {record['images']} {record['split']} images: {value}"
    if record.get("classes_always_in"):
        line += (
            f"; {record['classes_always_in']} movement(s) always in every set (too few {record['split']} images for "
            f"{100 * record['coverage']:g} %: ceil((n+1)(coverage))/n > 1)"
        )
    return line


def movements(mask_row: torch.Tensor, probs_row: torch.Tensor, class_names: list[str]) -> list[str]:
    """One image's set as movement names, most probable first."""
    order = probs_row.argsort(descending=True, stable=True).tolist()
    return [class_names[c] for c in order if bool(mask_row[c])]


#: A record's fields and their types, as :func:`fit` writes them (``threshold``: a number, null, or a list of them).
RECORD_FIELDS = {
    "score": str,
    "coverage": float,
    "class_conditional": bool,
    "k_reg": int,
    "lam": float,
    "split": str,
    "images": int,
    "seed": int,
}


def checked_record(value: Any, where: Any, num_classes: int | None = None) -> dict[str, Any] | None:
    """A conformal record read from a file (a checkpoint, config.json, conformal.json): the fields :func:`fit`
    writes, of their types and ranges, or a ConfigError (None stays None: a model without sets)."""
    if value is None:
        return None

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{where}: its conformal record is not one artmove writes ({why}): refused.")

    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise bad("not a mapping")
    for key, kind in RECORD_FIELDS.items():
        item = value.get(key)
        ok = (
            isinstance(item, bool)
            if kind is bool
            else (is_number(item) if kind is float else isinstance(item, kind) and not isinstance(item, bool))
        )
        if not ok:
            raise bad(f"{key}={item!r}")
    if value["score"] not in SCORES or not 0 < value["coverage"] < 1 or value["k_reg"] < 0 or not 0 <= value["lam"] < float("inf"):
        raise bad("score, coverage, k_reg or lam out of range")
    threshold = value.get("threshold")
    values = threshold if isinstance(threshold, list) else [threshold]
    if value["class_conditional"] != isinstance(threshold, list) or not all(
        t is None or (is_number(t) and math.isfinite(t)) for t in values
    ):
        raise bad(f"threshold={threshold!r}")
    if isinstance(threshold, list) and num_classes is not None and len(threshold) != num_classes:
        raise bad(f"{len(threshold)} thresholds for {num_classes} movements")
    always = value.get("classes_always_in", 0)
    if isinstance(always, bool) or not isinstance(always, int):
        raise bad(f"classes_always_in={always!r}")
    return {
        **{key: value[key] for key in RECORD_FIELDS},
        "threshold": list(threshold) if isinstance(threshold, list) else threshold,
        "classes_always_in": always,
    }


def read_file(path: Any, num_classes: int | None = None) -> dict[str, Any] | None:
    """A conformal.json (``evaluate … conformal.fit=true`` writes it): its record, checked as data (None: it says null)."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(
            f"conformal={path}: cannot read it ({error.strerror or error}); "
            "give the conformal.json that evaluate … conformal.fit=true wrote."
        ) from None
    except ValueError as error:
        raise ConfigError(
            f"conformal={path} is not JSON ({error}): give the conformal.json that evaluate … conformal.fit=true wrote."
        ) from None
    return checked_record(value.get("conformal") if isinstance(value, dict) and "conformal" in value else value, path, num_classes)


def label(record: dict[str, Any]) -> str:
    """How a set is introduced: ``90 % set``."""
    return f"{100 * record['coverage']:g} % set"

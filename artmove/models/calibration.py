"""How far a classifier's probabilities can be taken at their word, and when it should say "not sure".

- **Calibration, measured**: the expected calibration error (ECE: 15 equal-width bins of top-1
  confidence, the mean gap between confidence and accuracy weighted by the share of images in each
  bin; torchmetrics' ``MulticlassCalibrationError``) and the negative log-likelihood of the true class.
- **Calibration, fixed**: temperature scaling (Guo et al. 2017, "On calibration of modern neural
  networks"): one scalar ``T > 0`` divides the logits; fitted on the validation split by LBFGS on the
  NLL, over ``log T`` (T stays positive). It never changes a top-1 answer (or any ranking).
- **Selective prediction**: the accuracy of the answers kept when the least confident are set aside
  (coverage-accuracy curve), and the lowest confidence threshold whose kept answers reach a target
  top-1, chosen on one split (validation) and then measured on another (test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassCalibrationError

from artmove.errors import ConfigError

ECE_BINS = 15
#: The coverages of evaluate's table: all answers, then the 90 / 80 / 50 % most confident.
COVERAGES = (1.0, 0.9, 0.8, 0.5)
#: The temperature is kept in [1/100, 100]: a validation split with no mistakes would drive it to 0.
TEMPERATURE_RANGE = (0.01, 100.0)


def check_threshold(key: str, value) -> None:
    """A "not sure" threshold or target setting: null or a probability in [0, 1]."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise ConfigError(f"{key}={value!r}: give a top-1 probability in [0, 1] (answers below it are marked uncertain), or null.")


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of class probabilities ``[N, classes]`` (top-1 confidence, ``bins`` equal-width bins, L1)."""
    if not len(labels):
        return math.nan
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=bins, norm="l1")
    return float(metric(probs.float(), labels))


def calibrated_ece_draws(probs: torch.Tensor, draws: int = 1000, seed: int = 0, bins: int = ECE_BINS) -> torch.Tensor:
    """``[draws]`` ECEs of a *perfectly calibrated* model with these top-1 confidences on this many
    images: in each draw every answer is right with probability its confidence. ECE is biased upwards
    on a small split (a few hundred images over 15 bins); these draws are its reference there.

    Binned as torchmetrics bins (``bucketize`` on ``linspace(0, 1, bins + 1)``, right-closed), all draws
    at once: torchmetrics computes one ECE per call, 7.7 s for 500 draws of 440 images against milliseconds.
    Drawn in chunks of at most ~10M answers, so a split of 100,000 images stays within a few hundred MB."""
    confidence = probs.detach().float().cpu().max(1).values
    generator = torch.Generator().manual_seed(seed)
    index = torch.bucketize(confidence, torch.linspace(0, 1, bins + 1), right=True) - 1
    chunk, eces = max(1, 10_000_000 // max(len(confidence), 1)), []
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        right = (torch.rand(size, len(confidence), generator=generator) < confidence).float()
        gaps = torch.zeros(size, bins + 1).scatter_add_(1, index.expand(size, -1), right - confidence)
        eces.append(gaps.abs().sum(1) / max(len(confidence), 1))
    return torch.cat(eces)


def ece_reference(probs: torch.Tensor, labels: torch.Tensor, draws: int = 1000) -> dict[str, float]:
    """What a measured ECE should be read against: ``ece_floor``, the mean ECE of a perfectly calibrated
    model with the same confidences on the same number of images, and ``ece_p``, the share of such a
    model's draws with an ECE at least the measured one (below 0.05: miscalibration this split can show), and
    ``confidence``, the mean top-1 probability, whose gap to the top-1 accuracy says which way: above it,
    over-confident; below it, under-confident."""
    if not len(labels):
        return {"ece_floor": math.nan, "ece_p": math.nan, "confidence": math.nan}
    calibrated, measured = calibrated_ece_draws(probs, draws), expected_calibration_error(probs, labels)
    return {
        "ece_floor": float(calibrated.mean()),
        "ece_p": float(((calibrated >= measured - 1e-6).sum() + 1) / (draws + 1)),
        "confidence": float(probs.float().max(1).values.mean()),
    }


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean ``-log p(true class)`` (natural log); a probability of 0 counts as the smallest float32."""
    if not len(labels):
        return math.nan
    true = probs.double().gather(1, labels.view(-1, 1)).squeeze(1)
    return float(-true.clamp_min(torch.finfo(torch.float32).tiny).log().mean())


def calibration_scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"ece": …, "nll": …}`` of class probabilities."""
    return {"ece": expected_calibration_error(probs, labels), "nll": negative_log_likelihood(probs, labels)}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (LBFGS over ``log T``, in float64).

    1.0 when there is nothing to fit (no images) or the fit would not lower the NLL; clipped to
    :data:`TEMPERATURE_RANGE` (a split without mistakes has its optimum at T -> 0)."""
    if not len(labels):
        return 1.0
    logits, labels = logits.detach().double().cpu(), labels.detach().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    low, high = (math.log(bound) for bound in TEMPERATURE_RANGE)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(low, high).exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().clamp(low, high).exp())
    with torch.no_grad():
        before = F.cross_entropy(logits, labels)
        after = F.cross_entropy(logits / temperature, labels)
    return temperature if math.isfinite(temperature) and after <= before else 1.0


# --- selective prediction ------------------------------------------------------------------------
def _ranked(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 confidences, most confident first, and whether each of those answers is right."""
    confidence, predicted = probs.max(1)
    order = torch.argsort(confidence, descending=True, stable=True)
    return confidence[order], (predicted[order] == labels[order]).double()


def coverage_curve(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(coverage, top-1 of the kept answers, threshold) when the k most confident answers are kept, k = 1…N."""
    confidence, correct = _ranked(probs, labels)
    kept = torch.arange(1, len(labels) + 1, dtype=torch.float64)
    return kept / max(1, len(labels)), correct.cumsum(0) / kept, confidence


def accuracy_at_coverage(probs: torch.Tensor, labels: torch.Tensor, coverages: Sequence[float] = COVERAGES) -> list[dict]:
    """Per coverage c: the ``round(c N)`` most confident answers kept (at least one), their top-1 and the
    confidence of the last one kept."""
    confidence, correct = _ranked(probs, labels)
    rows = []
    for coverage in coverages:
        kept = max(1, round(coverage * len(labels))) if len(labels) else 0
        rows.append(
            {
                "coverage": coverage,
                "kept": kept,
                "top1": float(correct[:kept].mean()) if kept else math.nan,
                "threshold": float(confidence[kept - 1]) if kept else math.nan,
            }
        )
    return rows


def kept_at(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """Coverage (share of answers with top-1 probability >= ``threshold``) and their top-1 (NaN: none kept)."""
    confidence, predicted = probs.max(1)
    keep = confidence >= threshold
    kept = int(keep.sum())
    top1 = float((predicted[keep] == labels[keep]).double().mean()) if kept else math.nan
    return {"coverage": kept / len(labels) if len(labels) else math.nan, "top1": top1, "kept": kept}


def threshold_for_target(probs: torch.Tensor, labels: torch.Tensor, target: float) -> dict:
    """The lowest top-1 probability ``t`` at which the answers with confidence >= ``t`` reach ``target`` top-1,
    i.e. the most answers kept at that accuracy; ``reached`` false (and ``t`` = 1.0: every answer is
    "not sure" short of certainty) when no threshold does. With its coverage and top-1 on these images."""
    confidence, correct = _ranked(probs, labels)
    if not len(labels):
        return {"target": target, "threshold": 1.0, "reached": False, "coverage": math.nan, "top1": math.nan}
    accuracy = correct.cumsum(0) / torch.arange(1, len(labels) + 1, dtype=torch.float64)
    # A threshold keeps every answer at least as confident: only the last of a run of equal confidences is a candidate.
    ends = torch.ones(len(labels), dtype=torch.bool)
    ends[:-1] = confidence[1:] != confidence[:-1]
    good = torch.nonzero(ends & (accuracy >= target - 1e-12)).flatten()
    if not len(good):
        return {"target": target, "threshold": 1.0, "reached": False, **kept_at(probs, labels, 1.0)}
    last = int(good[-1])
    threshold = float(confidence[last])
    return {"target": target, "threshold": threshold, "reached": True, **kept_at(probs, labels, threshold)}


# --- a "not sure" threshold with a guarantee -----------------------------------------------------
#: The confidence of the binomial bounds (Clopper-Pearson intervals, the guaranteed "not sure" threshold).
BOUND_LEVEL = 0.95
#: The guaranteed threshold's candidates: 1.00, 0.99, …, 0.01 (a grid fixed before the data; a threshold at
#: every distinct confidence would test one hypothesis per answer and stop at the first unlucky one).
GUARANTEE_GRID = 100


def clopper_pearson(successes: int, trials: int, level: float = BOUND_LEVEL) -> tuple[float | None, float | None]:
    """The exact (Clopper-Pearson) two-sided binomial interval of ``successes / trials`` (None, None: no trials)."""
    from scipy.stats import beta

    if not trials:
        return None, None
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high


def error_upper_bound(errors: torch.Tensor, kept: torch.Tensor, level: float = BOUND_LEVEL) -> torch.Tensor:
    """One-sided Clopper-Pearson upper bounds of error rates (``errors`` out of ``kept``, elementwise)."""
    from scipy.stats import beta

    error_counts, kept_counts = errors.double().numpy(), kept.double().numpy()
    bound = beta.ppf(level, error_counts + 1, kept_counts - error_counts)
    bound[error_counts >= kept_counts] = 1.0
    return torch.from_numpy(bound)


def guaranteed_threshold(probs: torch.Tensor, labels: torch.Tensor, target: float, level: float = BOUND_LEVEL) -> dict:
    """The lowest top-1 probability ``t`` such that, with probability >= ``level`` over the draw of these images,
    the answers at or above ``t`` reach ``target`` top-1 on new images drawn alike (Learn then Test; Angelopoulos
    et al. 2021): candidate thresholds are tested from the highest down (fixed-sequence testing, so no
    multiplicity correction), each by the one-sided Clopper-Pearson upper bound of its kept answers' error,
    and the sequence stops at the first whose bound exceeds ``1 - target``. It starts at the threshold whose
    bound would be lowest if the confidences were right (above it too few answers are kept for any bound to
    pass); that start depends on the confidences only, never on the labels, so the guarantee holds.
    ``reached`` false (``t`` = 1.0) when no threshold passes."""
    empty = {"target": target, "threshold": 1.0, "reached": False, "level": level, "error_upper": None}
    if not len(labels):
        return {**empty, "coverage": math.nan, "top1": math.nan}
    confidence, predicted = probs.double().max(1)
    right = predicted == labels
    grid = torch.arange(GUARANTEE_GRID, 0, -1, dtype=torch.float64) / GUARANTEE_GRID  # 1.00, 0.99, …, 0.01: fixed before the data
    keep = confidence.view(1, -1) >= grid.view(-1, 1) - 1e-12
    kept, errors = keep.sum(1), (keep & ~right.view(1, -1)).sum(1)
    bounds = error_upper_bound(errors, kept, level)
    # Where to start: the threshold whose bound would be lowest if the model's confidences were right (the errors
    # they expect, sum(1 - p) over the kept answers): label-free, so the sequence is fixed before the labels are read.
    expected = error_upper_bound((keep * (1 - confidence).view(1, -1)).sum(1).round(), kept, level)
    passed = None
    for index in range(int(expected.argmin()), len(grid)):
        if bounds[index] > 1 - target + 1e-12:
            break
        passed = index
    if passed is None:
        return {**empty, **kept_at(probs, labels, 1.0)}
    threshold = float(grid[passed])
    return {
        "target": target,
        "threshold": threshold,
        "reached": True,
        "level": level,
        "error_upper": float(bounds[passed]),
        **kept_at(probs, labels, threshold),
    }

"""Binary-classifier metrics for judges: AUROC, balanced accuracy, precision, recall, F1 and the confusion."""

from __future__ import annotations

from typing import Any

import numpy as np


def fmt(x: Any, spec: str = ".2f") -> str:
    """A metric for a table: formatted, or n/a where it is undefined (None or NaN)."""
    return "n/a" if x is None or x != x else format(x, spec)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks); NaN when one class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def verdict_arrays(verdicts) -> tuple[np.ndarray, np.ndarray]:
    """A judge's verdicts -> (scores, said success): the score where the judge gave one, else its 0/1 verdict;
    an abstain (success None) is not a success."""
    scores = np.array([v.score if v.score is not None else float(bool(v.success)) for v in verdicts], float)
    return scores, np.array([v.success is True for v in verdicts], bool)


def binary_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5, predicted: np.ndarray | None = None
) -> dict[str, Any]:
    """Precision/recall/F1 etc. of the judge's verdicts ``predicted`` (default: ``scores >= threshold``), AUROC
    of ``scores``; with no decided verdict at all, every metric is undefined (NaN), never 0 - a judge that
    answered nothing has no precision. Pass the verdicts when the judge places its own threshold (a gate, a
    per-task calibration): the metrics then describe the verdicts RL is rewarded with."""
    labels = np.asarray(labels, bool)
    if len(labels) == 0:
        nan = float("nan")
        keys = ("base_rate", "auroc", "balanced_accuracy", "precision", "recall", "f1", "f1_always_success")
        return {"n": 0, **dict.fromkeys(keys, nan), "confusion": None}
    pred = np.asarray(scores) >= threshold if predicted is None else np.asarray(predicted, bool)
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    fn, tn = int((~pred & labels).sum()), int((~pred & ~labels).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    base = float(labels.mean()) if len(labels) else float("nan")
    f1_yes = 2 * base / (1 + base) if len(labels) and base > 0 else 0.0  # precision = base rate, recall = 1
    return {
        "n": len(labels),
        "base_rate": base,
        "auroc": auroc(scores, labels),
        "balanced_accuracy": (rec + tnr) / 2 if (tp + fn) and (tn + fp) else float("nan"),
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "f1_always_success": f1_yes,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two binary raters beyond chance (1 = always agree, 0 = chance); NaN when chance agreement is
    total (both raters constant and equal), where kappa is undefined."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return float("nan")
    observed = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    chance = pa * pb + (1 - pa) * (1 - pb)
    return float("nan") if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def nanmean(values, axis=None):
    """Mean over the defined values; NaN (without a warning) where none is defined - a task whose episodes all
    share one outcome has no AUROC, and a step where no object moved has no object-region PSNR."""
    a = np.asarray(values, dtype=float)
    defined = (~np.isnan(a)).sum(axis=axis)
    total = np.where(np.isnan(a), 0.0, a).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)

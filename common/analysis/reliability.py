"""How far the hypotheses' spread tells their error: reliability curve, rank correlation, nearest-k% means.

A diffusion lifter draws H hypotheses per sample; where they agree, the mean is
usually right. Measures (metres inside, millimetres in summaries):
- ``joint_spread``: per joint, the hypotheses' mean distance from their mean
  pose: the model's own uncertainty, and the one definition of "spread" that
  analysis, figures and inference share.
- ``hypothesis_spread``: per sample, ``joint_spread`` averaged over the joints.
- ``reliability_curve``: keep the samples whose spread is below a threshold; for
  each share kept (the most certain 10 %, 20 %, ... 100 %), the MPJPE of the
  kept samples' mean hypotheses. A reliable spread gives a curve that rises
  with the share kept.
- ``rank_correlation``: Spearman's rank correlation between spread and the
  mean hypothesis's MPJPE over samples (1: the spread orders samples by error).
- ``nearest_mean``: per sample, the mean of the k % hypotheses nearest the mean
  pose (outliers dropped), scored like the mean hypothesis.
"""
import math

import numpy as np
import torch

from common.analysis.metrics import MetricAccumulator, mean_hypothesis, mpjpe, p_mpjpe

SHARES = tuple(i / 10 for i in range(1, 11))
NEAREST_PERCENT = (10, 25, 50, 75, 100)


def joint_spread(hypotheses):
    """Per joint, the mean distance of the hypotheses from their mean pose: (B, H, J, 3) -> (B, J), same unit."""
    assert hypotheses.dim() == 4 and hypotheses.shape[-1] == 3, (
        f"expected hypotheses (B, H, J, 3), got {tuple(hypotheses.shape)}")
    return (hypotheses - mean_hypothesis(hypotheses)[:, None]).norm(dim=-1).mean(dim=1)


def hypothesis_spread(hypotheses):
    """Mean distance of the hypotheses from their mean pose over joints: (B, H, J, 3) -> (B,), same unit."""
    return joint_spread(hypotheses).mean(dim=1)


def reliability_curve(spread, errors, shares=SHARES):
    """Error of the most certain samples against the share kept.

    Args:
        spread, errors: (N,) per-sample spread and error (any units, e.g. metres).
        shares: fractions of samples kept, in (0, 1].
    Returns:
        list of dicts {"share", "kept", "threshold" (largest spread kept), "error" (mean over kept)}.
    """
    spread, errors = np.asarray(spread, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    assert spread.shape == errors.shape and spread.ndim == 1, (
        f"expected spread (N,) and errors (N,), got {spread.shape} and {errors.shape}")
    if spread.size == 0:
        raise ValueError("no samples: a reliability curve needs at least one")
    order = np.argsort(spread, kind="stable")
    points = []
    for share in shares:
        kept = max(1, int(math.ceil(share * len(order) - 1e-9)))
        chosen = order[:kept]
        points.append({"share": float(share), "kept": kept, "threshold": float(spread[chosen[-1]]),
                       "error": float(errors[chosen].mean())})
    return points


def _ranks(values):
    """Ranks 0..N-1 with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def rank_correlation(x, y):
    """Spearman's rank correlation of two (N,) arrays (NaN when either is constant or N < 2)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    assert x.shape == y.shape and x.ndim == 1, f"expected two (N,) arrays, got {x.shape} and {y.shape}"
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x) - (len(x) - 1) / 2, _ranks(y) - (len(y) - 1) / 2
    denominator = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def nearest_mean(hypotheses, percent):
    """Mean of the ``percent`` % hypotheses nearest the mean pose (at least one): (B, H, J, 3) -> (B, J, 3).

    Nearness is the hypothesis's mean joint distance from the mean pose.
    """
    assert 0 < percent <= 100, f"percent must be in (0, 100], got {percent}"
    H = hypotheses.shape[1]
    keep = max(1, int(math.ceil(percent / 100 * H - 1e-9)))
    distance = (hypotheses - mean_hypothesis(hypotheses)[:, None]).norm(dim=-1).mean(dim=-1)  # (B, H)
    nearest = distance.argsort(dim=1, stable=True)[:, :keep]  # (B, keep)
    chosen = hypotheses.gather(1, nearest[:, :, None, None].expand(-1, -1, *hypotheses.shape[2:]))
    return chosen.mean(dim=1)


def reliability_summary(spread, errors, shares=SHARES):
    """The dict ``metrics.json`` holds: curve points and rank correlation, in millimetres.

    spread, errors: (N,) metres (errors: per-sample MPJPE of the mean hypothesis).
    """
    curve = reliability_curve(np.asarray(spread) * 1000, np.asarray(errors) * 1000, shares)
    return {
        "spread": "mean distance of the hypotheses from their mean pose, mm",
        "error": "MPJPE of the mean hypothesis of the kept samples (those with the lowest spread), mm",
        "mean_spread_mm": float(np.mean(spread) * 1000),
        "rank_correlation_spread_error": rank_correlation(spread, errors),
        "curve": [{"share_kept": p["share"], "samples_kept": p["kept"], "spread_threshold_mm": p["threshold"],
                   "mpjpe_mm": p["error"]} for p in curve],
    }


class ReliabilityAccumulator(MetricAccumulator):
    """A ``MetricAccumulator`` that also keeps each sample's hypothesis spread.

    Its ``summary()`` gains ``"reliability"`` (:func:`reliability_summary`); per-sample
    arrays, merging across processes and everything else are the parent's.
    """

    SPREAD = "hypothesis_spread"

    def _names(self):
        return super()._names() + [self.SPREAD]

    def update(self, hypotheses, target, actions=None, subjects=None):
        super().update(hypotheses, target, actions, subjects)
        spread = hypothesis_spread(hypotheses.detach().double())
        self._chunks.setdefault(self.SPREAD, []).append(spread.cpu().numpy())

    def summary(self):
        out = super().summary()
        # The parent averages every per-sample array as if it were an error; the spread is reported below instead.
        out.pop(self.SPREAD, None)
        out.pop(f"{self.SPREAD}_action_average", None)
        out.get("per_action", {}).pop(self.SPREAD, None)
        arrays = self.arrays()
        out["reliability"] = reliability_summary(arrays[self.SPREAD], arrays["mpjpe_mean_hypothesis"])
        return out


def nearest_table(hypotheses, target, percents=NEAREST_PERCENT):
    """Rows (percent, MPJPE mm, P-MPJPE mm) of the nearest-k% means against ``target`` (B, J, 3)."""
    hypotheses, target = torch.as_tensor(hypotheses).double(), torch.as_tensor(target).double()
    rows = []
    for percent in percents:
        pose = nearest_mean(hypotheses, percent)
        rows.append((percent, 1000 * float(mpjpe(pose, target)), 1000 * float(p_mpjpe(pose, target))))
    return rows

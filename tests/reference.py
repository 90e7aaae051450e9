"""Expected values written independently of the code under test.

The mirror table is spelled out joint by joint instead of being derived from
``common.core.skeleton``, and the metrics are re-derived in NumPy from their
definitions (docs/formats.md, Metrics), so that a broken flip table or a broken metric in
``common`` cannot also produce the value it is compared with.
"""
import numpy as np
import torch

# Joint j of a mirrored pose is joint MIRROR[j] of the original with x negated
# (Human3.6M order: pelvis, R hip/knee/ankle, L hip/knee/ankle, spine, thorax,
# neck, head, L shoulder/elbow/wrist, R shoulder/elbow/wrist).
MIRROR = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)

# The official 14 MPI-INF-3DHP joints: all but pelvis (0), spine (7) and head (10).
MPI_14 = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 16)


def mirror_points(points, width=None):
    """Mirror (..., 17, D) points: x -> -x (or ``width - 1 - x`` in crop pixels), left and right swapped."""
    points = np.asarray(points, dtype=np.float64)[..., list(MIRROR), :].copy()
    points[..., 0] = -points[..., 0] if width is None else width - 1 - points[..., 0]
    return points


def _joint_errors(predicted, target):
    return np.linalg.norm(predicted - target, axis=-1)


def _procrustes(predicted, target):
    """Similarity-align one pose (J, 3) to its target: rotation without reflection, scale, translation."""
    mu_p, mu_t = predicted.mean(0), target.mean(0)
    p, t = predicted - mu_p, target - mu_t
    # Rotation R maximising trace(R^T t^T p) (Kabsch), with det(R) = +1.
    u, s, vt = np.linalg.svd(t.T @ p)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rotation = u @ fix @ vt  # maps centred p onto centred t: p @ rotation.T ~ t
    scale = np.sum(s * np.diag(fix)) / np.sum(p ** 2)
    return scale * p @ rotation.T + mu_t


def _scale_only(predicted, target):
    return predicted * np.sum(predicted * target) / np.sum(predicted * predicted)


_ALIGN = {"mpjpe": lambda p, t: p, "p_mpjpe": _procrustes, "n_mpjpe": _scale_only}


def _aligned_joint_errors(poses, target, protocol):
    """poses (N, J, 3) each aligned to target (J, 3) under ``protocol`` -> (N, J) errors."""
    return np.stack([_joint_errors(_ALIGN[protocol](p, target), target) for p in poses])


def hypothesis_metrics(hypotheses, ground_truth):
    """Every ``{protocol}_{aggregation}_hypothesis`` of docs/formats.md (Metrics) in millimetres, from (N, H, J, 3) and (N, J, 3) metres."""
    hypotheses = np.asarray(hypotheses, dtype=np.float64)
    ground_truth = np.asarray(ground_truth, dtype=np.float64)
    out = {}
    for protocol in _ALIGN:
        per_sample = {"mean": [], "median": [], "best_pose": [], "best_joint": []}
        for hyps, target in zip(hypotheses, ground_truth):
            # Lower median for an even count, as the original's torch.median.
            median = np.sort(hyps, axis=0)[(len(hyps) - 1) // 2]
            per_sample["mean"].append(_aligned_joint_errors(hyps.mean(0)[None], target, protocol)[0].mean())
            per_sample["median"].append(_aligned_joint_errors(median[None], target, protocol)[0].mean())
            each = _aligned_joint_errors(hyps, target, protocol)  # (H, J)
            per_sample["best_pose"].append(each.mean(1).min())
            per_sample["best_joint"].append(each.min(0).mean())
        for aggregation, values in per_sample.items():
            out[f"{protocol}_{aggregation}_hypothesis"] = 1000 * float(np.mean(values))
    return out


def pck_percent(predicted, target, threshold_mm, joints):
    """Percentage of the chosen joints of (N, J, 3) poses in metres with error strictly below the threshold."""
    errors = 1000 * _joint_errors(np.asarray(predicted, np.float64), np.asarray(target, np.float64))
    return 100 * float(np.mean(errors[:, list(joints)] < threshold_mm))


def auc_percent(predicted, target, joints):
    """Mean PCK (percent) over thresholds 0, 5, ..., 150 mm."""
    return float(np.mean([pck_percent(predicted, target, t, joints) for t in range(0, 151, 5)]))


# Per-joint errors (mm) of KNOWN_ERROR_PREDICTOR's poses, far from every PCK/AUC threshold
# (multiples of 5 mm): of the official 14 joints, 7 are at 102 mm (correct at 150 mm and
# at the 10 thresholds 105-150 mm) and 7 at 200 mm (never correct); pelvis 0, spine and head 102.
KNOWN_ERRORS_MM = (0, 102, 102, 102, 102, 102, 102, 102, 102, 200, 102, 200, 200, 200, 200, 200, 200)
KNOWN_PCK14 = 100 * 7 / 14
KNOWN_AUC14 = 100 * (7 / 14) * (10 / 31)
KNOWN_PCK17 = 100 * 10 / 17


def known_error_predictor(pipeline, batch):
    """Stand-in for ``SnapPosePipeline.__call__``: every hypothesis is the ground truth moved
    along x by KNOWN_ERRORS_MM, so each joint's error is known in advance."""
    target = batch["keypoints_3d"][:, 0]  # (B, 17, 3) metres
    offset = torch.zeros(17, 3, dtype=target.dtype)
    offset[:, 0] = torch.tensor(KNOWN_ERRORS_MM, dtype=target.dtype) / 1000
    return (target + offset)[:, None].repeat(1, pipeline.sampling.hypotheses, 1, 1)  # (B, H, 17, 3)

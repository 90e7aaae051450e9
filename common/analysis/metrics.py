"""3D pose metrics (``docs/formats.md``, Metrics): pure tensor functions on metres.

Every function takes torch tensors in metres and asserts their shapes first.
Joint axis order is ``common.core.skeleton`` (17 joints). Printed numbers are in
millimetres (and percent for PCK/AUC); only :class:`MetricAccumulator`
converts.

Protocols, named as in the literature:
- ``mpjpe`` (protocol 1): mean Euclidean joint error.
- ``p_mpjpe`` (protocol 2): after a similarity Procrustes alignment of each
  pose to its target (rotation without reflection, uniform scale, translation).
- ``n_mpjpe``: after a scale-only alignment (least-squares scale about the
  camera origin, as VideoPose3D).

Aggregations of H hypotheses (B, H, J, 3) against one target (B, J, 3):
- ``mean``: the average pose ("P-Agg").
- ``median``: the coordinate-wise median pose; for an even H this is the lower
  of the two middle values (``torch.median``), as the original code.
- ``best_pose``: per sample, the hypothesis with the lowest mean-over-joints
  error under the protocol ("P-Best", an oracle).
- ``best_joint``: per sample and joint, the lowest error over hypotheses
  ("J-Best", an oracle); under ``p_mpjpe`` each hypothesis is aligned first.

Human3.6M tables give a frame-wise average (every frame weighs the same) and a
per-action average (the mean over actions of each action's frame average, so
every action weighs the same whatever its frame count).
"""
import numpy as np
import torch

from common.core.skeleton import DATASETS, H36M_ACTIONS, MPI_EVAL_JOINTS, NUM_JOINTS

PROTOCOLS = ("mpjpe", "p_mpjpe", "n_mpjpe")
AGGREGATIONS = ("mean", "median", "best_pose", "best_joint")
PCK_THRESHOLD = 0.150  # metres
AUC_THRESHOLDS = tuple(t / 1000 for t in range(0, 151, 5))  # 0:5:150 mm, in metres
ALL_JOINTS = tuple(range(NUM_JOINTS))

# How tables and figures name the protocols and aggregations.
PROTOCOL_LABELS = {"mpjpe": "MPJPE", "p_mpjpe": "P-MPJPE", "n_mpjpe": "N-MPJPE"}
AGGREGATION_LABELS = {
    "mean": "mean (P-Agg)", "median": "median", "best_pose": "best pose (P-Best)",
    "best_joint": "best joint (J-Best)",
}


def _assert_poses(predicted, target):
    assert predicted.shape == target.shape, (
        f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must have the same shape")
    assert predicted.dim() >= 2 and predicted.shape[-1] == 3, (
        f"expected poses (..., J, 3), got {tuple(predicted.shape)}")


def _assert_hypotheses(hypotheses, target):
    assert hypotheses.dim() == 4 and target.dim() == 3, (
        f"expected hypotheses (B, H, J, 3) and target (B, J, 3), "
        f"got {tuple(hypotheses.shape)} and {tuple(target.shape)}")
    assert hypotheses.shape[0] == target.shape[0] and hypotheses.shape[2:] == target.shape[1:], (
        f"hypotheses {tuple(hypotheses.shape)} do not match target {tuple(target.shape)}")
    assert target.shape[-1] == 3, f"expected 3D joints, got {tuple(target.shape)}"


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


# ---------------------------------------------------------------- alignment

def procrustes_align(predicted, target):
    """Similarity-align each predicted pose to its target (rotation, uniform scale, translation).

    Args:
        predicted, target: (..., J, 3) poses.
    Returns:
        (..., J, 3) the aligned predicted poses, same dtype. The rotation is a
        proper one (no reflection); computed in float64.
    """
    _assert_poses(predicted, target)
    x = target.double()
    y = predicted.double()
    mu_x = x.mean(dim=-2, keepdim=True)
    mu_y = y.mean(dim=-2, keepdim=True)
    x0 = x - mu_x
    y0 = y - mu_y
    norm_x = x0.square().sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    norm_y = y0.square().sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    x0 = x0 / norm_x
    y0 = y0 / norm_y
    # Orthogonal Procrustes: maximise trace(R^T X0^T Y0) over rotations R.
    u, s, vh = torch.linalg.svd(x0.transpose(-1, -2) @ y0)  # (..., 3, 3), (..., 3), (..., 3, 3)
    v = vh.transpose(-1, -2)
    # Flip the last singular direction where the optimum would be a reflection.
    sign = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    v = torch.cat([v[..., :2], v[..., 2:] * sign[..., None, None]], dim=-1)
    s = torch.cat([s[..., :2], s[..., 2:] * sign[..., None]], dim=-1)
    rotation = v @ u.transpose(-1, -2)  # (..., 3, 3), applied as y @ rotation
    scale = s.sum(dim=-1)[..., None, None] * norm_x / norm_y
    aligned = scale * (y - mu_y) @ rotation + mu_x
    return aligned.to(predicted.dtype)


def scale_align(predicted, target):
    """Scale each predicted pose (..., J, 3) by the least-squares factor onto its target."""
    _assert_poses(predicted, target)
    numerator = (predicted * target).sum(dim=(-2, -1), keepdim=True)
    denominator = predicted.square().sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return predicted * (numerator / denominator)


# ---------------------------------------------------------------- one pose per sample

def joint_errors(predicted, target):
    """Euclidean error of each joint: (..., J, 3), (..., J, 3) -> (..., J), metres."""
    _assert_poses(predicted, target)
    return (predicted - target).norm(dim=-1)


def _aligned(predicted, target, protocol):
    _check_choice("protocol", protocol, PROTOCOLS)
    if protocol == "p_mpjpe":
        return procrustes_align(predicted, target)
    if protocol == "n_mpjpe":
        return scale_align(predicted, target)
    return predicted


def protocol_joint_errors(predicted, target, protocol="mpjpe"):
    """Per-joint error (..., J) in metres after the protocol's alignment (one of PROTOCOLS)."""
    return joint_errors(_aligned(predicted, target, protocol), target)


def p_mpjpe_per_sample(predicted, target):
    """P-MPJPE (protocol 2, Procrustes-aligned) of each pose: (..., J, 3) -> (...), metres."""
    return protocol_joint_errors(predicted, target, "p_mpjpe").mean(dim=-1)


def n_mpjpe_per_sample(predicted, target):
    """N-MPJPE (scale-aligned) of each pose: (..., J, 3) -> (...), metres."""
    return protocol_joint_errors(predicted, target, "n_mpjpe").mean(dim=-1)


def mpjpe(predicted, target):
    """MPJPE (protocol 1) over all poses and joints: (..., J, 3) -> scalar, metres."""
    return joint_errors(predicted, target).mean()


def p_mpjpe(predicted, target):
    """P-MPJPE (protocol 2) over all poses and joints: (..., J, 3) -> scalar, metres."""
    return p_mpjpe_per_sample(predicted, target).mean()


def n_mpjpe(predicted, target):
    """N-MPJPE over all poses and joints: (..., J, 3) -> scalar, metres."""
    return n_mpjpe_per_sample(predicted, target).mean()


# ---------------------------------------------------------------- hypotheses

def mean_hypothesis(hypotheses):
    """Average pose of H hypotheses: (B, H, J, 3) -> (B, J, 3)."""
    assert hypotheses.dim() == 4 and hypotheses.shape[-1] == 3, (
        f"expected hypotheses (B, H, J, 3), got {tuple(hypotheses.shape)}")
    return hypotheses.mean(dim=1)


def median_hypothesis(hypotheses):
    """Coordinate-wise median pose (lower median for even H): (B, H, J, 3) -> (B, J, 3)."""
    assert hypotheses.dim() == 4 and hypotheses.shape[-1] == 3, (
        f"expected hypotheses (B, H, J, 3), got {tuple(hypotheses.shape)}")
    return hypotheses.median(dim=1).values


def hypothesis_joint_errors(hypotheses, target, protocol="mpjpe", aggregation="mean"):
    """Per-joint errors of the aggregated hypotheses, in metres.

    Args:
        hypotheses: (B, H, J, 3) poses; target: (B, J, 3).
        protocol: one of PROTOCOLS; aggregation: one of AGGREGATIONS (module docstring).
    Returns:
        (B, J): for ``mean``/``median`` the errors of that pose; for
        ``best_pose`` those of the hypothesis with the lowest mean error; for
        ``best_joint`` the lowest error of each joint over the hypotheses.
    """
    _assert_hypotheses(hypotheses, target)
    _check_choice("protocol", protocol, PROTOCOLS)
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    if aggregation == "mean":
        return protocol_joint_errors(mean_hypothesis(hypotheses), target, protocol)
    if aggregation == "median":
        return protocol_joint_errors(median_hypothesis(hypotheses), target, protocol)
    per_hypothesis = protocol_joint_errors(
        hypotheses, target[:, None].expand_as(hypotheses), protocol)  # (B, H, J)
    if aggregation == "best_joint":
        return per_hypothesis.min(dim=1).values
    best = per_hypothesis.mean(dim=-1).argmin(dim=1)  # (B,)
    return per_hypothesis[torch.arange(len(best)), best]


def hypothesis_error_per_sample(hypotheses, target, protocol="mpjpe", aggregation="mean"):
    """Mean-over-joints error of each sample's aggregated hypotheses: -> (B,), metres."""
    return hypothesis_joint_errors(hypotheses, target, protocol, aggregation).mean(dim=-1)


def hypothesis_error(hypotheses, target, protocol="mpjpe", aggregation="mean"):
    """Error of the aggregated hypotheses averaged over samples and joints: -> scalar, metres.

    For example ``hypothesis_error(h, t, "p_mpjpe", "mean")`` is the P-MPJPE of the
    mean hypothesis.
    """
    return hypothesis_error_per_sample(hypotheses, target, protocol, aggregation).mean()


# ---------------------------------------------------------------- MPI-INF-3DHP

def _pck_fractions(errors, thresholds, joints):
    assert errors.dim() >= 1 and errors.shape[-1] == NUM_JOINTS, (
        f"expected per-joint errors (..., {NUM_JOINTS}), got {tuple(errors.shape)}")
    selected = errors[..., list(joints)]  # (..., len(joints))
    limits = torch.as_tensor(thresholds, dtype=errors.dtype, device=errors.device)
    # Strictly below, as the original's compute_metrics.py (torch.lt) and MMPose:
    # at 0 mm nothing counts, not even the root joint whose error is exactly 0.
    return (selected[..., None] < limits).to(errors.dtype).mean(dim=-2)  # (..., T)


def pck_per_sample(errors, threshold=PCK_THRESHOLD, joints=MPI_EVAL_JOINTS):
    """Fraction (0-1) of the chosen joints with an error below ``threshold`` metres: (..., 17) -> (...).

    Args:
        errors: per-joint errors in metres, e.g. from :func:`joint_errors`.
        joints: joint indices scored; MPI_EVAL_JOINTS (the official 14) or ALL_JOINTS.
    """
    return _pck_fractions(errors, (threshold,), joints)[..., 0]


def auc_per_sample(errors, thresholds=AUC_THRESHOLDS, joints=MPI_EVAL_JOINTS):
    """Area under the PCK curve (0-1): mean PCK over ``thresholds`` (metres): (..., 17) -> (...)."""
    return _pck_fractions(errors, thresholds, joints).mean(dim=-1)


def pck(predicted, target, threshold=PCK_THRESHOLD, joints=MPI_EVAL_JOINTS):
    """PCK in percent over all poses (..., 17, 3) at ``threshold`` metres -> scalar."""
    return 100 * pck_per_sample(joint_errors(predicted, target), threshold, joints).mean()


def auc(predicted, target, thresholds=AUC_THRESHOLDS, joints=MPI_EVAL_JOINTS):
    """AUC in percent over all poses (..., 17, 3), PCK averaged over ``thresholds`` -> scalar."""
    return 100 * auc_per_sample(joint_errors(predicted, target), thresholds, joints).mean()


# ---------------------------------------------------------------- Human3.6M actions

def action_averages(errors, actions):
    """Frame-wise and per-action averages of per-sample errors.

    Args:
        errors: (N,) per-sample errors (any unit) as a tensor or array.
        actions: (N,) Human3.6M action numbers (2-16).
    Returns:
        ``(per_action, frame_average, action_average)``: a dict {action number:
        mean over its frames} for the actions present, the mean over all
        frames, and the mean over the present actions of their frame averages.
    """
    errors = np.asarray(errors, dtype=np.float64)
    actions = np.asarray(actions)
    assert errors.ndim == 1 and errors.shape == actions.shape, (
        f"expected errors (N,) and actions (N,), got {errors.shape} and {actions.shape}")
    unknown = sorted(set(actions.tolist()) - set(H36M_ACTIONS))
    if unknown:
        raise ValueError(f"Human3.6M action numbers must be in 2-16, found {unknown}")
    if errors.size == 0:
        raise ValueError("no samples to average: the evaluation saw no frames")
    per_action = {int(a): float(errors[actions == a].mean()) for a in sorted(set(actions.tolist()))}
    return per_action, float(errors.mean()), float(np.mean(list(per_action.values())))


# ---------------------------------------------------------------- accumulator

class MetricAccumulator:
    """Collects per-sample errors batch by batch and summarises them.

    Feed it with :meth:`update`; across processes gather :meth:`arrays` of each
    and combine with :meth:`merge` (per-sample arrays are concatenated, so the
    result equals one pass over all samples).

    Args:
        dataset: ``"h36m"`` (adds per-action averages) or ``"mpi"`` (adds PCK at
            150 mm and AUC over 0:5:150 mm, on the official 14 joints and on all 17).
        protocols, aggregations: subsets of PROTOCOLS and AGGREGATIONS to compute.
    """

    def __init__(self, dataset="h36m", protocols=PROTOCOLS, aggregations=AGGREGATIONS):
        _check_choice("dataset", dataset, DATASETS)
        for p in protocols:
            _check_choice("protocol", p, PROTOCOLS)
        for a in aggregations:
            _check_choice("aggregation", a, AGGREGATIONS)
        self.dataset = dataset
        self.protocols = tuple(protocols)
        self.aggregations = tuple(aggregations)
        self._chunks = {}

    def _names(self):
        names = [f"{p}_{a}_hypothesis" for p in self.protocols for a in self.aggregations]
        if self.dataset == "mpi":
            names += [f"{m}{n}_{a}_hypothesis" for m in ("pck", "auc") for n in (14, 17)
                      for a in self.aggregations]
        return names + ["action", "subject"]

    def update(self, hypotheses, target, actions=None, subjects=None):
        """Add a batch.

        Args:
            hypotheses: (B, H, J, 3) metres (root-relative, flip already averaged);
                a single prediction per sample is (B, 1, J, 3).
            target: (B, J, 3) metres.
            actions, subjects: length-B sequences of ints or None (unknown);
                per-action averages need the actions.
        """
        _assert_hypotheses(hypotheses, target)
        batch = target.shape[0]
        # float64 so that averaging identical float32 hypotheses reproduces them exactly.
        hypotheses = hypotheses.detach().double()
        target = target.detach().double()
        values = {}
        for a in self.aggregations:
            for p in self.protocols:
                values[f"{p}_{a}_hypothesis"] = hypothesis_error_per_sample(hypotheses, target, p, a)
            if self.dataset == "mpi":
                errors = hypothesis_joint_errors(hypotheses, target, "mpjpe", a)  # (B, J), unaligned
                for n, joints in ((14, MPI_EVAL_JOINTS), (17, ALL_JOINTS)):
                    values[f"pck{n}_{a}_hypothesis"] = pck_per_sample(errors, joints=joints)
                    values[f"auc{n}_{a}_hypothesis"] = auc_per_sample(errors, joints=joints)
        for name, labels in (("action", actions), ("subject", subjects)):
            labels = [None] * batch if labels is None else list(labels)
            if len(labels) != batch:
                raise ValueError(f"expected {batch} {name}s for a batch of {batch}, got {len(labels)}")
            values[name] = torch.tensor([-1 if v is None else int(v) for v in labels])
        for name, value in values.items():
            self._chunks.setdefault(name, []).append(value.cpu().numpy())

    def __len__(self):
        return sum(len(c) for c in self._chunks.get("action", []))

    def arrays(self):
        """Per-sample arrays {name: (N,)}: errors in metres, PCK/AUC as fractions, action and subject (-1 = unknown)."""
        return {name: np.concatenate(self._chunks[name]) if self._chunks.get(name)
                else np.zeros(0, dtype=np.int64 if name in ("action", "subject") else np.float64)
                for name in self._names()}

    def merge(self, arrays):
        """Append per-sample arrays from :meth:`arrays` of another accumulator (e.g. another process)."""
        if isinstance(arrays, MetricAccumulator):
            arrays = arrays.arrays()
        if set(arrays) != set(self._names()):
            raise ValueError(f"cannot merge: expected the arrays {sorted(self._names())}, got {sorted(arrays)}; "
                             "build both accumulators with the same dataset, protocols and aggregations")
        for name in self._names():
            self._chunks.setdefault(name, []).append(np.asarray(arrays[name]))
        return self

    def summary(self):
        """Summary dict: errors in millimetres, PCK and AUC in percent.

        Keys: ``num_samples``; ``{protocol}_{aggregation}_hypothesis`` (frame-wise
        average); for h36m, where every sample has an action, also
        ``..._action_average`` and ``per_action`` {key: {action name: mm}}; for mpi
        ``pck14_/auc14_/pck17_/auc17_{aggregation}_hypothesis``.
        """
        arrays = self.arrays()
        if len(arrays["action"]) == 0:
            raise ValueError("no samples were accumulated: nothing to summarise")
        out = {"num_samples": int(len(arrays["action"]))}
        has_actions = self.dataset == "h36m" and bool((arrays["action"] >= 0).all())
        per_action = {}
        for name, values in arrays.items():
            if name in ("action", "subject"):
                continue
            factor = 100.0 if name.startswith(("pck", "auc")) else 1000.0
            values = values.astype(np.float64) * factor
            out[name] = float(values.mean())
            if has_actions:
                by_action, _, action_average = action_averages(values, arrays["action"])
                out[f"{name}_action_average"] = action_average
                per_action[name] = {H36M_ACTIONS[a]: v for a, v in by_action.items()}
        if per_action:
            out["per_action"] = per_action
        return out

    def table(self):
        """Printable table of :meth:`summary` in millimetres (and percent)."""
        s = self.summary()
        lines = [f"{s['num_samples']} samples"]
        header = f"{'hypotheses':<22}" + "".join(f"{PROTOCOL_LABELS[p] + ' (mm)':>16}" for p in self.protocols)
        lines.append(header)
        for a in self.aggregations:
            lines.append(f"{AGGREGATION_LABELS[a]:<22}"
                         + "".join(f"{s[f'{p}_{a}_hypothesis']:>16.2f}" for p in self.protocols))
        if self.dataset == "mpi":
            lines.append("")
            lines.append(f"{'hypotheses':<22}{'PCK14 (%)':>12}{'AUC14 (%)':>12}{'PCK17 (%)':>12}{'AUC17 (%)':>12}")
            for a in self.aggregations:
                lines.append(f"{AGGREGATION_LABELS[a]:<22}" + "".join(
                    f"{s[f'{m}{n}_{a}_hypothesis']:>12.2f}" for n in (14, 17) for m in ("pck", "auc")))
            lines.append("PCK at 150 mm, AUC over 0:5:150 mm; 14 = official joints, 17 = all joints")
        if "per_action" in s:
            for p in self.protocols:
                lines.append("")
                lines.append(f"{PROTOCOL_LABELS[p] + ' (mm)':<16}"
                             + "".join(f"{AGGREGATION_LABELS[a]:>22}" for a in self.aggregations))
                keys = [f"{p}_{a}_hypothesis" for a in self.aggregations]
                for number in sorted(H36M_ACTIONS):
                    name = H36M_ACTIONS[number]
                    if name in s["per_action"][keys[0]]:
                        lines.append(f"{name:<16}" + "".join(f"{s['per_action'][k][name]:>22.2f}" for k in keys))
                lines.append(f"{'frame average':<16}" + "".join(f"{s[k]:>22.2f}" for k in keys))
                lines.append(f"{'action average':<16}"
                             + "".join(f"{s[k + '_action_average']:>22.2f}" for k in keys))
        return "\n".join(lines)

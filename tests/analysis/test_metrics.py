import math

import numpy as np
import pytest
import torch

from common.analysis import metrics
from common.core.skeleton import H36M_ACTIONS, MPI_EVAL_JOINTS


def random_poses(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 17, 3, generator=g, dtype=torch.float64) * 0.3


def rotation(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    k = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def test_parity_with_original(parity_dir):
    data = torch.load(parity_dir / "metrics_out.pt")
    hypotheses = data["pred"][:, 0, :, 0]  # (6, 5, 17, 3): samples, hypotheses, joints, xyz
    target = data["gt"][:, 0]  # (6, 17, 3)
    expected = data["values"]
    for aggregation in metrics.AGGREGATIONS:
        got = metrics.hypothesis_error(hypotheses, target, "mpjpe", aggregation).item()
        assert got == pytest.approx(expected[f"mpjpe_{aggregation}_hypothesis"], rel=1e-5)
    got = metrics.hypothesis_error(hypotheses, target, "p_mpjpe", "mean").item()
    assert got == pytest.approx(expected["p_mpjpe_mean_hypothesis"], rel=1e-5)


def test_known_mpjpe_and_pck():
    target = torch.zeros(2, 17, 3)
    predicted = torch.zeros(2, 17, 3)
    predicted[..., 0] = 0.03
    predicted[..., 1] = 0.04  # every joint 50 mm off
    assert metrics.mpjpe(predicted, target).item() == pytest.approx(0.05, abs=1e-7)
    predicted *= 1.04  # 52 mm: clear of the 5 mm grid of AUC thresholds
    predicted[:, MPI_EVAL_JOINTS[:7]] *= 4  # 7 of the 14 official joints now 208 mm off
    assert metrics.pck(predicted, target).item() == pytest.approx(50.0, abs=1e-4)
    # 208 mm is beyond every AUC threshold; 52 mm is below 20 of the 31 (55, 60, ..., 150).
    assert metrics.auc(predicted, target).item() == pytest.approx(100 * 0.5 * 20 / 31, abs=1e-4)
    assert metrics.pck(predicted, target, joints=metrics.ALL_JOINTS).item() == pytest.approx(
        100 * 10 / 17, abs=1e-4)


def test_exact_predictions_are_perfect():
    target = random_poses(4).float()
    hypotheses = target[:, None].repeat(1, 3, 1, 1)
    for protocol in metrics.PROTOCOLS:
        for aggregation in metrics.AGGREGATIONS:
            assert metrics.hypothesis_error(hypotheses, target, protocol, aggregation).item() < 1e-6
    assert metrics.pck(target, target).item() == 100.0
    # At the 0 mm threshold nothing counts (error < 0 never holds): 30 of 31 thresholds.
    assert metrics.auc(target, target).item() == pytest.approx(100 * 30 / 31)
    accumulator = metrics.MetricAccumulator("mpi")
    accumulator.update(hypotheses, target)
    summary = accumulator.summary()
    for aggregation in metrics.AGGREGATIONS:
        assert summary[f"mpjpe_{aggregation}_hypothesis"] < 1e-3
        for key in ("pck14", "pck17"):
            assert summary[f"{key}_{aggregation}_hypothesis"] == pytest.approx(100.0)
        for key in ("auc14", "auc17"):
            assert summary[f"{key}_{aggregation}_hypothesis"] == pytest.approx(100 * 30 / 31)


def _errors(millimetres, dtype=torch.float64):
    """Per-joint errors (1, 17) in metres, each the same float as the threshold of that many mm."""
    return torch.tensor([[m / 1000 for m in millimetres]], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pck_and_auc_count_errors_strictly_below_the_threshold(dtype):
    # The original's compute_metrics.py (torch.lt), MMPose and docs/formats.md (Metrics): correct means error < t.
    on_pck = _errors([150] * 17, dtype)
    assert metrics.pck_per_sample(on_pck).item() == 0.0
    assert metrics.pck_per_sample(on_pck, joints=metrics.ALL_JOINTS).item() == 0.0
    # 150 mm is not below any threshold of 0:5:150.
    assert metrics.auc_per_sample(on_pck).item() == 0.0

    exact = _errors([0] * 17, dtype)
    assert metrics.pck_per_sample(exact).item() == 1.0
    assert metrics.auc_per_sample(exact).item() == pytest.approx(30 / 31)  # 0 < 0 is false

    on_grid = _errors([50] * 17, dtype)  # below 55, 60, ..., 150: 20 thresholds
    assert metrics.auc_per_sample(on_grid).item() == pytest.approx(20 / 31)

    # The root joint's error is exactly 0 in every prediction; the others are far off.
    root_only = _errors([0] + [400] * 16, dtype)
    assert metrics.pck_per_sample(root_only).item() == 0.0  # the root is not an official joint
    assert metrics.pck_per_sample(root_only, joints=metrics.ALL_JOINTS).item() == pytest.approx(1 / 17)
    assert metrics.auc_per_sample(root_only, joints=metrics.ALL_JOINTS).item() == pytest.approx(30 / 31 / 17)

    just_below = _errors([149.999] * 17, dtype)
    assert metrics.pck_per_sample(just_below).item() == 1.0


def test_p_mpjpe_ignores_rotation_scale_translation():
    target = random_poses(5, seed=1)
    r = rotation([0.3, -1.0, 0.5], 2.0)
    moved = 1.7 * target @ r.T + torch.tensor([0.4, -0.2, 3.0], dtype=torch.float64)
    assert metrics.mpjpe(moved, target).item() > 0.1
    assert metrics.p_mpjpe(moved, target).item() < 1e-9
    assert metrics.p_mpjpe(moved.float(), target.float()).item() < 1e-5
    aligned = metrics.procrustes_align(moved, target)
    assert torch.allclose(aligned, target, atol=1e-9)


def test_p_mpjpe_does_not_reflect():
    target = random_poses(5, seed=2)
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert metrics.p_mpjpe(mirrored, target).item() > 0.01


def test_p_mpjpe_never_exceeds_n_mpjpe_and_mpjpe():
    target = random_poses(8, seed=3)
    predicted = target + random_poses(8, seed=4) * 0.3
    p1 = metrics.joint_errors(predicted, target).mean(dim=-1)
    n = metrics.n_mpjpe_per_sample(predicted, target)
    p2 = metrics.p_mpjpe_per_sample(predicted, target)
    assert p1.shape == n.shape == p2.shape == (8,)
    # Each alignment minimises the squared error over a larger set of transforms;
    # the mean error tracks it closely on these poses, with a small margin.
    assert (p2 <= p1 + 1e-9).all()
    assert (n <= p1 * 1.05).all()


def test_n_mpjpe_ignores_scale():
    target = random_poses(3, seed=5)
    assert metrics.n_mpjpe(0.6 * target, target).item() < 1e-12
    assert metrics.mpjpe(0.6 * target, target).item() > 0.01


def test_hypothesis_ordering():
    target = random_poses(16, seed=6)
    hypotheses = target[:, None] + random_poses(16, 7, seed=7) * 0.5
    per_hypothesis = metrics.joint_errors(hypotheses, target[:, None].expand_as(hypotheses)).mean(dim=-1)  # (B, H)
    best_joint = metrics.hypothesis_error_per_sample(hypotheses, target, "mpjpe", "best_joint")
    best_pose = metrics.hypothesis_error_per_sample(hypotheses, target, "mpjpe", "best_pose")
    assert (best_joint <= best_pose + 1e-12).all()
    assert torch.allclose(best_pose, per_hypothesis.min(dim=1).values)
    assert (best_pose <= per_hypothesis.max(dim=1).values).all()
    for protocol in ("p_mpjpe", "n_mpjpe"):
        bj = metrics.hypothesis_error_per_sample(hypotheses, target, protocol, "best_joint")
        bp = metrics.hypothesis_error_per_sample(hypotheses, target, protocol, "best_pose")
        assert (bj <= bp + 1e-12).all()


def test_identical_hypotheses_reduce_to_mpjpe():
    target = random_poses(6, seed=8)
    predicted = target + random_poses(6, seed=9) * 0.2
    hypotheses = predicted[:, None].repeat(1, 4, 1, 1)
    expected = metrics.mpjpe(predicted, target).item()
    for aggregation in metrics.AGGREGATIONS:
        got = metrics.hypothesis_error(hypotheses, target, "mpjpe", aggregation).item()
        assert got == pytest.approx(expected, rel=1e-12)


def test_median_is_lower_middle_for_even_counts():
    hypotheses = torch.zeros(1, 4, 17, 3)
    hypotheses[0, :, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None]
    assert torch.all(metrics.median_hypothesis(hypotheses)[..., 0] == 1.0)


def _offset_batch(offsets):
    """Targets at 0 and single hypotheses displaced by ``offsets`` metres along x."""
    target = torch.zeros(len(offsets), 17, 3)
    hypotheses = torch.zeros(len(offsets), 1, 17, 3)
    hypotheses[..., 0] = torch.tensor(offsets)[:, None, None]
    return hypotheses, target


def test_per_action_average_weights_actions_equally():
    accumulator = metrics.MetricAccumulator("h36m", protocols=("mpjpe",))
    hypotheses, target = _offset_batch([0.010, 0.010, 0.010, 0.030])
    accumulator.update(hypotheses, target, actions=[2, 2, 2, 3], subjects=[9, 9, 11, 11])
    summary = accumulator.summary()
    key = "mpjpe_mean_hypothesis"
    assert summary[key] == pytest.approx(15.0, abs=1e-4)  # frame-wise: (3 * 10 + 30) / 4
    assert summary[key + "_action_average"] == pytest.approx(20.0, abs=1e-4)  # (10 + 30) / 2
    assert summary["per_action"][key] == pytest.approx(
        {H36M_ACTIONS[2]: 10.0, H36M_ACTIONS[3]: 30.0}, abs=1e-4)
    table = accumulator.table()
    assert "Directions" in table and "action average" in table


def test_action_averages_rejects_unknown_action():
    with pytest.raises(ValueError, match="2-16"):
        metrics.action_averages([1.0], [17])


def test_accumulator_merge_equals_single_pass():
    target = random_poses(10, seed=10).float()
    hypotheses = target[:, None] + random_poses(10, 3, seed=11).float() * 0.1
    actions = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    whole = metrics.MetricAccumulator("mpi")
    whole.update(hypotheses, target, actions=actions)
    first, second = metrics.MetricAccumulator("mpi"), metrics.MetricAccumulator("mpi")
    first.update(hypotheses[:4], target[:4], actions=actions[:4])
    second.update(hypotheses[4:], target[4:], actions=actions[4:])
    first.merge(second.arrays())
    assert len(first) == len(whole) == 10
    assert first.summary() == pytest.approx(whole.summary())
    assert "PCK14" in first.table()


def test_accumulator_errors():
    with pytest.raises(ValueError, match="dataset"):
        metrics.MetricAccumulator("coco")
    with pytest.raises(ValueError, match="nothing to summarise"):
        metrics.MetricAccumulator().summary()
    hypotheses, target = _offset_batch([0.01, 0.02])
    with pytest.raises(ValueError, match="expected 2 actions"):
        metrics.MetricAccumulator().update(hypotheses, target, actions=[2])
    with pytest.raises(ValueError, match="cannot merge"):
        metrics.MetricAccumulator("h36m").merge(metrics.MetricAccumulator("mpi").arrays())


def test_invalid_choices_and_shapes():
    target = random_poses(2)
    with pytest.raises(ValueError, match="protocol"):
        metrics.hypothesis_error(target[:, None], target, "pa_mpjpe")
    with pytest.raises(ValueError, match="aggregation"):
        metrics.hypothesis_error(target[:, None], target, "mpjpe", "max")
    with pytest.raises(AssertionError):
        metrics.mpjpe(target, target[:1])
    with pytest.raises(AssertionError):
        metrics.hypothesis_error(target, target)


def test_numpy_action_averages_match_manual():
    errors = np.array([1.0, 2.0, 3.0, 6.0])
    per_action, frame, action = metrics.action_averages(errors, [16, 16, 16, 4])
    assert per_action == {4: 6.0, 16: 2.0}
    assert frame == pytest.approx(3.0)
    assert action == pytest.approx(4.0)

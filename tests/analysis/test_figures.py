"""Figures: side colours of the 3D skeletons, the per-sample title, and the per-evaluation summary."""
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from common.analysis import figures as visualization
from common.analysis.metrics import AGGREGATIONS, MetricAccumulator, hypothesis_joint_errors
from common.core.skeleton import LEFT_JOINTS, PARENTS, RIGHT_JOINTS


def _pose(seed):
    pose = torch.randn(17, 3, generator=torch.Generator().manual_seed(seed)) * 0.2
    pose[0] = 0
    return pose


def test_skeleton_bones_are_coloured_by_side():
    ax = Figure().add_subplot(projection="3d")
    visualization.draw_pose_3d(ax, _pose(0).numpy(), 2.0)
    bones = [(j, p) for j, p in enumerate(PARENTS) if p >= 0]
    colours = {j: to_rgba(line.get_color()) for (j, _), line in zip(bones, ax.lines)}
    left, right = to_rgba(visualization.SIDE_COLOURS["left"]), to_rgba(visualization.SIDE_COLOURS["right"])
    assert left != right
    assert all(colours[j] == left for j in LEFT_JOINTS) and all(colours[j] == right for j in RIGHT_JOINTS)
    assert all(colours[j] not in (left, right) for j in colours if j not in LEFT_JOINTS + RIGHT_JOINTS)


def test_title_gives_the_mean_hypothesis_error_and_the_spread():
    truth = _pose(1)
    offset = torch.tensor([0.006, 0.0, 0.008])  # 10 mm from the truth at every joint
    apart = torch.tensor([0.0, 0.005, 0.0])  # each hypothesis 5 mm from their mean
    hypotheses = torch.stack([truth + offset + apart, truth + offset - apart] * 2)
    assert visualization.sample_title(hypotheses, truth) == \
        "MPJPE of the mean 10.0 mm, spread of the 4 hypotheses 5.0 mm"


def test_sample_figure_is_written(tmp_path):
    image = torch.zeros(3, 256, 192)
    keypoints = torch.rand(17, 2) * torch.tensor([191.0, 255.0])
    path = visualization.draw_sample(tmp_path / "a" / "s.png", image, keypoints,
                                     torch.stack([_pose(2), _pose(3)]), _pose(4), title="key")
    assert Image.open(path).size == (1300, 500)


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_summary_figure_of_an_evaluation(tmp_path, dataset):
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(6, 17, 3, generator=generator) * 0.2
    hypotheses = target[:, None] + 0.05 * torch.randn(6, 3, 17, 3, generator=generator)
    accumulator = MetricAccumulator(dataset)
    accumulator.update(hypotheses, target, actions=[2, 3, 4, 2, 3, 4] if dataset == "h36m" else None)
    errors = {a: hypothesis_joint_errors(hypotheses, target, "mpjpe", a).numpy() for a in AGGREGATIONS} \
        if dataset == "mpi" else None
    path = visualization.draw_summary(tmp_path / "summary.png", accumulator.summary(), dataset, errors)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (500, 1200, 3) and (pixels < 250).any()


"""PNG figures of an evaluation: per sample, the crop with its 2D joints and the 3D poses from the
front and the side; per evaluation, a summary (MPJPE per action, or MPI's PCK curve).

Drawn with matplotlib's object API on an Agg canvas, so no display and no
pyplot state are needed (safe in worker processes and on servers). Left joints
are blue and right joints red in every panel; hypotheses are drawn light.
"""
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from common.analysis.metrics import AGGREGATION_LABELS, AGGREGATIONS, AUC_THRESHOLDS, mpjpe, pck_per_sample
from common.analysis.reliability import hypothesis_spread
from common.core.skeleton import H36M_ACTIONS, LEFT_JOINTS, MPI_EVAL_JOINTS, PARENTS, RIGHT_JOINTS
from common.data.samples import IMAGE_MEAN, IMAGE_STD

# (name, elevation, azimuth in degrees, the plot axis that points at the viewer and so has no readable ticks).
VIEWPOINTS = (("front view", 10.0, -90.0, "y"), ("side view", 10.0, 0.0, "x"))
SIDE_COLOURS = {"left": "tab:blue", "right": "tab:red", "centre": "dimgray"}
HYPOTHESIS_COLOUR = "darkgray"
BONES = tuple((j, p) for j, p in enumerate(PARENTS) if p >= 0)  # (joint, parent) pairs


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def image_to_rgb(image):
    """Undo the reader's normalisation: (3, H, W) normalized -> (H, W, 3) RGB in [0, 1]."""
    image = _numpy(image).astype(np.float64).transpose(1, 2, 0)  # (H, W, 3)
    return np.clip(image * IMAGE_STD + IMAGE_MEAN, 0, 1)


def side_colour(joint):
    """The colour of the bone that ends at ``joint``: by the body side it belongs to."""
    side = "left" if joint in LEFT_JOINTS else "right" if joint in RIGHT_JOINTS else "centre"
    return SIDE_COLOURS[side]


def upright(pose):
    """(..., 3) camera coordinates -> the (x, z, -y) plot coordinates in which the person stands upright.

    Camera coordinates have y pointing down and z away from the camera.
    """
    return pose[..., 0], pose[..., 2], -pose[..., 1]


def draw_pose_2d(ax, keypoints, joint_size=8):
    """A 2D skeleton on image axes: (17, 2) pixels, bones coloured by side, joints yellow."""
    for j, p in BONES:
        ax.plot(keypoints[[j, p], 0], keypoints[[j, p], 1], color=side_colour(j), linewidth=2)
    ax.scatter(keypoints[:, 0], keypoints[:, 1], s=joint_size, color="yellow", zorder=3)


def draw_pose_3d(ax, pose, linewidth, color=None, alpha=1.0, linestyle="-"):
    """One (17, 3) skeleton on 3D axes; ``color`` None colours each bone by side."""
    for j, p in BONES:
        ax.plot(*upright(pose[[j, p]]), color=color or side_colour(j), linewidth=linewidth, alpha=alpha,
                linestyle=linestyle)


def frame_pose_axes(ax, viewpoint, radius, zoom=1.15):
    """Point 3D axes along one of ``VIEWPOINTS`` over a cube of half-side ``radius`` metres, labelled."""
    name, elevation, azimuth, towards_viewer = viewpoint
    ax.view_init(elev=elevation, azim=azimuth)
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_zlim(-radius, radius)
    ax.set_box_aspect((1, 1, 1), zoom=zoom)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(3))
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_zlabel("-y (m)")
    # Seen edge-on, that axis's ticks would print on top of each other.
    getattr(ax, f"set_{towards_viewer}ticklabels")([])
    getattr(ax, f"set_{towards_viewer}label")("")


def _legend_handles():
    return [Line2D([], [], color="black", linewidth=2.2, label="ground truth"),
            Line2D([], [], color="black", linewidth=1.8, linestyle="--", label="mean of hypotheses"),
            Line2D([], [], color=HYPOTHESIS_COLOUR, linewidth=1.0, label="hypotheses"),
            Line2D([], [], color=SIDE_COLOURS["left"], linewidth=3, label="left"),
            Line2D([], [], color=SIDE_COLOURS["right"], linewidth=3, label="right")]


def sample_title(hypotheses, ground_truth):
    """"MPJPE of the mean ... mm, spread of the H hypotheses ... mm" for (H, 17, 3) and (17, 3) metres.

    The spread is ``common.analysis.reliability.hypothesis_spread``.
    """
    hypotheses, ground_truth = torch.as_tensor(hypotheses), torch.as_tensor(ground_truth)
    error = 1000 * float(mpjpe(hypotheses.mean(dim=0), ground_truth))
    spread = 1000 * float(hypothesis_spread(hypotheses[None]))
    return f"MPJPE of the mean {error:.1f} mm, spread of the {len(hypotheses)} hypotheses {spread:.1f} mm"


def draw_sample(path, image, keypoints_crop, hypotheses, ground_truth, title=None):
    """Write a PNG: the crop with its 2D joints, and 3D hypotheses, their mean and the truth twice.

    Args:
        path: output .png file (parent folders are created).
        image: (3, 256, 192) normalized crop as the reader returns it.
        keypoints_crop: (17, 2) 2D joints in crop pixels.
        hypotheses: (H, 17, 3) root-relative predictions, metres.
        ground_truth: (17, 3) root-relative ground truth, metres.
        title: optional first line of the figure title (e.g. the sample key); the
            second gives the mean hypothesis's MPJPE and the hypotheses' spread.
    Returns:
        Path of the written file.
    """
    keypoints_crop = _numpy(keypoints_crop)
    hypotheses = _numpy(hypotheses)
    ground_truth = _numpy(ground_truth)
    assert keypoints_crop.shape == (17, 2), f"expected keypoints (17, 2), got {keypoints_crop.shape}"
    assert hypotheses.ndim == 3 and hypotheses.shape[1:] == (17, 3), (
        f"expected hypotheses (H, 17, 3), got {hypotheses.shape}")
    assert ground_truth.shape == (17, 3), f"expected ground truth (17, 3), got {ground_truth.shape}"
    mean = hypotheses.mean(axis=0)

    figure = Figure(figsize=(13, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 3, 1)
    ax.imshow(image_to_rgb(image))
    draw_pose_2d(ax, keypoints_crop)
    ax.set_title("crop and 2D joints")
    ax.axis("off")

    # Framed on the truth and the mean, so that a stray hypothesis does not shrink the person.
    radius = max(1.15 * float(np.abs(np.concatenate([mean, ground_truth])).max()), 0.1)
    for index, viewpoint in enumerate(VIEWPOINTS):
        ax = figure.add_subplot(1, 3, index + 2, projection="3d")
        for pose in hypotheses:
            draw_pose_3d(ax, pose, 0.7, color=HYPOTHESIS_COLOUR, alpha=0.6)
        draw_pose_3d(ax, ground_truth, 2.2)
        draw_pose_3d(ax, mean, 1.8, linestyle="--")
        frame_pose_axes(ax, viewpoint, radius)
        ax.set_title(viewpoint[0])
        if index == 0:
            ax.legend(handles=_legend_handles(), loc="upper left", fontsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=0.84, wspace=0.02)
    figure.suptitle("\n".join(filter(None, [title, sample_title(hypotheses, ground_truth)])))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def draw_summary(path, summary, dataset, joint_errors=None):
    """Write the PNG summary of one evaluation.

    Human3.6M: MPJPE per action (and over all frames) as bars, one per
    aggregation of the hypotheses (mean, median, P-Best, J-Best). MPI-INF-3DHP:
    PCK over the thresholds 0:5:150 mm on the official 14 joints, one curve per
    aggregation, when ``joint_errors`` is given; else bars of the overall MPJPE.

    Args:
        path: output .png file (parent folders are created).
        summary: ``MetricAccumulator.summary()`` (millimetres).
        dataset: "h36m" or "mpi".
        joint_errors: for mpi, {aggregation: (N, 17) per-joint errors in metres}.
    Returns:
        Path of the written file.
    """
    figure = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    if dataset == "mpi" and joint_errors:
        millimetres = [1000 * t for t in AUC_THRESHOLDS]
        for aggregation in AGGREGATIONS:
            errors = torch.as_tensor(joint_errors[aggregation])
            curve = [100 * float(pck_per_sample(errors, t, MPI_EVAL_JOINTS).mean()) for t in AUC_THRESHOLDS]
            ax.plot(millimetres, curve, marker=".", label=f"{AGGREGATION_LABELS[aggregation]}, "
                    f"AUC {summary[f'auc14_{aggregation}_hypothesis']:.1f} %")
        ax.set_xlabel("threshold (mm)")
        ax.set_ylabel("PCK, 14 joints (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"PCK over thresholds, {summary['num_samples']} samples")
    else:
        def per_action_of(key):
            return summary.get("per_action", {}).get(key, {})

        groups = [name for _, name in sorted(H36M_ACTIONS.items()) if name in per_action_of("mpjpe_mean_hypothesis")]
        width = 0.8 / len(AGGREGATIONS)
        for k, aggregation in enumerate(AGGREGATIONS):
            key = f"mpjpe_{aggregation}_hypothesis"
            values = [per_action_of(key)[name] for name in groups] + [summary[key]]
            positions = np.arange(len(values)) + (k - (len(AGGREGATIONS) - 1) / 2) * width
            ax.bar(positions, values, width, label=AGGREGATION_LABELS[aggregation])
        ax.set_xticks(np.arange(len(groups) + 1))
        ax.set_xticklabels(groups + ["all frames"], rotation=35, ha="right")
        ax.set_ylabel("MPJPE (mm)")
        ax.set_ylim(0, 1.2 * ax.get_ylim()[1])  # room for the legend above the bars
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"MPJPE per action, {summary['num_samples']} samples" if groups
                     else f"MPJPE, {summary['num_samples']} samples")
    ax.legend(fontsize=8, ncol=len(AGGREGATIONS) if dataset == "h36m" else 1,
              loc="upper left" if dataset == "h36m" else "lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

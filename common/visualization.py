"""PNG figures of evaluated samples: the crop with its 2D joints, and the 3D poses from two viewpoints.

Drawn with matplotlib's object API on an Agg canvas, so no display and no
pyplot state are needed (safe in worker processes and on servers).
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from common.skeleton import LEFT_JOINTS, PARENTS

# The normalisation the reader applies to images (RGB / 255, then per channel).
_IMAGE_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGE_STD = np.array([0.229, 0.224, 0.225])
# (elevation, azimuth) in degrees: a front view and a side view.
VIEWPOINTS = ((10.0, -90.0), (10.0, 0.0))


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def image_to_rgb(image):
    """Undo the reader's normalisation: (3, H, W) normalized -> (H, W, 3) RGB in [0, 1]."""
    image = _numpy(image).astype(np.float64).transpose(1, 2, 0)  # (H, W, 3)
    return np.clip(image * _IMAGE_STD + _IMAGE_MEAN, 0, 1)


def _bones():
    return [(j, p) for j, p in enumerate(PARENTS) if p >= 0]


def _draw_pose_3d(ax, pose, color, linewidth, alpha=1.0, label=None):
    # Camera coordinates have y pointing down and z away from the camera;
    # plot (x, z, -y) so that the person stands upright in matplotlib's frame.
    for k, (j, p) in enumerate(_bones()):
        ax.plot([pose[j, 0], pose[p, 0]], [pose[j, 2], pose[p, 2]], [-pose[j, 1], -pose[p, 1]],
                color=color, linewidth=linewidth, alpha=alpha, label=label if k == 0 else None)


def draw_sample(path, image, keypoints_crop, hypotheses, ground_truth, title=None):
    """Write a PNG: the crop with its 2D joints, and 3D hypotheses, their mean and the truth twice.

    Args:
        path: output .png file (parent folders are created).
        image: (3, 256, 192) normalized crop as the reader returns it.
        keypoints_crop: (17, 2) 2D joints in crop pixels.
        hypotheses: (H, 17, 3) root-relative predictions, metres.
        ground_truth: (17, 3) root-relative ground truth, metres.
        title: optional figure title (e.g. the sample key).
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
    for j, p in _bones():
        color = "tab:blue" if j in LEFT_JOINTS else "tab:red"
        ax.plot(keypoints_crop[[j, p], 0], keypoints_crop[[j, p], 1], color=color, linewidth=2)
    ax.scatter(keypoints_crop[:, 0], keypoints_crop[:, 1], s=8, color="yellow", zorder=3)
    ax.set_title("crop and 2D joints")
    ax.axis("off")

    # Framed on the truth and the mean, so that a stray hypothesis does not shrink the person.
    radius = max(1.15 * float(np.abs(np.concatenate([mean, ground_truth])).max()), 0.1)
    for index, (elevation, azimuth) in enumerate(VIEWPOINTS):
        ax = figure.add_subplot(1, 3, index + 2, projection="3d")
        for k, pose in enumerate(hypotheses):
            _draw_pose_3d(ax, pose, "gray", 0.8, alpha=0.35, label="hypotheses" if k == 0 else None)
        _draw_pose_3d(ax, ground_truth, "black", 2.0, label="ground truth")
        _draw_pose_3d(ax, mean, "tab:orange", 2.0, label="mean")
        ax.view_init(elev=elevation, azim=azimuth)
        ax.set_xlim(-radius, radius)
        ax.set_ylim(-radius, radius)
        ax.set_zlim(-radius, radius)
        ax.set_box_aspect((1, 1, 1), zoom=1.15)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_major_locator(MaxNLocator(3))
        ax.set_xlabel("x (m)")
        ax.set_ylabel("z (m)")
        ax.set_zlabel("-y (m)")
        ax.set_title(f"3D, azimuth {azimuth:.0f}°")
        if index == 0:
            ax.legend(loc="upper left", fontsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=0.86, wspace=0.02)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

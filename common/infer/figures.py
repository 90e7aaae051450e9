"""Pictures of lifted people: the image with its 2D skeleton beside the 3D hypotheses, and GIF animations.

Drawn with matplotlib's object API on an Agg canvas (no display needed). The
3D panels show every hypothesis as a thin grey skeleton and their mean as a
thick one whose joints are coloured by the hypotheses' spread at that joint
(millimetres, colour bar): the model's own measure of where it is unsure.
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from common.core.geometry import PIXEL_STD
from common.core.skeleton import LEFT_JOINTS, PARENTS, RIGHT_JOINTS

VIEWPOINTS = (("front", 12.0, -70.0), ("side", 12.0, 20.0))  # (name, elevation, azimuth)
SPREAD_COLORMAP = "plasma"
_BONES = [(j, p) for j, p in enumerate(PARENTS) if p >= 0]


def _side_colour(joint):
    return "tab:blue" if joint in LEFT_JOINTS else "tab:red" if joint in RIGHT_JOINTS else "tab:green"


def _upright(pose):
    # Camera axes have y down and z forward; plot (x, z, -y) so the person stands upright.
    return pose[..., 0], pose[..., 2], -pose[..., 1]


def render_lift(image, result, title=None, dpi=100):
    """A matplotlib Figure of one lifted person (image panel and two 3D views)."""
    figure = Figure(figsize=(12, 4.4), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 3, 1)
    ax.imshow(image)
    size = result.scale * PIXEL_STD
    ax.add_patch(Rectangle(result.center - size / 2, size[0], size[1], fill=False, color="white", linewidth=1,
                           linestyle="--"))
    keypoints = result.keypoints_2d
    for j, p in _BONES:
        ax.plot(keypoints[[j, p], 0], keypoints[[j, p], 1], color=_side_colour(j), linewidth=2)
    ax.scatter(keypoints[:, 0], keypoints[:, 1], s=10, color="yellow", zorder=3)
    # Zoomed on the box (already padded around the person), within the image.
    height, width = image.shape[:2]
    low, high = result.center - 0.55 * size, result.center + 0.55 * size
    ax.set_xlim(max(low[0], -0.5), min(high[0], width - 0.5))
    ax.set_ylim(min(high[1], height - 0.5), max(low[1], -0.5))
    ax.set_title(f"image, box and 2D keypoints ({result.keypoint_source})", fontsize=10)
    ax.axis("off")

    spread = result.spread_mm
    limit = max(1.1 * float(np.abs(result.mean).max()), 0.1)
    scatter = None
    for index, (view, elevation, azimuth) in enumerate(VIEWPOINTS):
        ax = figure.add_subplot(1, 3, index + 2, projection="3d")
        for pose in result.hypotheses:
            for j, p in _BONES:
                ax.plot(*_upright(pose[[j, p]]), color="gray", linewidth=0.6, alpha=0.3)
        for j, p in _BONES:
            ax.plot(*_upright(result.mean[[j, p]]), color=_side_colour(j), linewidth=2.2)
        scatter = ax.scatter(*_upright(result.mean), c=spread, cmap=SPREAD_COLORMAP, vmin=0,
                             vmax=max(float(spread.max()), 1.0), s=28, depthshade=False, zorder=5)
        ax.view_init(elev=elevation, azim=azimuth)
        for set_limits in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            set_limits(-limit, limit)
        ax.set_box_aspect((1, 1, 1), zoom=1.2)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        ax.set_title(f"3D {view}: mean (colours), {len(result.hypotheses)} hypotheses (grey)", fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.9, bottom=0.03, top=0.88, wspace=0.02)
    bar = figure.colorbar(scatter, cax=figure.add_axes([0.915, 0.18, 0.012, 0.6]))
    bar.set_label("spread of the hypotheses (mm)")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def draw_lift(path, image, result, title=None):
    """Write :func:`render_lift` as a PNG file; returns its Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_lift(image, result, title).savefig(path)
    return path


def figure_array(figure):
    """(H, W, 3) uint8 RGB pixels of a rendered Figure."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def write_gif(path, frames, fps=10):
    """Write (H, W, 3) uint8 frames as a looping animated GIF (Pillow); returns its Path."""
    if not frames:
        raise ValueError("no frames to animate")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return path


class FigureWriter:
    """Collects what ``common.infer.lifting`` draws while it runs: per-person PNGs and the animation's frames.

    Args:
        out: output folder; PNGs go to ``out/figures``, the GIF to ``out/<stem>.gif``.
        visualize: write one PNG per person. animate: one GIF frame per image (its first person).
    """

    def __init__(self, out, stem, visualize, animate):
        self.out, self.stem, self.visualize, self.animate = Path(out), stem, visualize, animate
        self.written, self.frames = [], []

    def add(self, image, result, first):
        if self.visualize:
            name = result.key.replace("#", "_person")
            self.written.append(draw_lift(self.out / "figures" / f"{name}.png", image, result, result.key))
        if self.animate and first:
            self.frames.append(figure_array(render_lift(image, result, result.key, dpi=60)))

    def finish(self):
        """Write the animation (if any); returns the files written."""
        if self.animate and self.frames:
            self.written.append(write_gif(self.out / f"{self.stem}.gif", self.frames))
        return self.written

"""Pictures of lifted people: the image with its 2D skeleton beside the 3D hypotheses, and animations (GIF, mp4).

Drawn with matplotlib's object API on an Agg canvas (no display needed), with
the skeleton plotter of ``common.analysis.figures`` (same side colours and
viewpoints as the evaluation's figures). The 3D panels show every hypothesis as
a thin grey skeleton and their mean as a thick one whose joints are coloured by
the hypotheses' spread at that joint (millimetres, colour bar): the model's own
measure of where it is unsure. Animations follow one track (``common.infer.motion``);
the mp4 is written through PyAV (``common.core.video``) where it is installed.
"""
import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from common.analysis.figures import VIEWPOINTS, draw_pose_2d, draw_pose_3d, frame_pose_axes, upright
from common.core.files import atomic_write
from common.core.geometry import PIXEL_STD
from common.core.video import write_mp4

log = logging.getLogger(__name__)

SPREAD_COLORMAP = "plasma"


def render_lift(image, result, title=None, dpi=100):
    """A matplotlib Figure of one lifted person (image panel and two 3D views).

    image: (H, W, 3) uint8 RGB; result: a ``common.infer.lifting.LiftResult``.
    """
    figure = Figure(figsize=(12, 4.4), dpi=dpi)
    FigureCanvasAgg(figure)
    _draw_image_panel(figure.add_subplot(1, 3, 1), image, result)
    spread = result.spread_mm
    limit = max(1.1 * float(np.abs(result.mean).max()), 0.1)
    scatter = None
    for index, viewpoint in enumerate(VIEWPOINTS):
        ax = figure.add_subplot(1, 3, index + 2, projection="3d")
        for pose in result.hypotheses:
            draw_pose_3d(ax, pose, 0.6, color="gray", alpha=0.3)
        draw_pose_3d(ax, result.mean, 2.2)
        scatter = ax.scatter(*upright(result.mean), c=spread, cmap=SPREAD_COLORMAP, vmin=0,
                             vmax=max(float(spread.max()), 1.0), s=28, depthshade=False, zorder=5)
        frame_pose_axes(ax, viewpoint, limit, zoom=1.2)
        ax.set_title(f"3D, {viewpoint[0]}", fontsize=10)
    # One caption for both 3D panels: a title per panel that says it all is wider than the panel.
    figure.text(0.62, 0.9, f"mean (joints coloured by spread) and {len(result.hypotheses)} hypotheses (grey)",
                ha="center", fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.9, bottom=0.03, top=0.86, wspace=0.02)
    bar = figure.colorbar(scatter, cax=figure.add_axes([0.915, 0.18, 0.012, 0.6]))
    bar.set_label("spread of the hypotheses (mm)")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def _draw_image_panel(ax, image, result):
    """The image zoomed on the person's box (dashed), with the 2D keypoints used."""
    ax.imshow(image)
    size = result.scale * PIXEL_STD
    ax.add_patch(Rectangle(result.center - size / 2, size[0], size[1], fill=False, color="white", linewidth=1,
                           linestyle="--"))
    draw_pose_2d(ax, result.keypoints_2d, joint_size=10)
    # Zoomed on the box (already padded around the person), within the image.
    height, width = image.shape[:2]
    low, high = result.center - 0.55 * size, result.center + 0.55 * size
    ax.set_xlim(max(low[0], -0.5), min(high[0], width - 0.5))
    ax.set_ylim(min(high[1], height - 0.5), max(low[1], -0.5))
    ax.set_title(f"image, box and 2D keypoints ({result.keypoint_source})", fontsize=10)
    ax.axis("off")


def draw_lift(path, image, result, title=None):
    """Write :func:`render_lift` as a PNG file; returns its Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:
        render_lift(image, result, title).savefig(stream, format="png")
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
    with atomic_write(path) as stream:
        images[0].save(stream, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000 / fps)), loop=0)
    return path


class FigureWriter:
    """Collects what ``common.infer.lifting`` draws while it runs: per-person PNGs and the animation's frames.

    Args:
        out: output folder; PNGs go to ``out/figures``, the GIF to ``out/<stem>.gif``.
        visualize: write one PNG per person. animate: one frame per image, of the followed
            track's person, into ``out/<stem>.gif`` and (with PyAV) ``out/<stem>.mp4``.
    """

    def __init__(self, out, stem, visualize, animate):
        self.out, self.stem, self.visualize, self.animate = Path(out), stem, visualize, animate
        self.written, self.frames = [], []

    def add(self, image, result, follow):
        if self.visualize:
            name = result.key.replace("#", "_person")
            self.written.append(draw_lift(self.out / "figures" / f"{name}.png", image, result, result.key))
        if self.animate and follow:
            self.frames.append(figure_array(render_lift(image, result, result.key, dpi=60)))

    def finish(self):
        """Write the animation (if any); returns the files written."""
        if self.animate and self.frames:
            self.written.append(write_gif(self.out / f"{self.stem}.gif", self.frames))
            try:
                self.written.append(write_mp4(self.out / f"{self.stem}.mp4", self.frames, fps=10))
            except ImportError as error:
                log.warning("no mp4 beside the GIF: %s", error)
        return self.written

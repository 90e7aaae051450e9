"""A small z-buffered rasterizer of shaded, tapered capsules (numpy only).

Each capsule is a segment between two 3D camera-space points with a radius at
each end. Pixels are shaded by a directional light on the capsule's surface
normal and by depth (nearer is brighter), and the nearest surface wins, so an
image shows which limb is in front. Pixel (row i, column j) has its centre at
(x, y) = (j, i), the convention of common.core.geometry.
"""
from dataclasses import dataclass

import numpy as np

# Light from the upper left, on the camera's side (camera axes: x right, y down, z forward).
_LIGHT = (np.array([-0.45, -0.6, -0.65]) / np.linalg.norm([-0.45, -0.6, -0.65])).astype(np.float32)
_AMBIENT = 0.35


@dataclass
class Capsules:
    """N capsules in canvas pixels.

    Attributes:
        p0, p1: (N, 2) end points in canvas pixels (x, y).
        z0, z1: (N,) end-point depths in metres (camera z, > 0).
        r0, r1: (N,) end radii in canvas pixels.
        colour: (N, 3) RGB in [0, 1].
    """

    p0: np.ndarray
    p1: np.ndarray
    z0: np.ndarray
    z1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    colour: np.ndarray


def new_depth_buffer(height, width):
    """A (height, width) float32 depth buffer with nothing drawn (+inf)."""
    return np.full((height, width), np.inf, dtype=np.float32)


def render_capsules(canvas, depth, capsules, focal, reference_depth=None, depth_shading=0.5):
    """Draw capsules into ``canvas`` in place, keeping the nearest surface per pixel.

    Args:
        canvas: (H, W, 3) float32 RGB in [0, 1], modified in place.
        depth: (H, W) float32 depth buffer in metres (see new_depth_buffer), modified in place.
        capsules: Capsules in this canvas's pixels.
        focal: canvas pixels per metre at 1 m depth (the camera focal length times
            any crop zoom); converts a pixel radius back to metres of depth.
        reference_depth: depth (m) at which depth shading is neutral; default the
            mean end-point depth.
        depth_shading: brightness change per metre nearer than the reference.
    """
    height, width = depth.shape
    if canvas.shape != (height, width, 3):
        raise ValueError(f"canvas must be (H, W, 3) = ({height}, {width}, 3) like the depth buffer, "
                         f"got {canvas.shape}")
    if reference_depth is None:
        reference_depth = float(np.mean(np.concatenate([capsules.z0, capsules.z1])))
    for i in range(len(capsules.r0)):
        p0, p1 = capsules.p0[i].astype(np.float64), capsules.p1[i].astype(np.float64)
        r0, r1 = float(capsules.r0[i]), float(capsules.r1[i])
        z0, z1 = float(capsules.z0[i]), float(capsules.z1[i])
        reach = max(r0, r1)
        x_lo = max(int(np.floor(min(p0[0], p1[0]) - reach)), 0)
        x_hi = min(int(np.ceil(max(p0[0], p1[0]) + reach)) + 1, width)
        y_lo = max(int(np.floor(min(p0[1], p1[1]) - reach)), 0)
        y_hi = min(int(np.ceil(max(p0[1], p1[1]) + reach)) + 1, height)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        xs = (np.arange(x_lo, x_hi) - p0[0]).astype(np.float32)[None, :]  # (1, w)
        ys = (np.arange(y_lo, y_hi) - p0[1]).astype(np.float32)[:, None]  # (h, 1)
        d = (p1 - p0).astype(np.float32)
        length2 = float(d @ d)
        # Position of the closest point along the segment, 0 at p0 and 1 at p1.
        t = np.clip((xs * d[0] + ys * d[1]) * np.float32(1 / length2), 0, 1) if length2 > 1e-12 \
            else np.zeros((y_hi - y_lo, x_hi - x_lo), dtype=np.float32)
        off_x = xs - t * d[0]
        off_y = ys - t * d[1]
        dist2 = off_x ** 2 + off_y ** 2
        radius = np.float32(r0) + t * np.float32(r1 - r0)
        inside = dist2 < radius ** 2
        if not inside.any():
            continue
        radius = np.maximum(radius, np.float32(1e-6))
        bulge = np.sqrt(np.maximum(radius ** 2 - dist2, np.float32(0)))  # pixels towards the camera
        axis_z = np.float32(z0) + t * np.float32(z1 - z0)
        surface_z = axis_z - bulge * axis_z * np.float32(1 / focal)
        window = depth[y_lo:y_hi, x_lo:x_hi]
        visible = inside & (surface_z < window)
        if not visible.any():
            continue
        # Shade only the visible pixels: (n,) arrays from here on.
        off_x, off_y, bulge, radius, surface_z = (a[visible] for a in np.broadcast_arrays(
            off_x, off_y, bulge, radius, surface_z))
        normal_dot = (off_x * _LIGHT[0] + off_y * _LIGHT[1] - bulge * _LIGHT[2]) / radius
        brightness = _AMBIENT + (1 - _AMBIENT) * np.clip(normal_dot, 0.0, 1.0)
        brightness = brightness * np.clip(1.0 + depth_shading * (reference_depth - surface_z), 0.5, 1.5)
        window[visible] = surface_z
        canvas[y_lo:y_hi, x_lo:x_hi][visible] = np.clip(brightness[:, None] * capsules.colour[i], 0.0, 1.0)

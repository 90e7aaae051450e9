"""Camera-plane geometry: normalized screen coordinates and the person crop.

Conventions (``docs/formats.md``, Coordinate frames and Crop):
- Normalized screen coordinates (VideoPose3D): u / w * 2 - 1, v / w * 2 - h / w,
  so x flips as x -> -x.
- The crop is a similarity transform (no rotation) that maps the box centre to
  the crop centre ((W - 1) / 2, (H - 1) / 2) and scales by (W - 1) / (scale[0] * 200 - 1),
  so that the box width ``scale[0] * 200`` spans the crop width.
"""
import numpy as np

CROP_WIDTH = 192
CROP_HEIGHT = 256
PIXEL_STD = 200.0  # HRNet's convention: scale = box size / 200


def normalize_screen_coordinates(points, width, height):
    """Pixels (..., 2) -> normalized screen coordinates (..., 2); x in [-1, 1]."""
    points = np.asarray(points)
    assert points.shape[-1] == 2, f"expected (..., 2) points, got {points.shape}"
    return points / width * 2 - np.array([1.0, height / width], dtype=points.dtype)


def image_coordinates(points, width, height):
    """Normalized screen coordinates (..., 2) -> pixels (..., 2); inverse of the above."""
    points = np.asarray(points)
    assert points.shape[-1] == 2, f"expected (..., 2) points, got {points.shape}"
    return (points + np.array([1.0, height / width], dtype=points.dtype)) * width / 2


def crop_matrix(center, scale, out_width=CROP_WIDTH, out_height=CROP_HEIGHT):
    """2x3 affine matrix taking full-frame pixels to crop pixels.

    Args:
        center: (2,) box centre in frame pixels.
        scale: (2,) box size / 200; only ``scale[0]`` (the width) sets the zoom.
    """
    center = np.asarray(center, dtype=np.float64).reshape(2)
    box_width = float(np.asarray(scale, dtype=np.float64).reshape(-1)[0]) * PIXEL_STD
    if not box_width > 1:
        raise ValueError(f"crop box width scale[0] * 200 must exceed 1 pixel, got {box_width}")
    s = (out_width - 1) / (box_width - 1)
    out_center = np.array([(out_width - 1) / 2, (out_height - 1) / 2])
    return np.array([
        [s, 0.0, out_center[0] - s * center[0]],
        [0.0, s, out_center[1] - s * center[1]],
    ])


def apply_affine(points, matrix):
    """Apply a 2x3 affine matrix to points (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix):
    """Inverse of a 2x3 affine matrix, as a 2x3 matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def bbox_center_scale(points, aspect=CROP_WIDTH / CROP_HEIGHT, padding=1.25):
    """HRNet-style box around 2D points (N, 2): centre (2,) and scale (2,) = size / 200.

    The box is grown to the crop's aspect ratio and padded by ``padding``.
    """
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    center = (lo + hi) / 2
    w, h = hi - lo
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    scale = np.array([w, h]) * padding / PIXEL_STD
    return center.astype(np.float32), scale.astype(np.float32)


def warp_affine(image, matrix, out_width=CROP_WIDTH, out_height=CROP_HEIGHT):
    """Bilinear affine warp of an image, zero outside it.

    Each output pixel (x, y) samples the input at ``invert_affine(matrix) @ (x, y, 1)``,
    pixel centres at integer coordinates, so a point ``p`` of the input lands at
    ``apply_affine(p, matrix)`` in the output (as with an 8-bit image library's affine
    warp; neighbours outside the input count as 0, so edges blend towards black).

    Args:
        image: (H, W, C) array, any real dtype (uint8 frames in practice).
        matrix: 2x3 affine matrix taking input pixels to output pixels.
    Returns:
        (out_height, out_width, C) float32 array in the input's value range, unrounded.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    inverse = invert_affine(np.asarray(matrix, dtype=np.float64))
    xs = np.arange(out_width, dtype=np.float64)
    ys = np.arange(out_height, dtype=np.float64)[:, None]
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]  # (out_height, out_width)
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, y0 = np.floor(src_x), np.floor(src_y)
    fx, fy = (src_x - x0).astype(np.float32), (src_y - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    height, width = image.shape[:2]
    out = np.zeros((out_height, out_width, image.shape[2]), dtype=np.float32)
    for dy, weight_y in ((0, 1 - fy), (1, fy)):
        for dx, weight_x in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            weight = np.where(inside, weight_y * weight_x, np.float32(0))[..., None]
            out += weight * image[np.clip(yy, 0, height - 1), np.clip(xx, 0, width - 1)]
    return out


def crop_image(image, center, scale, out_width=CROP_WIDTH, out_height=CROP_HEIGHT):
    """The person crop of a full frame (``docs/formats.md``, Crop), rounded back to 8 bits as the original does.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        center: (2,) box centre in frame pixels; scale: (2,) box size / 200.
    Returns:
        (out_height, out_width, 3) uint8 crop; the frame point p lands at
        ``apply_affine(p, crop_matrix(center, scale))``.
    """
    warped = warp_affine(image, crop_matrix(center, scale, out_width, out_height), out_width, out_height)
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8)

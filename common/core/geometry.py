"""Camera-plane geometry: normalized screen coordinates and the person crop.

Conventions (``docs/formats.md``, Coordinate frames and Crop):
- Normalized screen coordinates (VideoPose3D): u / w * 2 - 1, v / w * 2 - h / w,
  so x flips as x -> -x.
- The crop is a similarity transform (no rotation) that maps the box centre to
  the crop centre ((W - 1) / 2, (H - 1) / 2) and scales by (W - 1) / (scale[0] * 200 - 1),
  so that the box width ``scale[0] * 200`` spans the crop width.
"""
import cv2
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


def _cv2_warp(image, matrix, out_width, out_height):
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (out_width, out_height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_image(image, center, scale, out_width=CROP_WIDTH, out_height=CROP_HEIGHT):
    """The person crop of a full frame (``docs/formats.md``, Crop), exactly as the original makes it.

    The original calls ``cv2.warpAffine(frame, crop_matrix, (192, 256), flags=cv2.INTER_LINEAR)``
    on the 8-bit frame (constant border 0); so does this, so the crops are the
    same to the grey level (OpenCV's fixed-point bilinear weights round its way).

    Args:
        image: (H, W, 3) uint8 RGB frame.
        center: (2,) box centre in frame pixels; scale: (2,) box size / 200.
    Returns:
        (out_height, out_width, 3) uint8 crop; the frame point p lands at
        ``apply_affine(p, crop_matrix(center, scale))``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {image.dtype} of shape {image.shape}")
    return _cv2_warp(image, crop_matrix(center, scale, out_width, out_height), out_width, out_height)

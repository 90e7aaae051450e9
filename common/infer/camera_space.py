"""Where each person stands in the camera's space: the root position that makes the lifted pose project onto its 2D keypoints.

The model gives root-relative poses P (17, 3). With a pinhole camera (focal f
pixels, principal point c at the image centre), the root translation T puts
joint j at pixel u_j = f (P_j + T)_xy / (P_j + T)_z + c. Multiplying out the
division makes this linear in T:

    f T_x - (u_x - c_x) T_z = (u_x - c_x) P_z - f P_x      (and the same in y)

two equations per joint, 34 for three unknowns, solved by least squares
(weighted by the keypoint scores where there are any). Units: metres, camera
axes (x right, y down, z forward).

The focal length, in this order: ``--focal`` in pixels; the photo's EXIF
35 mm-equivalent focal length (``FocalLengthIn35mmFilm``, converted over the
diagonal: f = f35 * diagonal / 43.27 mm); else ``DEFAULT_FOV_DEG``, a 60 degree
horizontal field of view (f = width / 2 / tan 30 degrees = 0.866 width), about a
phone's main camera in landscape. A wrong focal length scales the distance:
twice the focal length, twice as far.
"""
import numpy as np
from PIL import Image

DEFAULT_FOV_DEG = 60.0
FULL_FRAME_DIAGONAL_MM = float(np.hypot(36.0, 24.0))  # 43.27 mm
EXIF_IFD = 0x8769
FOCAL_35MM_TAG = 0xA405


def focal_from_fov(width, fov_deg=DEFAULT_FOV_DEG):
    """Focal length in pixels of an image ``width`` pixels wide with a horizontal field of view of ``fov_deg``."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return width / 2 / np.tan(np.radians(fov_deg) / 2)


def exif_focal(path, width, height):
    """Focal length in pixels from an image's EXIF 35 mm-equivalent focal length, or None where it has none."""
    try:
        with Image.open(path) as image:
            focal_35mm = image.getexif().get_ifd(EXIF_IFD).get(FOCAL_35MM_TAG)
    except (OSError, ValueError, AttributeError):
        return None
    if not focal_35mm or float(focal_35mm) <= 0:
        return None
    return float(focal_35mm) * np.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


def resolve_focal(focal, image_path, width, height):
    """(focal pixels, source): ``focal`` if given, else the EXIF one of ``image_path`` (None: skip), else the default FOV."""
    if focal is not None:
        if not np.isfinite(focal) or focal <= 0:
            raise ValueError(f"the focal length must be a positive number of pixels, got {focal}")
        return float(focal), "given"
    if image_path is not None:
        from_exif = exif_focal(image_path, width, height)
        if from_exif is not None:
            return from_exif, "exif"
    return float(focal_from_fov(width)), f"default {DEFAULT_FOV_DEG:g} degree field of view"


def fit_root(poses, keypoints, focal, center, weights=None):
    """Camera-space root positions of root-relative poses from their 2D keypoints.

    Args:
        poses: (N, 17, 3) or (17, 3) root-relative joints, metres, camera axes.
        keypoints: (N, 17, 2) or (17, 2) the same joints' pixels.
        focal: pixels (one for x and y). center: (2,) principal point, pixels.
        weights: (N, 17) or (17,) per-joint weights (e.g. keypoint scores), or None.
    Returns:
        (N, 3) or (3,) metres: the translation T that puts the pose in the camera frame.
    """
    poses = np.asarray(poses, dtype=np.float64)
    single = poses.ndim == 2
    poses = poses[None] if single else poses
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(poses.shape[0], -1, 2)
    if keypoints.shape[1] != poses.shape[1]:
        raise ValueError(f"poses {poses.shape} and keypoints {keypoints.shape} must have the same joints")
    weights = np.ones(keypoints.shape[:2]) if weights is None else np.asarray(weights, np.float64).reshape(keypoints.shape[:2])
    offset = keypoints - np.asarray(center, dtype=np.float64)  # (N, J, 2)
    N, J = offset.shape[:2]
    a = np.zeros((N, J, 2, 3))
    a[..., 0, 0] = a[..., 1, 1] = focal
    a[..., 2] = -offset
    b = offset * poses[..., 2:3] - focal * poses[..., :2]  # (N, J, 2)
    root_weight = np.sqrt(np.clip(weights, 0, None))[..., None, None]
    a = (a * root_weight).reshape(N, 2 * J, 3)
    b = (b * root_weight[..., 0]).reshape(N, 2 * J)
    roots = np.stack([np.linalg.lstsq(a[n], b[n], rcond=None)[0] for n in range(N)])
    return roots[0] if single else roots


def project(points, focal, center):
    """Pixels (..., 2) of camera-space points (..., 3) metres through the pinhole camera."""
    points = np.asarray(points, dtype=np.float64)
    return focal * points[..., :2] / points[..., 2:3] + np.asarray(center, dtype=np.float64)

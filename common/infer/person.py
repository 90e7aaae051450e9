"""One person of an image prepared as the shards hold a sample: the crop and the 2D keypoints.

The crop is the shards' ``center``/``scale`` warp (``docs/formats.md``, Crop) of a
box (pixels, padded by 1.25 and grown to 192:256 as HRNet does; a box around
given keypoints; or else the whole image). Given keypoints (COCO-17 or H36M-17,
``common.infer.inputs``) become H36M-17 (``common.infer.keypoints.coco_to_h36m``)
in the three forms the model and the results need: normalized screen
coordinates of the full image, crop pixels and image pixels.
"""
from dataclasses import dataclass

import numpy as np

from common.core.geometry import (
    apply_affine,
    bbox_center_scale,
    crop_image,
    crop_matrix,
    invert_affine,
    normalize_screen_coordinates,
)
from common.core.skeleton import JOINT_NAMES, NUM_JOINTS
from common.infer.inputs import KEYPOINT_FORMATS, InputError
from common.infer.keypoints import COCO_JOINT_NAMES, COCO_USED, coco_to_h36m


class MissingJointsError(InputError):
    """Given keypoints mark a joint the H36M skeleton needs as missing (visibility or score 0).

    ``missing``: the joint names. The command line's ``--skip-incomplete`` leaves
    such a person out; every other ``InputError`` still stops it.
    """

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = missing


@dataclass
class PersonKeypoints:
    """A person's 17 H36M joints in the forms the model and the results need (float32).

    normalized: (17, 2) normalized screen coordinates of the full image (x in [-1, 1]).
    crop: (17, 2) crop pixels. pixels: (17, 2) image pixels.
    scores: (17,) heatmap maxima or the file's scores; None if it had none.
    """

    normalized: np.ndarray
    crop: np.ndarray
    pixels: np.ndarray
    scores: object = None

    @classmethod
    def from_pixels(cls, pixels, center, scale, image_size, scores=None):
        """From image pixels (17, 2), the crop box and the image's (width, height)."""
        width, height = image_size
        return cls(normalize_screen_coordinates(pixels, width, height).astype(np.float32),
                   apply_affine(pixels, crop_matrix(center, scale)).astype(np.float32),
                   np.asarray(pixels, dtype=np.float32), scores)


@dataclass
class Person:
    """One person prepared as the shards hold a sample.

    crop: (256, 192, 3) uint8. center, scale: the crop box (scale = size / 200).
    image_size: (width, height). keypoints: ``PersonKeypoints``, or None until the
    backbone finds them (``common.infer.lifting.detect_keypoints``).
    """

    key: str
    crop: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    image_size: tuple
    keypoints: object = None
    keypoint_source: str = "given"


def box_center_scale(bbox, width, height):
    """Crop box of a person: ``bbox`` (x, y, w, h) in pixels, a dict with ``center`` and ``scale``, or None (whole image).

    A pixel box is grown to the crop's 192:256 aspect and padded by 1.25 (HRNet's
    convention). Returns float32 ``center`` (2,) and ``scale`` (2,) = size / 200.
    Raises InputError for an empty box or one that misses the image.
    """
    if isinstance(bbox, dict):
        if "center" not in bbox or "scale" not in bbox:
            raise InputError(f"a box given as a dict needs 'center' and 'scale', got keys {sorted(bbox)}")
        center = np.asarray(bbox["center"], dtype=np.float32).reshape(2)
        scale = np.asarray(bbox["scale"], dtype=np.float32).reshape(2)
        if not (np.isfinite(center).all() and np.isfinite(scale).all() and scale[0] * 200 > 1):
            raise InputError(f"box center {center.tolist()} scale {scale.tolist()}: need finite values and "
                             f"scale[0] * 200 > 1 pixel")
        return center, scale
    box = np.asarray([0, 0, width, height] if bbox is None else bbox, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise InputError(f"box {np.asarray(bbox).tolist()}: expected x, y, w, h with w, h > 0 (pixels)")
    x, y, w, h = box
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InputError(f"box x={x:g} y={y:g} w={w:g} h={h:g} lies outside the {width} x {height} image")
    return bbox_center_scale(np.array([[x, y], [x + w, y + h]]))


def h36m_keypoints(keypoints, fmt="coco", where="keypoints"):
    """User keypoints (17, 2 or 3), pixels, in ``fmt`` order -> (H36M (17, 2) pixels, scores (17,) or None).

    A third column is a visibility or score; 0 marks a missing joint, which is an
    error for every joint the H36M skeleton needs.
    """
    if fmt not in KEYPOINT_FORMATS:
        raise ValueError(f"keypoint format must be one of {KEYPOINT_FORMATS}, got {fmt!r}")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[0] != NUM_JOINTS or keypoints.shape[1] not in (2, 3):
        raise InputError(f"{where}: expected 17 keypoints ({fmt.upper()}-17) as (17, 2) or (17, 3), "
                         f"got shape {keypoints.shape}")
    if not np.isfinite(keypoints).all():
        raise InputError(f"{where}: keypoints hold NaN or infinite values")
    scores = keypoints[:, 2] if keypoints.shape[1] == 3 else None
    if scores is not None:
        names, needed = (COCO_JOINT_NAMES, COCO_USED) if fmt == "coco" else (JOINT_NAMES, range(NUM_JOINTS))
        missing = [names[j] for j in needed if scores[j] == 0]
        if missing:
            raise MissingJointsError(
                f"{where}: {', '.join(missing)} missing (visibility or score 0); lifting needs every "
                f"{fmt.upper()} joint{' but the ears' if fmt == 'coco' else ''}: complete them, leave "
                f"this person out (--skip-incomplete), or let the backbone find all keypoints", missing)
    if fmt == "coco":
        keypoints = coco_to_h36m(keypoints)
    return keypoints[:, :2], None if scores is None else keypoints[:, 2].astype(np.float32)


def _require_near_image(pixels, width, height, where):
    """InputError when keypoints (17, 2) pixels lie more than half the image size outside it (another image's, or not pixels)."""
    low, high = -0.5 * np.array([width, height]), 1.5 * np.array([width, height])
    outside = ((pixels < low) | (pixels > high)).any(axis=1)
    if outside.any():
        raise InputError(f"{where}: {int(outside.sum())} keypoints lie far outside the {width} x {height} image "
                         f"(e.g. {pixels[outside][0].round(1).tolist()}): they must be this image's pixels, not "
                         f"normalized or another resolution's coordinates")


def prepare_person(image, bbox=None, keypoints=None, keypoint_format="coco", key="image", where="image"):
    """Crop one person and put given keypoints in the shards' form.

    ``keypoints``: None (the backbone finds them later), pixels (17, 2 or 3) in
    ``keypoint_format`` order, or a dict ``{"normalized": (17, 2), "crop": (17, 2)}``
    in H36M order exactly as shards and Human3.6M label files hold them.
    Without a box, given pixel keypoints get the HRNet-style box around them.
    """
    height, width = image.shape[:2]
    pixels = scores = None
    if keypoints is not None and not isinstance(keypoints, dict):
        pixels, scores = h36m_keypoints(keypoints, keypoint_format, where)
        _require_near_image(pixels, width, height, where)
        if bbox is None:
            bbox = dict(zip(("center", "scale"), bbox_center_scale(pixels)))
    center, scale = box_center_scale(bbox, width, height)
    crop = crop_image(image, center, scale)
    prepared = None
    if isinstance(keypoints, dict):
        normalized = np.asarray(keypoints["normalized"], dtype=np.float32).reshape(NUM_JOINTS, 2)
        crop_px = np.asarray(keypoints["crop"], dtype=np.float32).reshape(NUM_JOINTS, 2)
        pixels = apply_affine(crop_px, invert_affine(crop_matrix(center, scale))).astype(np.float32)
        prepared = PersonKeypoints(normalized, crop_px, pixels)
    elif pixels is not None:
        prepared = PersonKeypoints.from_pixels(pixels, center, scale, (width, height), scores)
    return Person(key, crop, center, scale, (width, height), prepared)

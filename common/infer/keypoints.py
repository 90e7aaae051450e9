"""2D keypoints of a user's images: COCO-17 to Human3.6M-17, and decoding the backbone's heatmaps.

COCO-17 order (what HRNet's heatmap head, MMPose, Detectron2 and OpenPose-to-COCO
converters give): 0 nose, 1 left eye, 2 right eye, 3 left ear, 4 right ear,
5 left shoulder, 6 right shoulder, 7 left elbow, 8 right elbow, 9 left wrist,
10 right wrist, 11 left hip, 12 right hip, 13 left knee, 14 right knee,
15 left ankle, 16 right ankle.

COCO-17 -> Human3.6M-17 (``coco_to_h36m``), the rule of MMPose's 2D-to-3D demo:
pelvis = mid-hips, thorax = mid-shoulders, spine = midpoint of pelvis and
thorax, neck/nose (9) = nose, head (10) = mid-eyes; hips, knees, ankles,
shoulders, elbows and wrists are copied; the ears are not used.
"""
import numpy as np
import torch
import torch.nn.functional as F

COCO_JOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_COCO_JOINTS = 17
# Human3.6M joints copied from one COCO joint: {h36m index: coco index}.
COCO_COPIED = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
# Human3.6M joints averaged from two COCO joints; the spine (7) then averages pelvis (0) and thorax (8).
COCO_AVERAGED = {0: (11, 12), 8: (5, 6), 10: (1, 2)}
# COCO joints the conversion reads (all but the ears).
COCO_USED = tuple(sorted(set(COCO_COPIED.values()) | {j for group in COCO_AVERAGED.values() for j in group}))

HEATMAP_DECODERS = ("quarter", "dark")


def coco_to_h36m(keypoints):
    """COCO-17 keypoints (..., 17, C) -> Human3.6M-17 (..., 17, C), C = 2 (x, y) or more (e.g. a score).

    Every channel follows the module docstring's rule, so a score column of a
    derived joint is the mean of its sources' scores.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim < 2 or keypoints.shape[-2] != NUM_COCO_JOINTS:
        raise ValueError(f"expected COCO keypoints (..., 17, C), got shape {keypoints.shape}")
    out = np.empty_like(keypoints)
    for h36m, coco in COCO_COPIED.items():
        out[..., h36m, :] = keypoints[..., coco, :]
    for h36m, group in COCO_AVERAGED.items():
        out[..., h36m, :] = (keypoints[..., group[0], :] + keypoints[..., group[1], :]) / 2
    out[..., 7, :] = (out[..., 0, :] + out[..., 8, :]) / 2
    return out


def decode_heatmaps(heatmaps, method="dark"):
    """Keypoint positions and scores from heatmaps (B, J, h, w).

    ``quarter`` (HRNet's own decoding): the argmax, moved a quarter pixel towards
    the higher of its two neighbours in x and in y (not at the border).
    ``dark`` (Zhang et al., CVPR 2020): the heatmap is smoothed with a Gaussian
    (sigma 2, as HRNet's training targets), and the argmax is refined by a
    second-order Taylor step of the log-heatmap, which recovers a Gaussian's
    sub-pixel centre.

    Returns:
        (positions (B, J, 2) in heatmap pixels (x, y), scores (B, J) = the maxima).
    """
    if method not in HEATMAP_DECODERS:
        raise ValueError(f"heatmap decoding must be one of {HEATMAP_DECODERS}, got {method!r}")
    heatmaps = torch.as_tensor(heatmaps).detach().double().cpu()
    if heatmaps.dim() != 4:
        raise ValueError(f"expected heatmaps (B, J, h, w), got {tuple(heatmaps.shape)}")
    B, J, h, w = heatmaps.shape
    flat = heatmaps.flatten(2)  # (B, J, h*w)
    scores, index = flat.max(dim=-1)
    x, y = (index % w).double(), torch.div(index, w, rounding_mode="floor").double()
    positions = torch.stack([x, y], dim=-1)  # (B, J, 2)
    if method == "quarter":
        return positions + 0.25 * _quarter_direction(heatmaps, index), scores.float()
    return positions + _dark_offset(heatmaps, index), scores.float()


def _neighbours(maps, index, dx, dy):
    """Values at argmax + (dx, dy), clamped to the map: (B, J)."""
    h, w = maps.shape[-2:]
    x = (index % w + dx).clamp(0, w - 1)
    y = (torch.div(index, w, rounding_mode="floor") + dy).clamp(0, h - 1)
    return maps.flatten(2).gather(-1, (y * w + x)[..., None])[..., 0]


def _interior(index, h, w):
    x, y = index % w, torch.div(index, w, rounding_mode="floor")
    return (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)


def _quarter_direction(maps, index):
    dx = _neighbours(maps, index, 1, 0) - _neighbours(maps, index, -1, 0)
    dy = _neighbours(maps, index, 0, 1) - _neighbours(maps, index, 0, -1)
    direction = torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)  # (B, J, 2)
    return direction * _interior(index, *maps.shape[-2:])[..., None]


def _gaussian_blur(maps, sigma=2.0):
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    B, J, h, w = maps.shape
    x = maps.reshape(B * J, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(B, J, h, w)


def _dark_offset(maps, index):
    # Blurring keeps the peak where it was but makes the log-heatmap close to a
    # quadratic around it; the blurred map is rescaled to the original maximum, as DARK does.
    peak = maps.flatten(2).max(dim=-1).values[..., None, None]
    blurred = _gaussian_blur(maps)
    blurred = blurred * peak / blurred.flatten(2).max(dim=-1).values[..., None, None].clamp_min(1e-12)
    log = blurred.clamp_min(1e-10).log()
    at = lambda dx, dy: _neighbours(log, index, dx, dy)  # noqa: E731
    centre = at(0, 0)
    gx = (at(1, 0) - at(-1, 0)) / 2
    gy = (at(0, 1) - at(0, -1)) / 2
    hxx = at(1, 0) - 2 * centre + at(-1, 0)
    hyy = at(0, 1) - 2 * centre + at(0, -1)
    hxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    det = hxx * hyy - hxy ** 2
    # Newton step -H^-1 g; only where H is negative definite (a true maximum) and inside the map.
    ox = -(hyy * gx - hxy * gy) / det.where(det != 0, torch.ones_like(det))
    oy = -(hxx * gy - hxy * gx) / det.where(det != 0, torch.ones_like(det))
    valid = (det > 0) & (hxx < 0) & _interior(index, *maps.shape[-2:])
    offset = torch.stack([ox, oy], dim=-1).clamp(-1, 1)
    return offset * valid[..., None]


def heatmap_to_crop(positions, heatmap_size, crop_size):
    """Heatmap pixels (..., 2) -> crop pixels, HRNet's convention (crop = heatmap x stride).

    HRNet's training targets put a joint at crop pixel p on heatmap pixel p / stride
    (rounded), so a heatmap position maps back by multiplying with the stride.
    """
    (hw, hh), (cw, ch) = heatmap_size, crop_size
    return np.asarray(positions, dtype=np.float64) * np.array([cw / hw, ch / hh])

"""The model on a batch of prepared persons: 2D keypoints from the backbone's heatmaps where
none were given, then H hypotheses each through the pipeline.

Sampling is evaluation's own (``common.pipeline.SnapPosePipeline``: H hypotheses,
K DDIM steps, flip test), and each person's initial noise is seeded by its key
as in evaluation, so a shard sample's image lifted under its key and with its
box and keypoints gives the hypotheses its evaluation gives.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from common.analysis.reliability import joint_spread
from common.core.geometry import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_affine,
    crop_matrix,
    invert_affine,
    normalize_screen_coordinates,
)
from common.data.samples import flip_test_views, normalize_image
from common.infer.inputs import InputError
from common.infer.keypoints import coco_to_h36m, decode_heatmaps, heatmap_to_crop
from common.infer.person import PersonKeypoints


@dataclass
class LiftResult:
    """The 3D hypotheses of one person and what they were lifted from.

    hypotheses: (H, 17, 3) root-relative, metres, H36M order (``common.core.skeleton``).
    mean: (17, 3) their mean. spread_mm: (17,) per joint, the mean distance of the
        hypotheses from their mean (``common.analysis.reliability.joint_spread``),
        millimetres: high where the model is unsure.
    keypoints_2d: (17, 2) the H36M-17 keypoints used, image pixels;
    keypoint_scores: (17,) heatmap maxima or the file's scores (None if it had none).
    keypoint_source: "heatmaps" or "given". center, scale: the crop box (scale = size / 200).
    key: the name that seeded the initial noise.
    """

    hypotheses: np.ndarray
    mean: np.ndarray
    spread_mm: np.ndarray
    keypoints_2d: np.ndarray
    keypoint_scores: object
    keypoint_source: str
    center: np.ndarray
    scale: np.ndarray
    key: str
    image_size: tuple = field(default=(0, 0))

    def to_dict(self):
        """JSON-ready dict (lists of floats)."""
        return {
            "key": self.key, "center": self.center.tolist(), "scale": self.scale.tolist(),
            "keypoints_2d": self.keypoints_2d.tolist(), "keypoint_source": self.keypoint_source,
            "keypoint_scores": None if self.keypoint_scores is None else np.asarray(self.keypoint_scores).tolist(),
            "mean": self.mean.tolist(), "spread_mm": self.spread_mm.tolist(),
            "hypotheses": self.hypotheses.tolist(),
        }



@torch.no_grad()
def detect_keypoints(model, people, method="dark"):
    """Fill in the keypoints of ``people`` that have none, from the backbone's heatmaps (one batch)."""
    todo = [p for p in people if p.keypoints is None]
    if not todo:
        return
    if not model.has_heatmaps:
        raise InputError(
            "no 2D keypoints given and this model cannot find them: its backbone has no heatmap head "
            "(a random backbone, or loaded with heatmaps=False); give keypoints (--keypoints FILE)")
    images = torch.stack([normalize_image(p.crop) for p in todo]).to(model.device)  # (B, 3, 256, 192)
    heatmaps = model.backbone.heatmaps(model.backbone(images))  # (B, 17, 64, 48) COCO order
    positions, scores = decode_heatmaps(heatmaps, method)
    crop_coco = heatmap_to_crop(positions.numpy(), (heatmaps.shape[3], heatmaps.shape[2]), (CROP_WIDTH, CROP_HEIGHT))
    for person, crop_px, score in zip(todo, crop_coco, scores.numpy()):
        h36m = coco_to_h36m(np.concatenate([crop_px, score[:, None]], axis=1))  # (17, 3): x, y, score
        pixels = apply_affine(h36m[:, :2], invert_affine(crop_matrix(person.center, person.scale)))
        width, height = person.image_size
        person.keypoints = PersonKeypoints(normalize_screen_coordinates(pixels, width, height).astype(np.float32),
                                           h36m[:, :2].astype(np.float32), pixels.astype(np.float32),
                                           h36m[:, 2].astype(np.float32))
        person.keypoint_source = "heatmaps"


def lift_people(model, people, sampling=None, heatmap_decoding="dark"):
    """Lift prepared persons (one batch through backbone and denoiser); returns a LiftResult each.

    ``model``: a ``common.infer.api.LiftingModel``. ``sampling``: a ``SamplingConfig``;
    None: the model's evaluation settings (``model.config.sampling()``). The pipeline
    is prepared for it once (precision, ``compile``) and stays so for the next batch.
    """
    pipeline = model.pipeline.prepare(model.config.sampling() if sampling is None else sampling)
    detect_keypoints(model, people, heatmap_decoding)
    views = [flip_test_views(p.crop, torch.from_numpy(p.keypoints.normalized), torch.from_numpy(p.keypoints.crop))
             for p in people]
    batch = {name: torch.stack([v[name] for v in views]) for name in views[0]}
    batch["key"] = [p.key for p in people]
    hypotheses = pipeline(batch).cpu().numpy()  # (B, H, 17, 3)
    results = []
    for person, poses in zip(people, hypotheses):
        mean = poses.mean(axis=0)
        spread = joint_spread(torch.from_numpy(poses)[None])[0].numpy() * 1000  # (17,) mm
        results.append(LiftResult(poses, mean, spread.astype(np.float32), person.keypoints.pixels,
                                  person.keypoints.scores, person.keypoint_source, person.center, person.scale,
                                  person.key, person.image_size))
    return results


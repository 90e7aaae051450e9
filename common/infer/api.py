"""The Python API of inference: load a trained model, lift one person of one image.

    from common.infer import lift, load_model
    model = load_model("checkpoint/human36m/best_h36m.bin", backbone_weights="checkpoint/pose_hrnet_w32_256x192.pth")
    result = lift("photo.jpg", bbox=(120, 40, 200, 420), model=model)
    result.mean, result.spread_mm  # (17, 3) metres, (17,) millimetres

The model is a ``common.pipeline.SnapPosePipeline`` built as training and
evaluation build it; a person is prepared as the shards hold a sample
(``common.infer.person``) and lifted through the pipeline (``common.infer.lifting``).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.infer.inputs import InputError, read_image
from common.infer.lifting import lift_people
from common.infer.person import prepare_person
from common.pipeline import SnapPosePipeline


@dataclass
class LiftingModel:
    """A loaded SnapPose model for lifting: its pipeline and the configuration it was trained with.

    ``pipeline``: a ``common.pipeline.SnapPosePipeline`` (backbone, denoiser, device);
    ``config``: the run's ``common.pipeline.config.Config`` (its evaluation settings
    are the default sampling).
    """

    pipeline: SnapPosePipeline

    @property
    def config(self):
        return self.pipeline.config

    @property
    def backbone(self):
        return self.pipeline.backbone

    @property
    def denoiser(self):
        return self.pipeline.denoiser

    @property
    def device(self):
        return self.pipeline.device

    @property
    def has_heatmaps(self):
        return self.pipeline.has_heatmaps

    def lift(self, image, bbox=None, keypoints=None, **options):
        """``lift(image, bbox, keypoints, model=self, **options)``."""
        return lift(image, bbox, keypoints, model=self, **options)


def load_model(checkpoint, config=None, device=None, backbone_weights=None, heatmaps=True, trust_checkpoint=False):
    """Rebuild a SnapPose model exactly as it was trained and load its weights.

    The networks are built by ``Config.networks`` (``common.model.networks.build_networks``), as training and
    evaluation build them, so a run with a random backbone gets the same random
    backbone back. Joins no process group.

    Args:
        checkpoint: SnapPose checkpoint (``best_h36m.bin``, ``latest_epoch.bin``, ...).
        config: Config or YAML path; None: see ``common.pipeline.config.resolve_config``.
        device: "cpu", "cuda", ...; None: CUDA if available.
        backbone_weights: PoseHRNet file, overriding the config's ``weights.backbone``.
        heatmaps: also load the backbone's heatmap head (``final_layer``), which
            finding 2D keypoints needs; only for a pretrained backbone.
        trust_checkpoint: unpickle the weight files fully, which can run code from
            them (see ``checkpoints.read_checkpoint``); only for files you trust.
    Returns:
        LiftingModel in eval mode.
    """
    return LiftingModel(SnapPosePipeline.from_pretrained(checkpoint, config, backbone_weights, device, heatmaps,
                                                         trust_checkpoint))


def lift(image, bbox=None, keypoints=None, *, model, keypoint_format="coco", key=None, sampling=None,
         heatmap_decoding="dark"):
    """Lift one person of one image to 3D.

    Args:
        image: file path, or (H, W, 3) uint8 RGB array.
        bbox: (x, y, w, h) pixels, or ``{"center", "scale"}`` (HRNet's scale = size / 200);
            None: around the given keypoints, else the whole image.
        keypoints: None (found by the backbone's heatmap head), (17, 2 or 3) pixels in
            ``keypoint_format`` order ("coco" or "h36m"), or ``{"normalized", "crop"}`` as shards hold them.
        model: a LiftingModel from :func:`load_model`.
        key: names the person; its initial noise is seeded by (key, seed) as in
            evaluation. Default: the file's stem, or "image" for an array.
        sampling: a ``common.model.samplers.SamplingConfig`` (H, K, sampler, precision, flip
            test, seed); None: the model's evaluation settings. Change a few with
            ``model.config.sampling().replace(hypotheses=6)``.
        heatmap_decoding: "dark" or "quarter" (``common.infer.keypoints.decode_heatmaps``).
    Returns:
        LiftResult.
    """
    if isinstance(image, (str, Path)):
        key = Path(image).stem if key is None else key
        image = read_image(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    person = prepare_person(image, bbox, keypoints, keypoint_format, "image" if key is None else key)
    return lift_people(model, [person], sampling, heatmap_decoding)[0]


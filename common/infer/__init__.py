"""Lifting people's own images and videos with a trained model.

``load_model`` and ``lift`` are the Python API; ``python -m common.infer`` the command.
``lifting`` holds both, ``inputs`` reads images, videos and keypoint files,
``keypoints`` converts COCO keypoints and decodes heatmaps, ``figures`` draws results.
Across the frames of a video: ``tracking`` (identities), ``smoothing`` (One-Euro,
Savitzky-Golay), ``camera_space`` (root positions), ``bvh`` (motion files), and
``motion``, which runs them for the command.

May import every package but ``common.synthetic``.
"""
from common.infer.lifting import LiftingModel, LiftResult, lift, load_model

__all__ = ["LiftResult", "LiftingModel", "lift", "load_model"]

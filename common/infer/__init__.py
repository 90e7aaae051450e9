"""Lifting people's own images and videos with a trained model.

``load_model`` and ``lift`` are the Python API; ``python -m common.infer`` the command.
``lifting`` holds both, ``inputs`` reads images, videos and keypoint files,
``keypoints`` converts COCO keypoints and decodes heatmaps, ``figures`` draws results.

May import every package but ``common.synthetic``.
"""
from common.infer.inputs import InputError
from common.infer.lifting import LiftingModel, LiftResult, lift, load_model

__all__ = ["InputError", "LiftResult", "LiftingModel", "lift", "load_model"]

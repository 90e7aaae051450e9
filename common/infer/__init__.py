"""Lifting people's own images and videos with a trained model.

``load_model`` and ``lift`` are the Python API (``api``); ``python -m common.infer``
the command (``cli``). ``person`` prepares one person of an image as the shards
hold a sample, ``lifting`` runs the model on a batch of them through the pipeline,
``inputs`` reads images, videos and keypoint files, ``keypoints`` converts COCO
keypoints and decodes heatmaps, ``figures`` draws results (matplotlib is loaded
only when a figure is drawn).
Across the frames of a video: ``tracking`` (identities), ``smoothing`` (One-Euro,
Savitzky-Golay), ``camera_space`` (root positions), ``bvh`` (motion files), and
``motion``, which runs them for the command.

May import ``common.core``, ``common.data``, ``common.model``, ``common.analysis``
and ``common.pipeline``; never ``common.run`` (training and evaluation runs) or
``common.synthetic``.
"""
from common.infer.api import LiftingModel, lift, load_model
from common.infer.inputs import InputError
from common.infer.lifting import LiftResult

__all__ = ["InputError", "LiftResult", "LiftingModel", "lift", "load_model"]

"""The model at inference time: ``SnapPosePipeline`` (``pipeline``) turns a test batch into
hypotheses, built from a run configuration (``config``, with files in the original
repository's format read by ``original_config``) or from weight files; the flip
test's views and the seeded initial noise (``views``); the networks as ONNX graphs
run by onnxruntime (``onnx``).

    from common.pipeline import SnapPosePipeline

May import ``common.core``, ``common.data`` and ``common.model``: it knows nothing
of training, evaluation runs or processes.
"""
from common.pipeline.pipeline import SnapPosePipeline

__all__ = ["SnapPosePipeline"]

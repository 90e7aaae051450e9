"""SnapPose: diffusion-based 3D human pose estimation from a single image.

The packages, lowest first; each imports only from those above it in this list
(and from third-party libraries), never from one below:

- ``core``: the skeleton, crop and camera geometry, safe unpickling, files written whole.
- ``data``: the released WebDataset shards: reading, the loader, splits, sample
  counts and the converter from the original pickles. Knows nothing of the model.
- ``synthetic``: the synthetic world (body model, renderer, generator) that writes
  shards in the released layout.
- ``model``: the networks (backbone, context blocks, denoiser), diffusion and
  samplers, building networks and loading their weight files. Knows nothing of runs.
- ``analysis``: metrics, reliability of the hypotheses, figures, the predictions report.
- ``pipeline``: the model at inference time: ``SnapPosePipeline`` (backbone, denoiser and
  sampling settings; a test batch in, hypotheses out), the run configuration it is
  built from, and its ONNX graphs. Knows nothing of runs or processes.
- ``run``: training, evaluation, the context cache, processes and locks, and the
  command line of the two entry scripts; it applies the model through ``pipeline``.
- ``infer``: lifting people's own images and videos with a trained model, through
  ``pipeline``; it stands beside ``run`` and never imports it.

The modules at the top level are commands: ``python -m common.demo``,
``python -m common.convert`` and ``python -m common.analyze`` (``common.synthetic``
and ``common.infer`` are run the same way, as packages).
"""

__version__ = "0.1.0"

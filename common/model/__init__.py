"""The model: the frozen PoseHRNet backbone (``backbone``), the deformable context
blocks (``context``), the denoiser (``denoiser``), DDPM training and the samplers
(``diffusion``, ``samplers``), precision and compilation (``acceleration``), building
the networks (``networks``) and reading and writing their weight files (``checkpoints``).

May import ``common.core`` only: the model knows nothing of data loading or runs.
"""

"""SnapPose: diffusion-based 3D human pose estimation from a single image."""

__version__ = "0.1.0"

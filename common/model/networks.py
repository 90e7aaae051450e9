"""The SnapPose model as built by training and evaluation: config and factory.

Re-exports the two networks so that users write
``from common.model.networks import PoseHRNet, SnapPoseDenoiser``.
"""
from dataclasses import dataclass

from common.model.backbone import PoseHRNet
from common.model.denoiser import SnapPoseDenoiser

__all__ = ["ModelConfig", "PoseHRNet", "SnapPoseDenoiser", "build_model"]


@dataclass
class ModelConfig:
    """Architecture of backbone and denoiser; the defaults are the released model.

    backbone_width: HRNet width w (32 released; 48 for W48); the denoiser's
        feature channels follow as (w, 2w, 4w, 8w). Smaller widths shrink the
        model for quick CPU runs (then no released file fits).
    backbone_stem_width: channels of HRNet's stem and layer1 (64 released);
        shrinking it is what makes a narrow backbone fast on a CPU.
    mask_pose, mask_context, shuffle_context: ablation switches (``docs/formats.md``, Networks).
    drop_path_rate: largest stochastic-depth rate, training only.
    res_depth, joint_depth: number of per-joint and across-joint transformer blocks.
    embed_dim: the denoiser's token width (128 released; a multiple of 8).
    """

    backbone_width: int = 32
    backbone_stem_width: int = 64
    mask_pose: bool = False
    mask_context: bool = False
    shuffle_context: bool = False
    drop_path_rate: float = 0.2
    res_depth: int = 4
    joint_depth: int = 4
    embed_dim: int = 128


def build_model(cfg=None, heatmap_joints=0):
    """Build ``(backbone, denoiser)`` from a ``ModelConfig`` (default: the released model).

    ``heatmap_joints`` = 17 adds the backbone's heatmap head (``PoseHRNet``);
    it draws its random weights after all other layers. The backbone comes frozen (no gradients, pinned to eval mode); the denoiser
    is trainable and in train mode. Load weights with ``common.model.checkpoints``.
    """
    cfg = ModelConfig() if cfg is None else cfg
    w = cfg.backbone_width
    backbone = PoseHRNet(width=w, stem_width=cfg.backbone_stem_width, heatmap_joints=heatmap_joints).freeze()
    denoiser = SnapPoseDenoiser(
        feature_channels=(w, 2 * w, 4 * w, 8 * w),
        mask_pose=cfg.mask_pose,
        mask_context=cfg.mask_context,
        shuffle_context=cfg.shuffle_context,
        drop_path_rate=cfg.drop_path_rate,
        res_depth=cfg.res_depth,
        joint_depth=cfg.joint_depth,
        embed_dim=cfg.embed_dim,
    )
    return backbone, denoiser

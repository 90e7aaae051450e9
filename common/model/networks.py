"""The SnapPose model as built by training and evaluation: config and factory.

Re-exports the two networks so that users write
``from common.model.networks import PoseHRNet, SnapPoseDenoiser``.
"""
import logging
from dataclasses import dataclass

import torch

from common.model.backbone import PoseHRNet
from common.model.checkpoints import load_backbone_weights, require_weight_file
from common.model.denoiser import SnapPoseDenoiser

log = logging.getLogger(__name__)

# Seed of the backbone's initial weights, used as they are when no pretrained file is loaded.
RANDOM_BACKBONE_SEED = 0

__all__ = ["ModelConfig", "PoseHRNet", "SnapPoseDenoiser", "build_model", "build_networks"]


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


def _build_seeded(model_cfg, seed, heatmap_joints=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg, heatmap_joints)


def build_networks(model_cfg, device, seed=0, backbone_weights=None, trust_checkpoint=False, heatmap_joints=0):
    """Build (backbone, denoiser) on ``device``; load the backbone weights and freeze it in eval mode.

    Args:
        model_cfg: a ``ModelConfig``.
        seed: the denoiser's initial weights follow it (the same in every process).
        backbone_weights: where the PoseHRNet file may be (a path or paths in search
            order, see ``checkpoints.require_weight_file``); None keeps a random backbone
            (and logs a warning), drawn from a fixed seed whatever ``seed`` and the process,
            so that training and evaluation see the same one.
        trust_checkpoint: unpickle the weight file fully (see ``checkpoints.read_checkpoint``).
        heatmap_joints: 17 also builds (and loads) the backbone's heatmap head.
    """
    backbone, _ = _build_seeded(model_cfg, RANDOM_BACKBONE_SEED, heatmap_joints)
    _, denoiser = _build_seeded(model_cfg, seed)
    if backbone_weights is not None:
        path = require_weight_file(backbone_weights, "backbone")
        log.info("backbone weights: %s", path)
        load_backbone_weights(backbone, path, trust_checkpoint)
    else:
        log.warning("backbone weights: none loaded (weights.pretrained_backbone is false); "
                    "the backbone is random, which suits synthetic data only")
    backbone.requires_grad_(False)
    backbone.eval()
    return backbone.to(device), denoiser.to(device)

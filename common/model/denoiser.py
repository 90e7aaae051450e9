"""The SnapPose denoiser: predicts the noise of a noisy 3D pose given 2D pose and image context.

Two halves (names in brackets are state-dict prefixes, as in the released
``best_*.bin``; c = 128, J = 17):

``encode_context`` (depends on neither the noisy pose nor the timestep):
    pose token [coord_embed] and four level tokens [feat_embed.0-3] sampled at
    the 2D joints, plus [Spatial_pos_embed], refined by four deformable blocks
    [context_blocks.0-3] -> context (B, 5, J, c). These are the layers that
    come from Context-Aware PoseFormer's weights and are frozen in training.
``denoise``:
    noisy-pose token [coord_3d_embed] first, then the five context tokens, each
    plus the timestep embedding [time_mlp]; per joint, transformer blocks over
    the six tokens [res_blocks]; then the six tokens of each joint concatenated
    (6c) and transformer blocks over the 17 joints [joint_blocks]; head
    [head.0 LayerNorm, head.1 Linear] -> noise (B, 1, J, 3).

Hypotheses (B, H, 1, J, 3) share their sample's context: ``denoise`` expands
the context over them instead of recomputing it, which is what makes
``common.model.samplers.sample`` cheap.

Modes: stochastic depth (rates linspace(0, drop_path_rate, depth) by block
index, in the context, res and joint blocks alike) acts only in ``train()``
mode; ``eval()`` is deterministic. Freezing the context layers
(``freeze_context``) only turns their gradients off: they follow the module's
mode like every other layer, as in the original training.
"""
import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from common.core.skeleton import NUM_JOINTS
from common.model.context import DeformableContextBlock, DropPath, Mlp, sample_features

NUM_CONTEXT_TOKENS = 5  # pose token + 4 levels
CONTEXT_PREFIXES = ("coord_embed.", "feat_embed.", "Spatial_pos_embed", "context_blocks.")
# The fused CUDA attention kernels fail ("CUDA error: invalid argument") for more than 65,535
# sequences in one call. The per-joint blocks attend over B x views x H x 17 sequences, which
# passes that at about 100 images with 20 hypotheses and the flip test: attend in slices then.
MAX_ATTENTION_BATCH = 65535


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        N = x.shape[0]
        qkv = rearrange(self.qkv(x), "n t (three heads d) -> three n heads t d", three=3, heads=self.num_heads)
        q, k, v = qkv.unbind(0)
        if N <= MAX_ATTENTION_BATCH:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # softmax(q k^T * scale) v
        else:
            out = torch.cat([F.scaled_dot_product_attention(*qkv_slice, scale=self.scale) for qkv_slice in
                             zip(*(t.split(MAX_ATTENTION_BATCH) for t in (q, k, v)))])
        return self.proj(rearrange(out, "n heads t d -> n t (heads d)"))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)); LayerNorm eps 1e-6."""

    def __init__(self, dim, num_heads=8, mlp_ratio=2.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SinusoidalTimeEmbedding(nn.Module):
    """Integer timesteps (N,) -> (N, dim): dim/2 sines then dim/2 cosines,
    frequencies exp(-ln(10000) * i / (dim/2 - 1))."""

    def __init__(self, dim):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"time-embedding width must be even and at least 4, got {dim}")
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _drop_path_rates(rate, depth):
    return [float(r) for r in torch.linspace(0, rate, depth)] if depth > 1 else [0.0] * depth


class SnapPoseDenoiser(nn.Module):
    """Noise predictor of SnapPose (see the module docstring for the data flow).

    Args:
        feature_channels: channels of the four backbone maps, (w, 2w, 4w, 8w).
        mask_pose: ablation, zero the pose token after the context blocks.
        mask_context: ablation, zero the four level tokens after the context blocks.
        shuffle_context: ablation, randomly permute the order of the four level
            tokens after the context blocks (one permutation per call, from
            torch's global generator).
        drop_path_rate: largest stochastic-depth rate (training only).
        res_depth: number of per-joint blocks over the six tokens (4 released).
        joint_depth: number of blocks over the 17 joints (4 released).
        embed_dim: token width c (128 released; a multiple of 8). Released
            weight files fit only 128; smaller widths are for quick experiments.

    The context blocks are always four, as in Context-Aware PoseFormer.
    """

    context_depth = 4

    def __init__(self, feature_channels=(32, 64, 128, 256), mask_pose=False, mask_context=False,
                 shuffle_context=False, drop_path_rate=0.2, res_depth=4, joint_depth=4, embed_dim=128):
        super().__init__()
        if len(feature_channels) != 4:
            raise ValueError(f"expected channels of 4 feature maps, got {tuple(feature_channels)}")
        if embed_dim < 8 or embed_dim % 8:
            raise ValueError(f"embed_dim must be a positive multiple of 8 (128 for released weights), got {embed_dim}")
        self.embed_dim = c = embed_dim
        self.feature_channels = tuple(feature_channels)
        self.mask_pose = mask_pose
        self.mask_context = mask_context
        self.shuffle_context = shuffle_context

        self.coord_embed = nn.Linear(2, c)
        self.feat_embed = nn.ModuleList(nn.Linear(ch, c) for ch in feature_channels)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, NUM_CONTEXT_TOKENS, NUM_JOINTS, c))
        self.context_blocks = nn.ModuleList(
            DeformableContextBlock(c, feature_channels, drop_path=r)
            for r in _drop_path_rates(drop_path_rate, self.context_depth)
        )

        self.coord_3d_embed = nn.Linear(3, c)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(c), nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.res_blocks = nn.ModuleList(
            TransformerBlock(c, drop_path=r) for r in _drop_path_rates(drop_path_rate, res_depth)
        )
        joint_dim = (NUM_CONTEXT_TOKENS + 1) * c
        self.joint_blocks = nn.ModuleList(
            TransformerBlock(joint_dim, drop_path=r) for r in _drop_path_rates(drop_path_rate, joint_depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(joint_dim), nn.Linear(joint_dim, 3))

    @property
    def context_drop_rates(self):
        """Stochastic-depth rates of the four context blocks, e.g. (0, 0.067, 0.133, 0.2) released."""
        return tuple(block.drop_path.rate for block in self.context_blocks)

    def encode_context(self, keypoints_2d, ref, features, keep=None):
        """Steps 1-2 of ``docs/formats.md`` (Networks, Denoiser) and the ablation switches.

        Args:
            keypoints_2d: (B, 1, J, 2) normalized screen coordinates.
            ref: (B, J, 2) crop positions (x, y) in [-1, 1].
            features: four maps (B, C_l, h_l, w_l).
            keep: optional (B, 4, 2) stochastic-depth decisions per context block and
                branch (``context.draw_keep_decisions``), applied in any mode; None: the
                blocks draw their own in training and apply none in evaluation.
        Returns:
            context (B, 5, J, c): pose token, then levels 1-4.
        """
        B = keypoints_2d.shape[0]
        if keypoints_2d.shape[1:] != (1, NUM_JOINTS, 2) or ref.shape != (B, NUM_JOINTS, 2):
            raise ValueError(f"expected keypoints_2d (B, 1, {NUM_JOINTS}, 2) and ref (B, {NUM_JOINTS}, 2), "
                             f"got {tuple(keypoints_2d.shape)} and {tuple(ref.shape)}")
        if len(features) != 4 or any(f.shape[:2] != (B, ch) for f, ch in zip(features, self.feature_channels)):
            raise ValueError(f"expected 4 feature maps (B={B}, C) with C = {self.feature_channels}, "
                             f"got {[tuple(f.shape) for f in features]}")
        pose = self.coord_embed(keypoints_2d)  # (B, 1, J, c)
        at_joints = ref[:, :, None, :]  # (B, J, 1, 2): one sample per joint
        levels = [embed(sample_features(f, at_joints, "zeros")[:, :, 0]) for f, embed in zip(features, self.feat_embed)]
        tokens = torch.cat([pose, torch.stack(levels, dim=1)], dim=1) + self.Spatial_pos_embed  # (B, 5, J, c)
        if keep is not None and keep.shape != (B, len(self.context_blocks), 2):
            raise ValueError(f"expected keep decisions (B={B}, {len(self.context_blocks)}, 2), got {tuple(keep.shape)}")
        for index, block in enumerate(self.context_blocks):
            tokens = block(tokens, ref, features, None if keep is None else keep[:, index])

        if self.mask_pose:
            tokens = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, 1:]], dim=1)
        if self.mask_context:
            tokens = torch.cat([tokens[:, :1], torch.zeros_like(tokens[:, 1:])], dim=1)
        if self.shuffle_context:
            order = torch.randperm(NUM_CONTEXT_TOKENS - 1) + 1
            tokens = torch.cat([tokens[:, :1], tokens[:, order.to(tokens.device)]], dim=1)
        return tokens

    def denoise(self, context, noisy_3d, t):
        """Steps 3-5 of ``docs/formats.md`` (Networks, Denoiser).

        Args:
            context: (B, 5, J, c) from ``encode_context``.
            noisy_3d: (B, 1, J, 3) or (B, H, 1, J, 3) noisy root-relative pose, metres.
            t: (B,) integer timesteps, shared by a sample's hypotheses.
        Returns:
            predicted noise, shaped like ``noisy_3d``.
        """
        B = context.shape[0]
        hypotheses = noisy_3d.dim() == 5
        if noisy_3d.shape[0] != B or noisy_3d.shape[-3:] != (1, NUM_JOINTS, 3) or noisy_3d.dim() not in (4, 5):
            raise ValueError(f"expected noisy_3d (B={B}, 1, {NUM_JOINTS}, 3) or (B, H, 1, {NUM_JOINTS}, 3), "
                             f"got {tuple(noisy_3d.shape)}")
        if t.shape != (B,):
            raise ValueError(f"expected timesteps t of shape ({B},), got {tuple(t.shape)}")
        H = noisy_3d.shape[1] if hypotheses else 1
        J = NUM_JOINTS

        time = self.time_mlp(t)  # (B, c)
        # The context tokens (plus time) are the same for a sample's hypotheses: add the time
        # embedding once per sample, then broadcast; tokens are laid out joint-major so that
        # the per-joint blocks need no permute.
        context = rearrange(context + time[:, None, None, :], "b s j c -> b j s c")
        context = repeat(context, "b j s c -> (b h) j s c", h=H)
        x = self.coord_3d_embed(noisy_3d.reshape(B * H, J, 1, 3))  # (B*H, J, 1, c)
        x = x + time.repeat_interleave(H, dim=0)[:, None, None, :]
        x = rearrange(torch.cat([x, context], dim=2), "bh j s c -> (bh j) s c")  # noisy-pose token first

        for block in self.res_blocks:
            x = block(x)
        x = rearrange(x, "(bh j) s c -> bh j (s c)", j=J)  # a joint's six tokens side by side
        for block in self.joint_blocks:
            x = block(x)
        noise = self.head(x)  # (B*H, J, 3)
        return noise.reshape(noisy_3d.shape)

    def forward(self, keypoints_2d, ref, noisy_3d, features, t):
        """Predicted noise shaped like ``noisy_3d``; see ``encode_context`` and ``denoise``."""
        return self.denoise(self.encode_context(keypoints_2d, ref, features), noisy_3d, t)

    def context_parameters(self):
        """Parameters of the layers that come from Context-Aware PoseFormer's file."""
        return [p for name, p in self.named_parameters() if name.startswith(CONTEXT_PREFIXES)]

    def freeze_context(self):
        """Turn off the gradients of ``context_parameters()``; returns self."""
        for p in self.context_parameters():
            p.requires_grad_(False)
        return self

    @property
    def context_frozen(self):
        return not any(p.requires_grad for p in self.context_parameters())

    def trainable_parameters(self):
        """Parameters that still take gradients (what the optimizer should get)."""
        return [p for p in self.parameters() if p.requires_grad]

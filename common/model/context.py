"""Image context around each 2D joint: Context-Aware PoseFormer's deformable blocks.

The denoiser describes every joint by five tokens: the embedded 2D keypoint
(the pose token) and one token per backbone level (the level tokens), first
sampled at the joint and then refined by deformable blocks that look around it.
This module holds the sampling helper, the deformable block and the two
layers it shares with the denoiser's transformer blocks (``Mlp``, ``DropPath``).

Coordinates: reference points and sample positions are (x, y) in [-1, 1] over
the 192x256 crop (crop pixels / (96, 128) - 1), grid-sampled with
``align_corners=True``.
"""
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample in training.

    Surviving samples are scaled by 1 / (1 - rate) so the expectation is
    unchanged; in eval mode (or with rate 0) it is the identity. The decisions
    are drawn from torch's global generator (timm's ``DropPath``, the
    original's), or given explicitly as ``keep`` (then in any mode).
    """

    def __init__(self, rate=0.0):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop-path rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x, keep=None):
        """
        Args:
            x: (B, ...) the residual branch's output.
            keep: optional (B,) decisions, 1 (or True) keeps a sample's branch, 0 drops it.
        """
        if keep is not None:
            if keep.shape != x.shape[:1]:
                raise ValueError(f"expected one keep decision per sample, shape ({x.shape[0]},), "
                                 f"got {tuple(keep.shape)}")
            mask = keep.to(x.dtype).reshape((x.shape[0],) + (1,) * (x.dim() - 1))  # (B, 1, ...)
            return x * mask / (1.0 - self.rate)
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"rate={self.rate}"


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def sample_features(feature_map, points, padding_mode):
    """Bilinearly sample a feature map at points.

    Args:
        feature_map: (B, C, h, w).
        points: (B, J, S, 2) positions (x, y) in [-1, 1] (align_corners=True).
        padding_mode: "zeros" or "border", as ``F.grid_sample``.
    Returns:
        (B, J, S, C).
    """
    sampled = F.grid_sample(feature_map, points, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return rearrange(sampled, "b c j s -> b j s c")


class DeformableContextBlock(nn.Module):
    """Updates the four level tokens by deformable sampling around each joint.

    The pose token passes through unchanged. For level l, the query
    LN(level_l + pose) predicts ``num_heads * num_samples`` offsets (tanh, in
    the [-1, 1] crop frame) and softmax weights (over the samples of a head);
    feature map l is sampled (border padding) at reference point + offset,
    each sample embedded by ``embed_proj[l]`` to dim / num_heads channels, the
    samples of each head weighted and summed, and the heads concatenated back
    to ``dim``. Then a pre-norm MLP; both updates are residual, with stochastic depth.

    Args:
        dim: token width c (128 in the released model).
        feature_channels: channels of the four feature maps.
        num_heads, num_samples: 4 x 4 in the released model.
        mlp_ratio: hidden width of the MLP over ``dim``.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(self, dim=128, feature_channels=(32, 64, 128, 256), num_heads=4, num_samples=4,
                 mlp_ratio=2.0, drop_path=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"token width {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.num_samples = num_samples
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attention_weights = nn.Linear(dim, num_heads * num_samples)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_samples * 2)
        self.embed_proj = nn.ModuleList(nn.Linear(c, dim // num_heads) for c in feature_channels)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.reset_deformable_parameters()

    def reset_deformable_parameters(self):
        """Start with zero attention logits and a star of offsets: head h points
        in direction 2*pi*h/num_heads, its sample s at 0.01 * (s + 1) along it."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float64) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (heads, 2)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        steps = 0.01 * torch.arange(1, self.num_samples + 1, dtype=torch.float64)
        bias = directions[:, None, :] * steps[None, :, None]  # (heads, samples, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)

    def forward(self, tokens, ref, features, keep=None):
        """
        Args:
            tokens: (B, 5, J, dim): pose token, then one token per level.
            ref: (B, J, 2) reference points (x, y) in [-1, 1].
            features: four maps (B, C_l, h_l, w_l).
            keep: optional (B, 2) stochastic-depth decisions of the deformable and the MLP
                branch (1 keeps); None draws them in training (``DropPath``).
        Returns:
            (B, 5, J, dim), the pose token unchanged.
        """
        pose, levels = tokens[:, :1], tokens[:, 1:]
        query = self.norm1(levels + pose)
        weights = rearrange(self.attention_weights(query), "b l j (heads s) -> b l j heads s",
                            heads=self.num_heads).softmax(dim=-1)
        offsets = rearrange(self.sampling_offsets(query).tanh(), "b l j (n xy) -> b l j n xy", xy=2)
        positions = ref[:, None, :, None, :] + offsets  # (B, 4, J, heads * samples, 2)

        attended = []
        for level, (feature_map, embed) in enumerate(zip(features, self.embed_proj)):
            samples = embed(sample_features(feature_map, positions[:, level], "border"))  # (B, J, heads * samples, dim / heads)
            samples = rearrange(samples, "b j (heads s) d -> b j heads s d", heads=self.num_heads)
            per_head = (samples * weights[:, level, ..., None]).sum(dim=3)  # (B, J, heads, dim / heads)
            attended.append(rearrange(per_head, "b j heads d -> b j (heads d)"))
        branch_keep = (None, None) if keep is None else (keep[:, 0], keep[:, 1])
        levels = levels + self.drop_path(torch.stack(attended, dim=1), branch_keep[0])  # (B, 4, J, dim)
        levels = levels + self.drop_path(self.mlp(self.norm2(levels)), branch_keep[1])
        return torch.cat([pose, levels], dim=1)


def draw_keep_decisions(rates, batch_size, generator=None, device=None):
    """Stochastic-depth decisions of the context blocks for ``batch_size`` samples.

    One Bernoulli(1 - rate) per sample, block and branch (the deformable and the
    MLP branch), the law ``DropPath`` draws in training: shared over joints and levels.

    Args:
        rates: the blocks' drop rates, e.g. ``SnapPoseDenoiser.context_drop_rates``.
        generator: a ``torch.Generator`` (None: torch's global one).
    Returns:
        (batch_size, len(rates), 2) bool, True where the branch is kept.
    """
    keep_probability = 1.0 - torch.tensor(rates, dtype=torch.float64, device=device)  # (blocks,)
    uniform = torch.rand((batch_size, len(rates), 2), generator=generator, dtype=torch.float64, device=device)
    return uniform < keep_probability[None, :, None]

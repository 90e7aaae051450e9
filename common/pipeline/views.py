"""The flip test's two views of a test batch, and the initial noise of each sample.

A test batch holds every sample twice: view 0 the original, view 1 its mirror
image (``common.data.samples.flip_test_views``). The networks see the views
stacked view-major, and the mirror view's hypotheses are un-flipped and averaged
with the original's afterwards. The initial noise of a sample is seeded by its
key, so hypotheses do not depend on the batch size or the number of processes.
"""
import zlib

import torch
from einops import rearrange

from common.core.skeleton import NUM_JOINTS, ROOT_JOINT, flip_pose_3d
from common.data.samples import device_images


def view_count(flip):
    """2 with the flip test (original and mirror), else 1."""
    return 2 if flip else 1


def initial_noise(keys, hypotheses, seed, device):
    """x_T ~ N(0, I) of shape (B, H, 1, 17, 3), each sample's drawn from a generator seeded by its key."""
    noise = []
    for key in keys:
        generator = torch.Generator().manual_seed((zlib.crc32(str(key).encode()) + 7919 * seed) % 2**63)
        noise.append(torch.randn((hypotheses, 1, NUM_JOINTS, 3), generator=generator))
    return torch.stack(noise).to(device)  # (B, H, 1, 17, 3)


def stack_views(batch, flip, device):
    """A test batch's views, view-major (the first B rows the originals, the next B their mirrors).

    Returns:
        images (V*B, 3, 256, 192), keypoints (V*B, 1, 17, 2), ref (V*B, 17, 2) on ``device``;
        V = 2 with ``flip``, else 1.
    """
    views = view_count(flip)
    images = device_images(batch, device, test=True)[:, :views]
    keypoints = batch["keypoints_2d"][:, :views].to(device)
    ref = batch["ref"][:, :views].to(device)
    images = rearrange(images, "b v c h w -> (v b) c h w")
    keypoints = rearrange(keypoints, "b v j xy -> (v b) 1 j xy")
    ref = rearrange(ref, "b v j xy -> (v b) j xy")
    return images, keypoints, ref


def merge_views(sample, flip):
    """Sampled poses of ``stack_views``' rows (V*B, H, 1, 17, 3) -> (B, H, 17, 3), root exactly 0.

    With ``flip`` the mirror view's hypotheses are un-flipped and averaged
    with the original's, hypothesis by hypothesis.
    """
    sample = rearrange(sample[:, :, 0], "(v b) h j xyz -> v b h j xyz", v=view_count(flip))
    poses = sample[0]
    if flip:
        poses = (poses + flip_pose_3d(sample[1])) / 2
    poses = poses.clone()
    poses[..., ROOT_JOINT, :] = 0
    return poses

"""The 17-joint Human3.6M skeleton (VideoPose3D order), its flip, action names and the two datasets.

Every array in SnapPose that has a joint axis uses this order.
"""
import numpy as np
import torch

# The datasets SnapPose reads, as configs, shards and command lines name them.
DATASETS = ("h36m", "mpi")

NUM_JOINTS = 17

JOINT_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)

# Parent of each joint in the kinematic tree; the root has parent -1.
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

LEFT_JOINTS = (4, 5, 6, 11, 12, 13)
RIGHT_JOINTS = (1, 2, 3, 14, 15, 16)
ROOT_JOINT = 0

# Index permutation that swaps left and right joints; it is its own inverse.
FLIP_PERMUTATION = list(range(NUM_JOINTS))
for _l, _r in zip(LEFT_JOINTS, RIGHT_JOINTS):
    FLIP_PERMUTATION[_l], FLIP_PERMUTATION[_r] = _r, _l
FLIP_PERMUTATION = tuple(FLIP_PERMUTATION)

# MPI-INF-3DHP's official 14 evaluation joints: all but pelvis, spine and head.
MPI_EVAL_JOINTS = tuple(j for j in range(NUM_JOINTS) if j not in (0, 7, 10))

# Human3.6M action numbers 2-16 as they appear in shard keys (``act_XX``).
H36M_ACTIONS = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning",
    7: "Photo", 8: "Posing", 9: "Purchases", 10: "Sitting", 11: "SittingDown",
    12: "Smoking", 13: "Waiting", 14: "WalkDog", 15: "WalkTogether", 16: "Walking",
}
H36M_TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
H36M_TEST_SUBJECTS = (9, 11)


def _swap_lr(x):
    """Reorder the joint axis (second to last) so that left and right swap."""
    return x[..., list(FLIP_PERMUTATION), :]


def flip_pose_3d(pose):
    """Mirror 3D poses (..., 17, 3) in camera x and swap left and right joints."""
    sign = [-1.0, 1.0, 1.0]
    if isinstance(pose, torch.Tensor):
        sign = torch.tensor(sign, dtype=pose.dtype, device=pose.device)
    else:
        sign = np.asarray(sign, dtype=pose.dtype)
    return _swap_lr(pose * sign)


def flip_keypoints_normalized(keypoints):
    """Mirror 2D keypoints (..., 17, 2) in normalized screen coordinates: x -> -x, swap sides."""
    flipped = keypoints.clone() if isinstance(keypoints, torch.Tensor) else keypoints.copy()
    flipped[..., 0] = -flipped[..., 0]
    return _swap_lr(flipped)


def flip_keypoints_crop(keypoints, width=192):
    """Mirror 2D keypoints (..., 17, 2) in crop pixels: x -> width - x - 1, swap sides."""
    flipped = keypoints.clone() if isinstance(keypoints, torch.Tensor) else keypoints.copy()
    flipped[..., 0] = width - flipped[..., 0] - 1
    return _swap_lr(flipped)

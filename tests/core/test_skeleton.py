"""Skeleton definitions and flips (numpy and torch)."""
import numpy as np
import pytest
import torch

from common.core.skeleton import (
    FLIP_PERMUTATION,
    H36M_ACTIONS,
    H36M_TEST_SUBJECTS,
    H36M_TRAIN_SUBJECTS,
    JOINT_NAMES,
    LEFT_JOINTS,
    MPI_EVAL_JOINTS,
    NUM_JOINTS,
    PARENTS,
    RIGHT_JOINTS,
    ROOT_JOINT,
    flip_keypoints_crop,
    flip_keypoints_normalized,
    flip_pose_3d,
)


def test_joint_tables_are_consistent():
    assert len(JOINT_NAMES) == len(PARENTS) == NUM_JOINTS == 17
    assert PARENTS[ROOT_JOINT] == -1 and ROOT_JOINT == 0
    assert all(0 <= PARENTS[j] < j for j in range(1, NUM_JOINTS))
    assert all(JOINT_NAMES[j].startswith("left_") for j in LEFT_JOINTS)
    assert all(JOINT_NAMES[j].startswith("right_") for j in RIGHT_JOINTS)
    for left, right in zip(LEFT_JOINTS, RIGHT_JOINTS):
        assert JOINT_NAMES[left][5:] == JOINT_NAMES[right][6:]
        assert FLIP_PERMUTATION[left] == right and FLIP_PERMUTATION[right] == left
    assert [FLIP_PERMUTATION[p] for p in FLIP_PERMUTATION] == list(range(NUM_JOINTS))


def test_dataset_tables():
    assert len(MPI_EVAL_JOINTS) == 14 and not {0, 7, 10} & set(MPI_EVAL_JOINTS)
    assert sorted(H36M_ACTIONS) == list(range(2, 17))
    assert (H36M_ACTIONS[2], H36M_ACTIONS[13], H36M_ACTIONS[16]) == ("Directions", "Waiting", "Walking")
    assert set(H36M_TRAIN_SUBJECTS) == {1, 5, 6, 7, 8} and set(H36M_TEST_SUBJECTS) == {9, 11}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_flips_are_involutions(backend):
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(4, 17, 3)).astype(np.float32)
    normalized = rng.uniform(-1, 1, size=(4, 17, 2)).astype(np.float32)
    crop = rng.uniform(0, 191, size=(4, 17, 2)).astype(np.float32)
    if backend == "torch":
        pose, normalized, crop = map(torch.from_numpy, (pose, normalized, crop))
    original = [x.copy() if backend == "numpy" else x.clone() for x in (pose, normalized, crop)]
    np.testing.assert_array_equal(np.asarray(flip_pose_3d(flip_pose_3d(pose))), np.asarray(pose))
    np.testing.assert_array_equal(np.asarray(flip_keypoints_normalized(flip_keypoints_normalized(normalized))),
                                  np.asarray(normalized))
    np.testing.assert_allclose(np.asarray(flip_keypoints_crop(flip_keypoints_crop(crop))), np.asarray(crop),
                               atol=1e-5)
    for before, after in zip(original, (pose, normalized, crop)):  # inputs are not modified in place
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


def test_flip_mirrors_and_swaps_sides():
    pose = np.random.default_rng(1).normal(size=(17, 3))
    flipped = flip_pose_3d(pose)
    np.testing.assert_array_equal(flipped[LEFT_JOINTS, 0], -pose[RIGHT_JOINTS, 0])
    np.testing.assert_array_equal(flipped[LEFT_JOINTS, 1:], pose[RIGHT_JOINTS, 1:])
    np.testing.assert_array_equal(flipped[7], pose[7] * [-1, 1, 1])  # the spine keeps its index
    bones = lambda p: np.linalg.norm(p[1:] - p[list(PARENTS[1:])], axis=-1)  # noqa: E731
    np.testing.assert_allclose(np.sort(bones(flipped)), np.sort(bones(pose)))
    crop = np.random.default_rng(2).uniform(0, 191, size=(17, 2))
    np.testing.assert_allclose(flip_keypoints_crop(crop)[7], [191 - crop[7, 0], crop[7, 1]])
    np.testing.assert_allclose(flip_keypoints_crop(crop)[LEFT_JOINTS, 0], 191 - crop[RIGHT_JOINTS, 0])

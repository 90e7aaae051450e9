"""Normalized screen coordinates, the HRNet crop transform and the bilinear crop warp.

Its speed is measured by ``python -m benchmarks.crop``, not here: a shared CI machine's clock
says nothing about the code.
"""
import numpy as np
import pytest

from common.core.geometry import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_affine,
    bbox_center_scale,
    crop_image,
    crop_matrix,
    image_coordinates,
    invert_affine,
    normalize_screen_coordinates,
)


def test_normalized_screen_coordinates_known_values_and_round_trip():
    w, h = 1000, 1002
    corners = np.array([[0.0, 0.0], [w, h], [w / 2, h / 2]])
    np.testing.assert_allclose(normalize_screen_coordinates(corners, w, h),
                               [[-1, -h / w], [1, h / w], [0, 0]], atol=1e-12)
    points = np.random.default_rng(0).uniform(0, 1000, size=(5, 17, 2))
    np.testing.assert_allclose(image_coordinates(normalize_screen_coordinates(points, w, h), w, h), points,
                               atol=1e-9)


def test_crop_matrix_maps_box_onto_crop():
    center, scale = np.array([300.0, 250.0]), np.array([1.5, 2.0])
    matrix = crop_matrix(center, scale)
    box_half = (scale[0] * 200 - 1) / 2
    frame = np.array([center, center - [box_half, 0], center + [box_half, 0]])
    np.testing.assert_allclose(apply_affine(frame, matrix),
                               [[(CROP_WIDTH - 1) / 2, (CROP_HEIGHT - 1) / 2],
                                [0, (CROP_HEIGHT - 1) / 2], [CROP_WIDTH - 1, (CROP_HEIGHT - 1) / 2]], atol=1e-9)
    assert matrix[0, 1] == matrix[1, 0] == 0 and matrix[0, 0] == matrix[1, 1]  # similarity, no rotation
    points = np.random.default_rng(1).uniform(0, 500, size=(17, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(points, matrix), invert_affine(matrix)), points, atol=1e-9)
    with pytest.raises(ValueError, match="scale"):
        crop_matrix(center, [0.0, 0.0])


def test_bbox_center_scale_covers_points_with_crop_aspect():
    points = np.random.default_rng(2).uniform([100, 50], [180, 300], size=(17, 2))
    center, scale = bbox_center_scale(points)
    size = scale * 200
    assert size[0] / size[1] == pytest.approx(CROP_WIDTH / CROP_HEIGHT, rel=1e-6)
    assert np.all(np.abs(points - center) <= size / 2 / 1.25 + 1e-3)
    crop = apply_affine(points, crop_matrix(center, scale))
    assert crop.min() >= 0 and crop[:, 0].max() <= CROP_WIDTH - 1 and crop[:, 1].max() <= CROP_HEIGHT - 1


def test_crop_image_puts_frame_points_at_crop_points():
    frame = np.zeros((400, 500, 3), dtype=np.uint8)
    frame[200, 260] = 255
    center, scale = np.array([250.0, 210.0]), np.array([0.9, 1.2])
    crop = crop_image(frame, center, scale)
    assert crop.dtype == np.uint8 and crop.shape == (CROP_HEIGHT, CROP_WIDTH, 3)
    ys, xs = np.nonzero(crop[..., 0])
    weights = crop[ys, xs, 0].astype(float)
    centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(centroid, apply_affine([260.0, 200.0], crop_matrix(center, scale)), atol=0.05)


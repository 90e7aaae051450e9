"""The fast loader path: OpenCV crops, OpenCV JPEG decoding, uint8 batches normalised on the device."""
import io
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from common.core.geometry import crop_image, crop_matrix
from common.data.decode import decode_rgb
from common.data.loader import build_loader, default_num_workers
from common.data.samples import IMAGE_MEAN, IMAGE_STD, device_images
from tests.data_helpers import encode_image


def original_levels(normalised):
    """The original's 8-bit crop back from its stored (2, 3, H, W) normalised float16 image: (2, H, W, 3) ints."""
    levels = (normalised.float().numpy().transpose(0, 2, 3, 1) * IMAGE_STD + IMAGE_MEAN) * 255
    assert np.abs(levels - np.rint(levels)).max() < 0.25, "the stored image is not an 8-bit crop"
    return np.rint(levels).astype(np.int64)


def todays_normalisation(crops):
    """(..., H, W, 3) uint8 -> (..., 3, H, W): the float32 NumPy steps the reader used before (the original's)."""
    scaled = (crops.numpy().astype(np.float32) / 255 - IMAGE_MEAN) / IMAGE_STD
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(scaled, -1, -3)))


def test_uint8_crops_match_the_originals_crops(parity_dir):
    """Crops of the loader's uint8 path within 1 grey level of the original's cv2.warpAffine crops."""
    expected = torch.load(parity_dir / "wds_expected.pt")["h36m"]
    batch = next(iter(build_loader(parity_dir / "wds_h36m", "h36m", train=False, batch_size=8)))
    assert "image" not in batch and batch["crop"].dtype == torch.uint8
    assert batch["crop"].shape == (len(expected), 256, 192, 3)
    for crop, (image, *_) in zip(batch["crop"], expected):
        original = original_levels(image)
        ours = crop.numpy().astype(np.int64)
        assert np.abs(ours - original[0]).max() <= 1
        assert np.abs(ours[:, ::-1] - original[1]).max() <= 1


def test_device_images_equal_todays_normalised_batch(parity_dir):
    normalised = next(iter(build_loader(parity_dir / "wds_h36m", "h36m", train=False, batch_size=8, uint8_crops=False)))
    crops = next(iter(build_loader(parity_dir / "wds_h36m", "h36m", train=False, batch_size=8)))
    images = device_images(crops, "cpu", test=True)  # (B, 2, 3, H, W)
    today = todays_normalisation(torch.stack([crops["crop"], crops["crop"].flip(2)], dim=1))
    torch.testing.assert_close(images, today, rtol=0, atol=0)
    torch.testing.assert_close(images, normalised["image"], rtol=0, atol=0)
    for name in ("keypoints_2d", "keypoints_2d_crop", "ref", "keypoints_3d"):
        assert torch.equal(crops[name], normalised[name])


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_training_batches_flip_crops_with_their_poses(tiny_shards, dataset):
    kwargs = dict(train=True, batch_size=4, seed=3, shuffle_buffer=0)
    normalised = next(iter(build_loader(tiny_shards[dataset], dataset, uint8_crops=False, **kwargs)))
    crops = next(iter(build_loader(tiny_shards[dataset], dataset, **kwargs)))
    assert crops["crop"].dtype == torch.uint8 and crops["crop"].shape == (4, 256, 192, 3)
    torch.testing.assert_close(device_images(crops, "cpu", test=False), normalised["image"], rtol=0, atol=0)
    assert torch.equal(crops["keypoints_3d"], normalised["keypoints_3d"])


def test_opencv_crop_is_the_originals_call():
    frame = np.random.default_rng(5).integers(0, 256, size=(300, 280, 3), dtype=np.uint8)
    center, scale = np.array([120.3, 170.8]), np.array([0.7, 0.9])
    matrix = crop_matrix(center, scale)
    original = cv2.warpAffine(frame, matrix, (192, 256), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop_image(frame, center, scale), original)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_decode_rgb_gives_pillows_pixels(mode):
    pixels = np.random.default_rng(6).integers(0, 256, size=(61, 83, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(stream, "JPEG", quality=90)
    data = stream.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        pillow = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(decode_rgb(data), pillow)


def test_decode_rgb_ignores_exif_orientation_like_pillow():
    pixels = np.random.default_rng(7).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, "JPEG", quality=95, exif=exif)
    decoded = decode_rgb(stream.getvalue())
    assert decoded.shape == (40, 30, 3)
    with Image.open(io.BytesIO(stream.getvalue())) as image:
        np.testing.assert_array_equal(decoded, np.asarray(image))


def test_decode_rgb_refuses_a_truncated_jpeg():
    data = encode_image(np.full((64, 64, 3), 128, dtype=np.uint8), "jpg")
    with pytest.raises((OSError, ValueError)):
        decode_rgb(data[: len(data) // 3])


def test_default_num_workers_follows_the_available_cores():
    assert default_num_workers() == max(len(os.sched_getaffinity(0)) - 1, 1)

"""Parity with the original implementation's test-time samples of released-layout shards."""
import pytest
import torch

import webdataset as wds
from common.data.loader import build_loader
from common.data.samples import IMAGE_STD, decode_sample

# The original's crop is an 8-bit bilinear warp; 2 grey levels on average is the
# agreed bound, and the reference images are stored as float16 (2e-3).
CROP_MEAN_TOL = 2 / 255 / float(IMAGE_STD.min()) + 2e-3


@pytest.fixture(scope="module")
def expected(parity_dir):
    return torch.load(parity_dir / "wds_expected.pt")


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_test_time_samples_match_original(parity_dir, expected, dataset):
    batches = list(build_loader(parity_dir / f"wds_{dataset}", dataset, train=False, batch_size=2,
                                 uint8_crops=False))
    assert [len(b["key"]) for b in batches] == [2, 1]
    reference = expected[dataset]
    index = 0
    for batch in batches:
        for j in range(len(batch["key"])):
            image, keypoints_3d, keypoints_2d, keypoints_crop = reference[index]
            index += 1
            diff = (batch["image"][j] - image.float()).abs()
            assert diff.mean() < CROP_MEAN_TOL, f"{batch['key'][j]}: mean crop difference {diff.mean():.4f}"
            # Where the warp rounds to a different grey level, it is by one level at most.
            assert diff.max() < 1.5 / 255 / float(IMAGE_STD.min()) + 2e-3
            torch.testing.assert_close(batch["keypoints_3d"][j], keypoints_3d, rtol=0, atol=0)
            torch.testing.assert_close(batch["keypoints_2d"][j], keypoints_2d, rtol=0, atol=0)
            torch.testing.assert_close(batch["keypoints_2d_crop"][j], keypoints_crop, rtol=0, atol=0)
    assert index == len(reference)


def test_decode_sample_matches_loader(parity_dir, expected):
    """decode_sample on a raw sample gives what the loader batches."""
    raw = next(iter(wds.DataPipeline(wds.SimpleShardList([str(parity_dir / "wds_h36m" / "data-000000.tar")]),
                                     wds.tarfile_to_samples())))
    decoded = decode_sample(raw, "h36m", train=False)
    image, keypoints_3d, _, _ = expected["h36m"][0]
    assert decoded["image"].shape == (2, 3, 256, 192)
    assert (decoded["image"] - image.float()).abs().mean() < CROP_MEAN_TOL
    assert torch.equal(decoded["keypoints_3d"], keypoints_3d)

"""Reading released-layout shards: decode_sample, find_shards and build_loader on tiny written shards."""
import logging
import pickle

import numpy as np
import pytest
import torch
from data_helpers import (
    MARKER_RADIUS,
    encode_image,
    h36m_key,
    make_h36m_sample,
    make_mpi_sample,
    mpi_key,
    write_shard,
    write_split,
)
from reference import mirror_points

import webdataset as wds
from common.core.geometry import CROP_WIDTH, apply_affine, crop_matrix, image_coordinates
from common.data.counts import samples_per_pass
from common.data.loader import build_loader, find_shards
from common.data.samples import (
    IMAGE_MEAN,
    IMAGE_STD,
    ShardDataError,
    decode_sample,
    parse_key,
    read_pose_3d,
    reference_points,
)


def raw(sample, shard="mem.tar"):
    """A written-then-read sample: pyd pickled, shard URL attached."""
    sample = dict(sample, __url__=shard)
    sample["pyd"] = pickle.dumps(sample["pyd"])
    return sample


def grey(image):
    """Normalized (3, H, W) tensor -> (H, W) mean grey level in 0-255."""
    rgb = image.numpy() * IMAGE_STD[:, None, None] + IMAGE_MEAN[:, None, None]
    return rgb.mean(0) * 255


@pytest.fixture(scope="module")
def h36m_sample():
    return make_h36m_sample(h36m_key(9, 7, 123, subaction=2, camera=3), np.random.default_rng(1))


@pytest.fixture(scope="module")
def mpi_sample():
    return make_mpi_sample(mpi_key(5, 42), np.random.default_rng(2))


# --------------------------------------------------------------------------- decode_sample

@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_decode_shapes(dataset, h36m_sample, mpi_sample):
    sample = raw(h36m_sample if dataset == "h36m" else mpi_sample)
    test = decode_sample(sample, dataset, train=False)
    assert test["image"].shape == (2, 3, 256, 192) and test["image"].dtype == torch.float32
    assert test["keypoints_3d"].shape == (1, 17, 3)
    assert test["keypoints_2d"].shape == test["keypoints_2d_crop"].shape == test["ref"].shape == (2, 17, 2)
    train = decode_sample(sample, dataset, train=True, rng=np.random.default_rng(0))
    assert train["image"].shape == (3, 256, 192)
    assert train["keypoints_2d"].shape == train["keypoints_2d_crop"].shape == (17, 2)


def test_keys_parse(h36m_sample, mpi_sample):
    assert parse_key("s_11_act_16_subact_02_ca_04_001234") == dict(
        subject=11, action=16, subaction=2, camera=4, frame=1234)
    assert parse_key("TS6_000017") == dict(subject=6, action=None, frame=17)
    assert parse_key("some_other_key") == dict(subject=None, action=None)
    decoded = decode_sample(raw(h36m_sample), "h36m", train=False)
    assert (decoded["key"], decoded["subject"], decoded["action"]) == (h36m_sample["__key__"], 9, 7)
    decoded = decode_sample(raw(mpi_sample), "mpi", train=False)
    assert (decoded["subject"], decoded["action"]) == (5, None)


def test_units_root_relative_metres(h36m_sample, mpi_sample):
    h36m = decode_sample(raw(h36m_sample), "h36m", train=False)["keypoints_3d"][0]
    joints = torch.from_numpy(h36m_sample["pyd"]["joints_3d"])
    torch.testing.assert_close(h36m, joints - joints[0], rtol=0, atol=0)
    mpi = decode_sample(raw(mpi_sample), "mpi", train=False)["keypoints_3d"][0]
    millimetres = torch.from_numpy(mpi_sample["pyd"]["joints_3d"]).double()
    torch.testing.assert_close(mpi.double(), (millimetres - millimetres[0]) / 1000, rtol=0, atol=1e-6)
    for pose in (h36m, mpi):
        assert torch.equal(pose[0], torch.zeros(3))
        # A person spans metres, not millimetres.
        assert 0.05 < pose.norm(dim=-1).max() < 5


def test_test_view_is_flip_of_original(h36m_sample):
    decoded = decode_sample(raw(h36m_sample), "h36m", train=False)
    image, keypoints, crop = decoded["image"], decoded["keypoints_2d"], decoded["keypoints_2d_crop"]
    assert torch.equal(image[1], image[0].flip(-1))
    # The mirror view's joints are the original's, x mirrored and left and right swapped
    # (the table is written out in tests/reference.py, not taken from common.core.skeleton).
    np.testing.assert_allclose(keypoints[1].numpy(), mirror_points(keypoints[0].numpy()), rtol=0, atol=0)
    np.testing.assert_allclose(crop[1].numpy(), mirror_points(crop[0].numpy(), CROP_WIDTH), rtol=0, atol=1e-5)
    # A joint by name: the mirror view's left wrist (13) is the original's right wrist (16), x negated.
    assert keypoints[1][13, 0] == -keypoints[0][16, 0] and keypoints[1][13, 1] == keypoints[0][16, 1]


def test_train_flip_moves_everything_together(mpi_sample):
    test = decode_sample(raw(mpi_sample), "mpi", train=False)
    rng = np.random.default_rng(3)
    flipped = 0
    for _ in range(20):
        train = decode_sample(raw(mpi_sample), "mpi", train=True, rng=rng)
        view = 1 if torch.equal(train["image"], test["image"][1]) else 0
        assert torch.equal(train["image"], test["image"][view])
        assert torch.equal(train["keypoints_2d"], test["keypoints_2d"][view])
        assert torch.equal(train["keypoints_2d_crop"], test["keypoints_2d_crop"][view])
        expected_3d = mirror_points(test["keypoints_3d"].numpy()) if view else test["keypoints_3d"].numpy()
        np.testing.assert_allclose(train["keypoints_3d"].numpy(), expected_3d, rtol=0, atol=0)
        flipped += view
    assert 3 <= flipped <= 17  # p = 0.5 over 20 draws


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_crop_keypoints_land_on_drawn_joints(dataset, h36m_sample, mpi_sample):
    """Markers drawn at the frame's joints appear at keypoints_2d_crop in the decoded crop."""
    decoded = decode_sample(raw(h36m_sample if dataset == "h36m" else mpi_sample), dataset, train=False)
    for view in range(2):
        levels = grey(decoded["image"][view])
        points = decoded["keypoints_2d_crop"][view].numpy()
        ys, xs = np.mgrid[0:levels.shape[0], 0:levels.shape[1]]
        bright = levels > 150
        for x, y in points:
            assert levels[int(round(y)), int(round(x))] > 150, f"no marker at ({x:.1f}, {y:.1f}) in view {view}"
        # Every bright pixel lies on some joint's marker (the crop shrinks or grows it by < 2x).
        distance = np.min(np.hypot(xs[..., None] - points[:, 0], ys[..., None] - points[:, 1]), axis=-1)
        assert distance[bright].max() < 2 * MARKER_RADIUS + 1.5
        # Isolated markers are centred on their keypoint to within a pixel.
        for j, (x, y) in enumerate(points):
            others = np.delete(points, j, axis=0)
            if np.hypot(*(others - (x, y)).T).min() < 6 * MARKER_RADIUS:
                continue
            window = bright & (np.hypot(xs - x, ys - y) < 3 * MARKER_RADIUS)
            assert abs(xs[window].mean() - x) < 1 and abs(ys[window].mean() - y) < 1


def test_normalized_pixel_and_crop_coordinates_agree(h36m_sample):
    decoded = decode_sample(raw(h36m_sample), "h36m", train=False)
    pyd = h36m_sample["pyd"]
    frame_pixels = image_coordinates(decoded["keypoints_2d"][0].numpy().astype(np.float64), 320, 240)
    crop = apply_affine(frame_pixels, crop_matrix(pyd["center"], pyd["scale"]))
    np.testing.assert_allclose(crop, decoded["keypoints_2d_crop"][0].numpy(), atol=1e-3)
    ref = decoded["ref"]
    torch.testing.assert_close(ref, decoded["keypoints_2d_crop"] / torch.tensor([96.0, 128.0]) - 1)
    torch.testing.assert_close(reference_points(torch.tensor([[0.0, 0.0], [192.0, 256.0]])),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_unknown_dataset_is_rejected(h36m_sample):
    with pytest.raises(ValueError, match="h36m"):
        decode_sample(raw(h36m_sample), "h36", train=False)


# --------------------------------------------------------------------------- bad samples

def broken(sample, what):
    sample = dict(sample, pyd=dict(sample["pyd"]))
    if what == "image":
        sample["jpg"] = sample["jpg"][:200]
    elif what == "no image":
        del sample["jpg"]
    elif what == "field":
        del sample["pyd"]["center"]
    elif what == "shape":
        sample["pyd"]["joints_3d"] = sample["pyd"]["joints_3d"][:16]
    elif what == "nan":
        sample["pyd"]["joints_2d_cpn"] = sample["pyd"]["joints_2d_cpn"].copy()
        sample["pyd"]["joints_2d_cpn"][3, 0] = np.nan
    return sample


BAD_CASES = {"image": "does not decode", "no image": "no image", "field": "no field 'center'",
             "shape": r"shape \(16, 3\), expected \(17, 3\)", "nan": "NaN"}


@pytest.mark.parametrize("what", sorted(BAD_CASES))
def test_bad_sample_names_shard_and_key(what, h36m_sample):
    with pytest.raises(ShardDataError, match=BAD_CASES[what]) as info:
        decode_sample(raw(broken(h36m_sample, what), shard="shards/data-000007.tar"), "h36m", train=False)
    assert "shards/data-000007.tar" in str(info.value) and h36m_sample["__key__"] in str(info.value)
    assert info.value.key == h36m_sample["__key__"]


def test_mpi_image_of_wrong_size_is_rejected(mpi_sample):
    rng = np.random.default_rng(0)
    sample = dict(mpi_sample, png=encode_image(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), "png"))
    with pytest.raises(ShardDataError, match="192x256"):
        decode_sample(raw(sample), "mpi", train=False)


@pytest.fixture()
def bad_shards(tmp_path, h36m_sample):
    """Two shards: a good one (3 samples) and one with each kind of bad sample among 2 good ones."""
    rng = np.random.default_rng(5)
    good = [make_h36m_sample(h36m_key(9, 2, i), rng) for i in range(5)]
    write_shard(tmp_path / "data-000000.tar", good[:3])
    bad = [dict(broken(h36m_sample, what), __key__=h36m_key(11, 3, i)) for i, what in enumerate(sorted(BAD_CASES))]
    write_shard(tmp_path / "data-000001.tar", [good[3]] + bad + [good[4]])
    return tmp_path


def test_bad_shard_raises_by_default(bad_shards):
    loader = build_loader(bad_shards, "h36m", train=False, batch_size=4)
    with pytest.raises(ShardDataError, match="data-000001.tar, sample 's_11_act_03"):
        list(loader)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_bad_counts_and_reports(bad_shards, caplog, num_workers):
    loader = build_loader(bad_shards, "h36m", train=False, batch_size=4, skip_bad=True, num_workers=num_workers)
    with caplog.at_level(logging.WARNING, logger="common.data.loader"):
        keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(h36m_key(9, 2, i) for i in range(5))
    assert len(loader.skipped) == len(BAD_CASES)
    assert {r.key for r in loader.skipped} == {h36m_key(11, 3, i) for i in range(len(BAD_CASES))}
    assert all(r.shard.endswith("data-000001.tar") for r in loader.skipped)
    assert "skipped 5 bad samples and 0 unreadable shard tails" in caplog.text and h36m_key(11, 3, 0) in caplog.text


@pytest.fixture()
def truncated_shards(tmp_path):
    paths = write_split(tmp_path, "h36m", [3, 4], seed=7)
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[: len(data) // 2 + 100])  # cut inside a member
    return tmp_path


def test_truncated_tar_raises(truncated_shards):
    with pytest.raises(ShardDataError, match="data-000000.tar: cannot read the tar file") as info:
        list(build_loader(truncated_shards, "h36m", train=False, batch_size=2))
    assert len(info.value.args) == 1


def test_truncated_tar_is_skipped(truncated_shards):
    loader = build_loader(truncated_shards, "h36m", train=False, batch_size=2, skip_bad=True)
    keys = [k for batch in loader for k in batch["key"]]
    assert set(h36m_key(9, 2 + i % 15, i) for i in range(3, 7)) <= set(keys)  # the second shard is whole
    assert 4 <= len(keys) < 7
    assert loader.skipped and loader.skipped[0].shard.endswith("data-000000.tar")


def test_missing_shard_file_names_it(tmp_path):
    write_split(tmp_path, "mpi", [2])
    urls = [str(tmp_path / "data-000000.tar"), str(tmp_path / "data-000009.tar")]
    loader = build_loader(urls[:1], "mpi", train=False, batch_size=2)
    loader.urls = urls  # the file vanished after listing
    with pytest.raises(ShardDataError, match="data-000009.tar"):
        list(loader)


# --------------------------------------------------------------------------- finding shards

def test_find_shards_sources(tmp_path):
    train = write_split(tmp_path / "train", "mpi", [1, 1, 1])
    test = write_split(tmp_path / "test", "mpi", [1])
    assert find_shards(tmp_path, "train") == train
    assert find_shards(tmp_path / "test") == test
    assert find_shards(str(tmp_path / "train" / "data-{000000..000002}.tar")) == train
    assert find_shards(str(tmp_path / "train" / "*.tar")) == train
    assert find_shards([train[2], test[0]]) == [train[2], test[0]]
    assert find_shards("pipe:cat data-{0..1}.tar") == ["pipe:cat data-0.tar", "pipe:cat data-1.tar"]
    with pytest.raises(FileNotFoundError, match="holds the subfolders \\['test', 'train'\\]: name one of them"):
        find_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match="1 of the 4 shards"):
        find_shards(str(tmp_path / "train" / "data-{000000..000003}.tar"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_shards(tmp_path / "nowhere")


def test_loader_reads_pipe_urls(tmp_path):
    paths = write_split(tmp_path, "mpi", [2, 1])
    loader = build_loader([f"pipe:cat {p}" for p in paths], "mpi", train=False, batch_size=8)
    assert [len(b["key"]) for b in loader] == [3]


def test_loader_default_split(tmp_path):
    write_split(tmp_path / "train", "h36m", [2])
    write_split(tmp_path / "validation", "h36m", [1])
    assert sum(len(b["key"]) for b in build_loader(tmp_path, "h36m", train=True, batch_size=4)) == 2
    assert sum(len(b["key"]) for b in build_loader(tmp_path, "h36m", train=False, batch_size=4)) == 1


# --------------------------------------------------------------------------- batches and splitting

def test_batches_are_collated(tmp_path):
    write_split(tmp_path, "h36m", [3, 2])
    batches = list(build_loader(tmp_path, "h36m", train=False, batch_size=4, uint8_crops=False))
    assert [len(b["key"]) for b in batches] == [4, 1]
    batch = batches[0]
    assert batch["image"].shape == (4, 2, 3, 256, 192)
    assert batch["keypoints_3d"].shape == (4, 1, 17, 3)
    assert batch["keypoints_2d"].shape == batch["keypoints_2d_crop"].shape == batch["ref"].shape == (4, 2, 17, 2)
    assert batch["subject"] == [9] * 4 and batch["action"] == [2, 3, 4, 5]
    train = next(iter(build_loader(tmp_path, "h36m", train=True, batch_size=4, uint8_crops=False)))
    assert train["image"].shape == (4, 3, 256, 192) and train["keypoints_2d"].shape == (4, 17, 2)


def keys_of(loader):
    return [k for batch in loader for k in batch["key"]]


@pytest.mark.parametrize("counts,world_size", [([3, 2, 4], 2), ([3, 2, 4], 3), ([3, 2, 4], 5), ([7], 3)])
def test_evaluation_visits_every_sample_once_across_ranks(tmp_path, counts, world_size):
    """With more shards than processes they are dealt out; with fewer, the samples are."""
    write_split(tmp_path, "mpi", counts)
    everything = keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=2))
    assert len(everything) == len(set(everything)) == sum(counts)
    per_rank = [keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=2, rank=r, world_size=world_size))
                for r in range(world_size)]
    merged = [k for keys in per_rank for k in keys]
    assert sorted(merged) == sorted(everything)
    assert all(keys for keys in per_rank)


def test_evaluation_split_over_ranks_and_workers(tmp_path):
    """2 processes x 2 workers on a single shard: every sample exactly once."""
    write_split(tmp_path, "mpi", [9])
    merged = []
    for rank in range(2):
        merged += keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=2, num_workers=2,
                                       rank=rank, world_size=2))
    assert sorted(merged) == sorted(mpi_key(1 + i % 6, i) for i in range(9))


def test_max_samples_is_shared_over_ranks(tmp_path):
    write_split(tmp_path, "mpi", [4, 4])
    assert len(keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=3, max_samples=5))) == 5
    per_rank = [keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=3, max_samples=5,
                                     rank=r, world_size=2)) for r in range(2)]
    assert [len(k) for k in per_rank] == [3, 2]


def test_training_shuffles_per_epoch_and_is_seeded(tmp_path):
    write_split(tmp_path, "mpi", [6, 6, 6])
    loader = build_loader(tmp_path, "mpi", train=True, batch_size=4, shuffle_buffer=10, seed=1)
    first, second = keys_of(loader), keys_of(loader)
    assert sorted(first) == sorted(second) and len(set(first)) == 18
    assert first != second
    again = build_loader(tmp_path, "mpi", train=True, batch_size=4, shuffle_buffer=10, seed=1)
    assert keys_of(again) == first
    again.set_epoch(1)
    assert keys_of(again) == second


def test_training_ranks_see_disjoint_data(tmp_path):
    write_split(tmp_path, "mpi", [3, 3, 3, 3])
    per_rank = [set(keys_of(build_loader(tmp_path, "mpi", train=True, batch_size=4, seed=2, rank=r,
                                         world_size=2))) for r in range(2)]
    assert not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == 12


def test_invalid_arguments(tmp_path):
    write_split(tmp_path, "mpi", [1])
    with pytest.raises(ValueError, match="rank"):
        build_loader(tmp_path, "mpi", train=False, batch_size=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(tmp_path, "mpi", train=False, batch_size=0)
    with pytest.raises(ValueError, match="dataset"):
        build_loader(tmp_path, "lsp", train=False, batch_size=1)


def test_raw_pipeline_samples_carry_the_shard(tmp_path):
    """decode_sample's error messages rely on WebDataset putting the shard URL in __url__."""
    path = write_split(tmp_path, "mpi", [1])[0]
    sample = next(iter(wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples())))
    assert sample["__url__"] == path


# --------------------------------------------------------------------------- read_pose_3d

@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_read_pose_3d_is_the_test_target_without_the_image(dataset, h36m_sample, mpi_sample):
    sample = raw(h36m_sample if dataset == "h36m" else mpi_sample)
    expected = decode_sample(sample, dataset, train=False)["keypoints_3d"]
    without_image = {k: v for k, v in sample.items() if k not in ("jpg", "png")}
    torch.testing.assert_close(read_pose_3d(without_image, dataset), expected, rtol=0, atol=0)
    broken = dict(without_image, pyd=pickle.dumps({"center": np.zeros(2)}))
    with pytest.raises(ShardDataError, match="joints_3d"):
        read_pose_3d(broken, dataset)


@pytest.mark.parametrize("counts", [[5, 5, 5, 5, 5, 5], [3, 7, 2, 9], [30]])
def test_max_samples_scores_the_same_first_samples_whatever_the_processes(tmp_path, counts):
    """Evaluation's --max-samples N reads the pass's first N samples, for any number of processes and workers."""
    write_split(tmp_path, "mpi", counts)
    everything = keys_of(build_loader(tmp_path, "mpi", train=False, batch_size=4))
    for world, workers in [(1, 0), (2, 0), (3, 0), (2, 2)]:
        loaders = [build_loader(tmp_path, "mpi", train=False, batch_size=4, max_samples=13, num_workers=workers,
                                rank=rank, world_size=world) for rank in range(world)]
        keys = [key for loader in loaders for key in keys_of(loader)]
        assert sorted(keys) == sorted(everything[:13]), (world, workers)
        assert [samples_per_pass(loader) for loader in loaders] == [loader.num_samples for loader in loaders]

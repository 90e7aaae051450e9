"""The synthetic dataset: body model, samples, released shard layout, read-back through common.data.loader."""
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from common.core.geometry import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_affine,
    crop_image,
    crop_matrix,
    image_coordinates,
)
from common.core.skeleton import (
    H36M_ACTIONS,
    H36M_TEST_SUBJECTS,
    H36M_TRAIN_SUBJECTS,
    LEFT_JOINTS,
    PARENTS,
    RIGHT_JOINTS,
)
from common.data.loader import build_loader
from common.data.samples import decode_sample, parse_key
from common.synthetic.body_model import (
    ACTION_FAMILIES,
    ANGLE_LIMITS,
    clamp_angles,
    forward_kinematics,
    sample_angles,
    sample_body_shape,
    sample_pose,
)
from common.synthetic.world import (
    H36M_HEIGHT,
    H36M_INTRINSICS,
    H36M_WIDTH,
    NoiseOptions,
    contact_sheet,
    generate_dataset,
    main,
    make_sample,
)

NO_NOISE = NoiseOptions(sigma=0.0, outlier_rate=0.0, outlier_sigma=0.0, swap_rate=0.0)


def read_shard(path):
    """Raw WebDataset samples of a tar, as the pipeline groups them: key -> {"__key__", ext: bytes}."""
    samples = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {"__key__": key, "__url__": str(path)})[ext] = tar.extractfile(member).read()
    return list(samples.values())


# Body model

def test_bones_keep_their_lengths_in_every_pose():
    rng = np.random.default_rng(0)
    shape = sample_body_shape(rng)
    rest, _ = forward_kinematics(shape, {})
    rest_lengths = [np.linalg.norm(rest[j] - rest[p]) for j, p in enumerate(PARENTS) if p >= 0]
    for family in ACTION_FAMILIES:
        joints, _ = sample_pose(family, shape, rng)
        lengths = [np.linalg.norm(joints[j] - joints[p]) for j, p in enumerate(PARENTS) if p >= 0]
        np.testing.assert_allclose(lengths, rest_lengths, atol=1e-9)
    left = [np.linalg.norm(rest[j] - rest[PARENTS[j]]) for j in LEFT_JOINTS]
    right = [np.linalg.norm(rest[j] - rest[PARENTS[j]]) for j in RIGHT_JOINTS]
    np.testing.assert_allclose(left, right, atol=1e-9)


def test_subjects_have_adult_heights():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rest, _ = forward_kinematics(sample_body_shape(rng), {})
        assert 1.35 < rest[10, 1] - rest[3, 1] < 1.95  # head top to ankle, metres


def test_angles_stay_within_anatomical_limits():
    rng = np.random.default_rng(2)
    for family in ACTION_FAMILIES:
        for _ in range(20):
            for name, value in sample_angles(family, rng).items():
                low, high = ANGLE_LIMITS[name]
                assert low <= value <= high, (family, name, value)


def test_standing_and_walking_bodies_are_upright():
    rng = np.random.default_rng(3)
    shape = sample_body_shape(rng)
    for family in ("standing", "walking", "reaching", "phoning"):
        for _ in range(10):
            joints, _ = sample_pose(family, shape, rng)
            height = joints[:, 1]  # body frame, y up
            assert height[10] > height[8] > height[7] > height[0] > max(height[2], height[5])
            assert max(height[2], height[5]) > max(height[3], height[6])


def test_unknown_angles_and_families_are_rejected():
    with pytest.raises(ValueError, match="valid names"):
        clamp_angles({"tail_wag": 3.0})
    with pytest.raises(ValueError, match="valid"):
        sample_angles("juggling", np.random.default_rng(0))


# Single samples

def test_key_names_subject_action_and_family():
    for index in range(40):
        sample = make_sample("h36m", "train", index, noise=NO_NOISE)
        parsed = parse_key(sample.key)
        assert parsed["subject"] in H36M_TRAIN_SUBJECTS and parsed["action"] in H36M_ACTIONS
        assert parsed["camera"] == sample.fields["camera_id"] + 1 and parsed["frame"] == index
    assert parse_key(make_sample("h36m", "validation", 0).key)["subject"] in H36M_TEST_SUBJECTS
    assert parse_key(make_sample("mpi", "test", 7).key)["subject"] in range(1, 7)


def test_h36m_geometry_projection_normalization_and_crop_agree():
    sample = make_sample("h36m", "train", 3)
    f = sample.fields
    assert sample.image.shape == (H36M_HEIGHT, H36M_WIDTH, 3) and sample.image.dtype == np.uint8
    assert all(f[k].dtype == np.float32 for k in ("joints_3d", "joints_2d_cpn", "joints_2d_cpn_crop", "center", "scale"))
    assert 3.5 < f["joints_3d"][0, 2] < 6.5  # metres in front of the camera
    fx, fy, cx, cy = H36M_INTRINSICS[f["camera_id"]]
    x, y, z = f["joints_3d"].astype(np.float64).T
    projected = np.stack([fx * x / z + cx, fy * y / z + cy], -1)
    np.testing.assert_allclose(image_coordinates(f["joints_2d_gt"], H36M_WIDTH, H36M_HEIGHT), projected, atol=1e-3)
    to_crop = crop_matrix(f["center"], f["scale"])
    np.testing.assert_allclose(apply_affine(projected, to_crop), f["joints_2d_gt_crop"], atol=1e-3)
    detected = image_coordinates(f["joints_2d_cpn"].astype(np.float64), H36M_WIDTH, H36M_HEIGHT)
    np.testing.assert_allclose(apply_affine(detected, to_crop), f["joints_2d_cpn_crop"], atol=2e-3)
    # The whole skeleton lies inside the crop.
    assert f["joints_2d_gt_crop"].min() > 0 and np.all(f["joints_2d_gt_crop"].max(0) < [CROP_WIDTH, CROP_HEIGHT])


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_crop_keypoints_land_on_the_rendered_person(dataset):
    for index in range(6):
        sample = make_sample(dataset, "train", index, noise=NO_NOISE)
        f = sample.fields
        mask = np.repeat(sample.mask[..., None], 3, axis=2).astype(np.uint8) * 255
        if dataset == "h36m":
            mask = crop_image(mask, f["center"], f["scale"])
        gt = f["joints_2d_gt_crop"]
        np.testing.assert_allclose(f["joints_2d_cpn_crop" if dataset == "h36m" else "joints_2d_crop"], gt, atol=1e-3)
        cols, rows = np.rint(gt).astype(int).T
        assert np.all(mask[rows, cols, 0] > 127), sample.key
        # The person covers a sizeable part of the crop, not just the joints.
        assert 0.08 < mask.mean() / 255 < 0.6


def test_detector_noise_follows_its_options():
    sigma = 3.0
    errors = []
    for index in range(30):
        f = make_sample("mpi", "train", index, noise=NoiseOptions(sigma=sigma, outlier_rate=0, swap_rate=0)).fields
        errors.append(f["joints_2d_crop"] - f["joints_2d_gt_crop"])
    assert np.std(errors) == pytest.approx(sigma, rel=0.15)
    for index in range(5):
        f = make_sample("mpi", "train", index, noise=NoiseOptions(sigma=0, outlier_rate=0, swap_rate=1)).fields
        moved = np.linalg.norm(f["joints_2d_crop"] - f["joints_2d_gt_crop"], axis=-1) > 1e-3
        # A swap exchanges a left and a right limb: only paired side joints move.
        assert moved.any() and not moved[[0, 7, 8, 9, 10]].any()
    with pytest.raises(ValueError, match="probability"):
        NoiseOptions(outlier_rate=1.5)


def test_samples_are_deterministic_and_vary_with_the_seed():
    a, b = make_sample("mpi", "train", 5, seed=1), make_sample("mpi", "train", 5, seed=1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.fields["joints_3d"], b.fields["joints_3d"])
    c = make_sample("mpi", "train", 5, seed=2)
    assert not np.allclose(a.fields["joints_3d"], c.fields["joints_3d"])


# Shards

def test_h36m_shards_have_the_released_layout_and_read_back(tmp_path):
    shards = generate_dataset(tmp_path, "h36m", num_train=5, num_test=3, seed=0, workers=1,
                              noise=NO_NOISE, samples_per_shard=2, progress=False)
    assert [p.name for p in shards["train"]] == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]
    assert [p.parent.name for p in shards["validation"]] == ["validation"] * 2
    for path in shards["validation"]:
        for raw in read_shard(path):
            assert set(raw) == {"__key__", "__url__", "jpg", "pyd"}
            labels = pickle.loads(raw["pyd"])
            assert Image.open(io.BytesIO(raw["jpg"])).size == (H36M_WIDTH, H36M_HEIGHT)
            out = decode_sample(raw, "h36m", train=False)
            assert out["subject"] in H36M_TEST_SUBJECTS
            torch.testing.assert_close(out["keypoints_2d_crop"][0], torch.from_numpy(labels["joints_2d_cpn_crop"]))
            torch.testing.assert_close(out["keypoints_2d"][0], torch.from_numpy(labels["joints_2d_cpn"]))
            root_relative = labels["joints_3d"] - labels["joints_3d"][:1]
            torch.testing.assert_close(out["keypoints_3d"][0], torch.from_numpy(root_relative))
            assert out["image"].shape == (2, 3, CROP_HEIGHT, CROP_WIDTH)
            # The decoded crop shows the person under the keypoints: colours there
            # differ from the crop's border, which is background.
            image = out["image"][0]
            cols, rows = np.rint(labels["joints_2d_cpn_crop"]).astype(int).T
            at_joints = image[:, rows, cols].T  # (17, 3)
            border = torch.cat([image[:, 0, :], image[:, -1, :]], 1).T  # (2 * 192, 3)
            assert (at_joints[:, None] - border[None]).abs().sum(-1).min(1).values.median() > 0.05


def test_mpi_shards_have_the_released_layout_and_read_back(tmp_path):
    shards = generate_dataset(tmp_path, "mpi", num_train=2, num_test=3, seed=0, workers=1, progress=False)
    assert set(shards) == {"train", "test"}
    raws = read_shard(shards["test"][0])
    assert [r["__key__"] for r in raws] == ["TS1_000000", "TS2_000001", "TS3_000002"]
    for raw in raws:
        assert Image.open(io.BytesIO(raw["png"])).size == (CROP_WIDTH, CROP_HEIGHT)
        labels = pickle.loads(raw["pyd"])
        assert 3000 < labels["joints_3d"][0, 2] < 6500  # millimetres
        out = decode_sample(raw, "mpi", train=False)
        expected = (labels["joints_3d"] - labels["joints_3d"][:1]) / 1000
        torch.testing.assert_close(out["keypoints_3d"][0], torch.from_numpy(expected))
        torch.testing.assert_close(out["keypoints_2d_crop"][0], torch.from_numpy(labels["joints_2d_crop"]))


def test_loader_visits_every_generated_sample_once(tmp_path):
    generate_dataset(tmp_path, "h36m", num_train=2, num_test=7, seed=0, workers=1, samples_per_shard=3, progress=False)
    keys = [k for batch in build_loader(tmp_path / "validation", "h36m", train=False, batch_size=2) for k in batch["key"]]
    assert sorted(keys) == sorted(make_sample("h36m", "validation", i).key for i in range(7))


def test_worker_count_does_not_change_the_shards(tmp_path):
    one = generate_dataset(tmp_path / "one", "h36m", 5, 2, seed=4, workers=1, samples_per_shard=3, progress=False)
    two = generate_dataset(tmp_path / "two", "h36m", 5, 2, seed=4, workers=2, samples_per_shard=3, progress=False)
    for split in one:
        assert [p.read_bytes() for p in one[split]] == [p.read_bytes() for p in two[split]]


def test_manifest_skips_unchanged_settings_and_regenerates_changed_ones(tmp_path):
    first = generate_dataset(tmp_path, "mpi", 3, 2, seed=0, workers=1, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 0 and manifest["shards"]["test"] == ["test/data-000000.tar"]
    stamp = first["train"][0].stat().st_mtime_ns
    again = generate_dataset(tmp_path, "mpi", 3, 2, seed=0, workers=1, progress=False)
    assert again == first and first["train"][0].stat().st_mtime_ns == stamp
    before = first["train"][0].read_bytes()
    generate_dataset(tmp_path, "mpi", 3, 2, seed=1, workers=1, progress=False)
    assert first["train"][0].read_bytes() != before
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"]["seed"] == 1


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        generate_dataset(tmp_path, "coco", 1, 1)
    with pytest.raises(ValueError, match="samples-per-shard"):
        generate_dataset(tmp_path, "h36m", 1, 1, samples_per_shard=0)
    with pytest.raises(ValueError, match="unknown split"):
        make_sample("h36m", "test", 0)


def test_contact_sheet_and_command_line(tmp_path):
    path = contact_sheet(tmp_path / "sheet.png", "h36m", count=4, columns=2)
    assert Image.open(path).size == (2 * CROP_WIDTH, 2 * CROP_HEIGHT)
    main(["--out", str(tmp_path / "data"), "--dataset", "mpi", "--train", "2", "--test", "1", "--workers", "1",
          "--visualize", str(tmp_path / "cli.png")])
    assert (tmp_path / "data" / "test" / "data-000000.tar").exists() and (tmp_path / "cli.png").exists()
    assert main(["--out", str(tmp_path / "x"), "--swap-rate", "2"]) == 2  # one line naming --swap-rate


@pytest.mark.slow
def test_demo_sized_dataset_is_generated_in_under_two_minutes(tmp_path):
    import time
    start = time.perf_counter()
    generate_dataset(tmp_path, "h36m", 4000, 800, seed=0, workers=2, progress=False)
    assert time.perf_counter() - start < 120

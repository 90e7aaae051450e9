"""People in videos: tracks, smoothing, camera space, BVH files, real mp4 files, and the command on a synthetic clip."""
import json

import av
import numpy as np
import pybvh
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401
from PIL import Image

from common.core.skeleton import PARENTS
from common.core.video import video_fps, write_mp4
from common.infer import cli as infer
from common.infer.bvh import BVH_NAMES, bvh_to_camera, write_bvh
from common.infer.camera_space import EXIF_IFD, FOCAL_35MM_TAG, exif_focal, fit_root, focal_from_fov, project, resolve_focal
from common.infer.inputs import count_frames, video_frames
from common.infer.smoothing import SmoothingConfig, one_euro, savgol, smooth_track
from common.infer.tracking import Tracker, TrackError, box_iou
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import config_to_dict
from common.synthetic.body_model import forward_kinematics
from common.synthetic.sequences import make_sequence, walking_angles, write_sequence
from common.synthetic.world import subject_appearance

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def crossing():
    """Ground truth of a 24-frame clip of two people whose paths cross (no images needed here)."""
    return make_sequence(people=2, frames=24, seed=1)[1]


def _boxes(keypoints):
    return np.concatenate([keypoints.min(0) - 10, keypoints.max(0) + 10])


# ---------------------------------------------------------------- tracking

def test_tracks_follow_two_crossing_people_through_a_missed_frame(crossing):
    tracker = Tracker(max_missed=3)
    seen = {}  # track id -> identities it was given to
    for t, order in enumerate(crossing["listed"]):
        if t == 11:
            order = order[:1]  # one person missed near the crossing
        keypoints = [crossing["detected"][t, p] for p in order]
        ids = tracker.update(t, [_boxes(k) for k in keypoints], keypoints)
        for track, person in zip(ids, order):
            seen.setdefault(track, set()).add(int(person))
    assert len(seen) == 2 and all(len(people) == 1 for people in seen.values())


def test_a_new_person_gets_a_new_id_and_a_lost_track_ends():
    tracker = Tracker(max_missed=1)
    box = np.array([0.0, 0.0, 100.0, 200.0])
    assert tracker.update(0, [box]) == [0]
    assert tracker.update(1, [box + 2, box + 500]) == [0, 1]
    tracker.update(2, [])
    tracker.update(3, [])
    assert tracker.update(4, [box]) == [2]  # track 0 was missed for more than one frame


def test_given_ids_are_kept_and_new_ids_avoid_them():
    tracker = Tracker()
    box = np.array([0.0, 0.0, 100.0, 200.0])
    assert tracker.update(0, [box, box + 300], given=[7, None]) == [7, 8]
    assert tracker.update(1, [box + 301, box + 1], given=[None, 7]) == [8, 7]
    with pytest.raises(TrackError, match="repeat"):
        tracker.update(2, [box, box], given=[3, 3])
    with pytest.raises(TrackError, match="integers"):
        tracker.update(2, [box], given=[-1])


def test_box_iou_known_values():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    assert box_iou(a, a)[0, 0] == pytest.approx(1.0)
    assert box_iou(a, a + [5, 0, 5, 0])[0, 0] == pytest.approx(50 / 150)
    assert box_iou(a, a + 20)[0, 0] == 0.0


# ---------------------------------------------------------------- smoothing

def test_savgol_keeps_a_quadratic_and_removes_noise():
    t = np.arange(40, dtype=np.float64)
    motion = np.stack([0.001 * t ** 2, 0.02 * t, np.ones_like(t)], axis=-1)[:, None]  # (T, 1, 3)
    assert np.allclose(savgol(motion, 11, 2), motion, atol=1e-9)
    noisy = motion + np.random.default_rng(0).normal(0, 0.01, motion.shape)
    assert np.abs(savgol(noisy) - motion).mean() < 0.6 * np.abs(noisy - motion).mean()
    assert np.allclose(savgol(noisy[:4], 11, 2), savgol(noisy[:4], 3, 2))  # a short track: the window it holds


def test_one_euro_removes_jitter_when_still_and_follows_fast_motion():
    rng = np.random.default_rng(1)
    times = np.arange(100) / 25.0
    still = rng.normal(0, 0.01, (100, 17, 3))
    assert one_euro(still, times).std() < 0.5 * still.std()
    ramp = np.repeat((2.0 * times)[:, None, None], 3, axis=2)  # 2 m/s
    lag_slow = np.abs(one_euro(ramp, times, beta=0.0) - ramp)[-1].max()
    lag_fast = np.abs(one_euro(ramp, times, beta=5.0) - ramp)[-1].max()
    assert lag_fast < 0.5 * lag_slow  # beta raises the cut-off with speed
    with pytest.raises(ValueError, match="increasing"):
        one_euro(still[:3], [0.0, 0.0, 1.0])


def test_smoothing_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="one-euro"):
        SmoothingConfig(method="kalman")
    with pytest.raises(ValueError, match="odd"):
        SmoothingConfig(window=10)
    frames = np.array([0, 1, 3, 4])  # a missed frame: One-Euro uses the real time step
    poses = np.zeros((4, 17, 3))
    assert smooth_track(poses, frames, 25.0, SmoothingConfig("one-euro")).shape == (4, 17, 3)


# ---------------------------------------------------------------- camera space

def test_root_fit_recovers_known_cameras(crossing):
    intrinsics = crossing["intrinsics"]
    joints = crossing["joints_3d"].astype(np.float64)  # (T, P, 17, 3)
    for focal in (intrinsics[0], 600.0):
        center = intrinsics[2:]
        keypoints = project(joints, focal, center)
        roots = fit_root((joints - joints[..., :1, :]).reshape(-1, 17, 3), keypoints.reshape(-1, 17, 2), focal, center)
        assert np.allclose(roots, joints[..., 0, :].reshape(-1, 3), atol=1e-6)
    noisy = fit_root(joints[5, 0] - joints[5, 0, 0], crossing["detected"][5, 0], intrinsics[0], intrinsics[2:])
    distance = np.linalg.norm(joints[5, 0, 0])
    assert np.linalg.norm(noisy - joints[5, 0, 0]) < 0.02 * distance


def test_focal_from_option_exif_or_default_field_of_view(tmp_path):
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[FOCAL_35MM_TAG] = 26
    Image.new("RGB", (400, 300)).save(photo, exif=exif)
    diagonal = np.hypot(400, 300)
    assert exif_focal(photo, 400, 300) == pytest.approx(26 * diagonal / np.hypot(36, 24))
    assert resolve_focal(None, photo, 400, 300)[1] == "exif"
    assert resolve_focal(900.0, photo, 400, 300) == (900.0, "given")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (400, 300)).save(plain)
    assert resolve_focal(None, plain, 400, 300)[0] == pytest.approx(focal_from_fov(400)) == pytest.approx(200 / np.tan(np.pi / 6))
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="positive"):
            resolve_focal(bad, None, 400, 300)


# ---------------------------------------------------------------- BVH

def _walk(frames, frames_per_stride):
    """Articulated walking poses (T, 17, 3) camera metres and roots (T, 3), one body."""
    shape, _ = subject_appearance(0, "h36m", 9)
    flip = np.diag([1.0, -1.0, -1.0])  # body y up, facing the camera
    poses = np.stack([forward_kinematics(shape, walking_angles(2 * np.pi * t / frames_per_stride))[0] @ flip
                      for t in range(frames)])
    roots = np.stack([[0.02 * t, 0.1, 5.0 - 0.01 * t] for t in range(frames)])
    return poses, roots


def _read_back(path):
    """Joint positions (T, 17, 3) camera metres of a BVH file, by pybvh's forward kinematics."""
    motion = pybvh.Bvh.from_file(path)
    names = list(motion.joint_names)
    return bvh_to_camera(motion.joint_positions()[:, [names.index(n) for n in BVH_NAMES]]), motion


def _with_fixed_bones(poses):
    """Poses (T, 17, 3) rebuilt from the root along each bone's own direction with its median length."""
    bones = poses - poses[:, [max(p, 0) for p in PARENTS]]
    lengths = np.median(np.linalg.norm(bones, axis=-1), axis=0)
    fixed = np.zeros_like(poses)
    for j in range(1, 17):
        fixed[:, j] = fixed[:, PARENTS[j]] + bones[:, j] / np.linalg.norm(bones[:, j], axis=-1, keepdims=True) * lengths[j]
    return fixed


@pytest.mark.parametrize("method", ["savgol", "one-euro"])
def test_bvh_read_back_by_pybvh_gives_the_smoothed_positions(tmp_path, method):
    """Within 1 mm of the smoothed track with its bones at their median lengths (a BVH fixes them).

    Smoothing a walk at 25 frames/s changes the legs' lengths by centimetres (One-Euro lags more on the
    faster joints), which fixed bones cannot follow; a lifted pose's arrangement of the hips around the
    pelvis changes too (docs/inference.md, Videos, measures both on the model's poses).
    """
    poses, roots = _walk(60, 30)
    smoothed = smooth_track(poses, np.arange(60), 25.0, SmoothingConfig(method))
    smoothed -= smoothed[:, :1]
    path = write_bvh(tmp_path / "walk.bvh", np.arange(60), smoothed, roots, fps=25.0)
    positions, motion = _read_back(path)
    assert motion.frame_count == 60 and motion.frame_time == pytest.approx(1 / 25, abs=1e-6)
    assert np.abs(positions[:, 0] - roots).max() < 1e-6
    away = np.linalg.norm(positions - roots[:, None] - _with_fixed_bones(smoothed), axis=-1)
    assert away.max() < 0.001  # metres


def test_bvh_of_an_articulated_motion_is_exact_and_keeps_bone_lengths(tmp_path):
    poses, roots = _walk(30, 20)
    frames = np.r_[0:10, 12:30]  # two frames missed: filled in linearly
    path = write_bvh(tmp_path / "walk.bvh", frames, poses[frames], roots[frames], fps=30.0)
    positions, motion = _read_back(path)
    assert motion.frame_count == 30
    assert np.abs(positions[frames] - (poses + roots[:, None])[frames]).max() < 1e-5
    lengths = np.linalg.norm(positions - positions[:, [max(p, 0) for p in PARENTS]], axis=-1)
    assert np.allclose(lengths, lengths[0], atol=1e-6)
    with pytest.raises(ValueError, match="fps"):
        write_bvh(tmp_path / "bad.bvh", frames, poses[frames], fps=0)


# ---------------------------------------------------------------- real mp4 files

def test_mp4_written_with_pyav_decodes_to_the_frames(tmp_path):
    frames = [np.full((101, 131, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    for frame in frames:
        frame[20:60, 30:90] = (250, 30, 30)
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=12.0)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "mpeg4")
    decoded = list(video_frames(path))
    assert [number for number, _ in decoded] == list(range(6)) and count_frames(path) == 6
    assert video_fps(path) == pytest.approx(12.0)
    for original, (_, frame) in zip(frames, decoded):
        assert frame.shape == (102, 132, 3)  # padded to even sides for yuv420p
        assert np.abs(frame[:101, :131].astype(int) - original).mean() < 6
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])


def test_synthetic_sequence_files_match_their_truth(tmp_path):
    video, keypoints, truth_path = write_sequence(tmp_path, "walk", people=2, frames=6, seed=0)
    truth = np.load(truth_path)
    frames = [frame for _, frame in video_frames(video)]
    assert len(frames) == 6 and frames[0].shape == (int(truth["height"]), int(truth["width"]), 3)
    listed = json.loads(keypoints.read_text())
    assert sorted(listed) == [str(t) for t in range(6)] and all(len(p) == 2 for p in listed.values())
    first = np.array(listed["0"][0]["keypoints"])
    assert np.allclose(first, truth["detected"][0, truth["listed"][0, 0]], atol=0.01)
    fx, fy, cx, cy = truth["intrinsics"]
    joints = truth["joints_3d"].astype(np.float64)
    projected = np.stack([fx * joints[..., 0] / joints[..., 2] + cx, fy * joints[..., 1] / joints[..., 2] + cy], -1)
    assert np.allclose(projected, truth["keypoints_2d"], atol=0.01)


# ---------------------------------------------------------------- the command on a clip

@pytest.fixture(scope="module")
def checkpoint(tiny_config, tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("run"), evaluation__num_proposals=3, evaluation__timesteps=2, seed=5)
    _, denoiser = build_model(cfg.model)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in denoiser.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return save_checkpoint(cfg.checkpoint + "/best_h36m.bin", denoiser, epoch=1, config=config_to_dict(cfg))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_sequence(tmp_path_factory.mktemp("clip"), "clip", people=2, frames=8, seed=0)


def _run(clip, checkpoint, out, *options, keypoints=None):
    return infer.main([str(clip[0]), "--checkpoint", str(checkpoint), "--keypoints", str(keypoints or clip[1]),
                       "--out", str(out), "--device", "cpu", "--batch-size", "4", *options])


def test_command_tracks_smooths_places_and_exports_each_person(clip, checkpoint, tmp_path):
    assert _run(clip, checkpoint, tmp_path, "--smooth", "savgol", "--bvh", "--animate",
                "--focal", "1145", "--track", "1") == 0
    truth = np.load(clip[2])
    npz = np.load(tmp_path / "clip.npz")
    assert npz["tracks"].shape == (16,) and npz["mean_smoothed"].shape == npz["mean"].shape == (16, 17, 3)
    assert npz["hypotheses"].shape == (16, 3, 17, 3) and npz["root_camera"].shape == (16, 3)
    identities = truth["listed"].reshape(-1)  # the file's order, which the outputs keep
    pairs = set(zip(npz["tracks"].tolist(), identities.tolist()))
    assert len(pairs) == 2 and len({t for t, _ in pairs}) == 2  # one track per person, all clip long
    assert np.isfinite(npz["root_camera"]).all()  # an untrained model's poses: any depth
    document = json.loads((tmp_path / "clip.json").read_text())
    person = document["images"][0]["persons"][0]
    assert {"track", "root_camera", "mean_smoothed", "mean", "hypotheses", "spread_mm"} <= set(person)
    assert document["smoothing"]["method"] == "savgol" and document["focal_px"] == 1145.0
    for track in (0, 1):
        positions, motion = _read_back(tmp_path / f"clip_track{track}.bvh")
        assert motion.frame_count == 8
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert len(list(container.decode(video=0))) == 8  # the animation follows one track: one frame per frame
    with Image.open(tmp_path / "clip.gif") as gif:
        assert gif.n_frames == 8


def test_command_keeps_given_track_ids_and_survives_a_frame_without_persons(clip, checkpoint, tmp_path, caplog):
    listed = json.loads(clip[1].read_text())
    truth = np.load(clip[2])
    for t, persons in listed.items():
        for person, identity in zip(persons, truth["listed"][int(t)]):
            person["track_id"] = int(identity) + 40
    listed["3"] = []
    keypoints = tmp_path / "tracks.json"
    keypoints.write_text(json.dumps(listed))
    assert _run(clip, checkpoint, tmp_path / "out", keypoints=keypoints) == 0
    npz = np.load(tmp_path / "out" / "clip.npz")
    assert sorted(set(npz["tracks"].tolist())) == [40, 41] and len(npz["tracks"]) == 14
    assert "nobody in this image" in caplog.text


def test_command_errors_on_bad_track_ids_and_focal_lengths(clip, checkpoint, tmp_path, caplog, capsys):
    listed = json.loads(clip[1].read_text())
    listed["2"][0]["track_id"] = "alice"
    keypoints = tmp_path / "tracks.json"
    keypoints.write_text(json.dumps(listed))
    assert _run(clip, checkpoint, tmp_path / "a", keypoints=keypoints) == 2
    assert "track_id must be an integer" in caplog.text
    listed["2"][0]["track_id"], listed["2"][1]["track_id"] = 4, 4
    keypoints.write_text(json.dumps(listed))
    assert _run(clip, checkpoint, tmp_path / "b", keypoints=keypoints) == 2
    assert "repeat an id" in caplog.text
    assert _run(clip, checkpoint, tmp_path / "c", "--track", "9") == 2
    assert "--track 9: no person has this track id" in caplog.text
    for focal in ("0", "-3"):
        with pytest.raises(SystemExit) as exit_:
            _run(clip, checkpoint, tmp_path / "d", "--focal", focal)
        assert exit_.value.code == 2
        assert "--focal must be a positive number of pixels" in capsys.readouterr().err

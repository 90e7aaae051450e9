"""Short synthetic videos with ground truth: one or two people walking across a fixed camera's view.

Each person walks sideways across the frame at their own depth (a walking cycle
of ``common.synthetic.body_model``); with two people their paths cross, the
nearer one passing in front. The camera is Human3.6M's first one (1000 x 1002
frames), looking slightly down, as in the shards the demo trains on.

``write_sequence`` writes, for a name ``clip``:
- ``clip.mp4``: the rendered video (PyAV, ``common.core.video``);
- ``clip.json``: the 2D keypoints a detector would give (the true projection plus
  Gaussian pixel noise), H36M-17 pixels in the keypoint-file format of
  ``common.infer.inputs`` keyed by frame number, the persons of each frame in a
  shuffled order and without identities (``track_ids=True`` adds ``track_id``);
- ``clip_truth.npz``: ``joints_3d`` (T, P, 17, 3) camera metres (x right, y down,
  z forward), ``keypoints_2d`` (T, P, 17, 2) true pixels, ``detected`` (T, P, 17, 2),
  ``listed`` (T, P) the identity of the file's i-th person in frame t,
  ``intrinsics`` (fx, fy, cx, cy) pixels, ``fps``, ``width``, ``height``.

    python -m common.synthetic.sequences --out videos --people 2 --frames 48
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common.core.files import atomic_write, write_text
from common.core.video import write_mp4
from common.synthetic.body_model import forward_kinematics
from common.synthetic.render import new_depth_buffer, render_capsules
from common.synthetic.world import (
    H36M_HEIGHT,
    H36M_INTRINSICS,
    H36M_WIDTH,
    _capsule_list,
    _capsules_in_canvas,
    _project,
    background_bank,
    subject_appearance,
)

# Per person: (start x, end x, depth) in metres; the second walks the other way, further back.
PATHS = ((-1.4, 1.4, 4.6), (1.5, -1.5, 5.8))
STRIDE_FRAMES = 30  # frames per walking cycle at 25 frames/s: 1.2 s
CAMERA_TILT_DEG = 8.0


def walking_angles(phase):
    """Joint angles (degrees, ``body_model`` names) of a walking cycle at ``phase`` (radians)."""
    angles = {"spine_flex": 6.0}
    for side, sign in (("l", 1.0), ("r", -1.0)):
        swing = sign * np.sin(phase)
        angles[f"{side}_hip_flex"] = 5.0 + 25.0 * swing
        angles[f"{side}_knee"] = 8.0 + 45.0 * max(0.0, sign * np.cos(phase))
        angles[f"{side}_sh_flex"] = -18.0 * swing
        angles[f"{side}_elbow"] = 20.0 + 15.0 * max(0.0, -swing)
    return angles


def _body_to_camera(direction, x, depth):
    """Rotation (3, 3) and translation (3,) of a body walking along camera x (``direction`` +1 or -1)."""
    yaw = direction * np.pi / 2  # the body's forward (+z) turned onto +x or -x
    c, s = np.cos(yaw), np.sin(yaw)
    heading = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    tilt = np.radians(-CAMERA_TILT_DEG)
    pitch = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    return pitch @ np.diag([1.0, -1.0, 1.0]) @ heading, np.array([x, 0.1, depth])


def person_motion(person, frames, seed=0):
    """Camera-space joints (T, 17, 3) metres and render extras per frame of person ``person`` (0 or 1)."""
    shape, colours = subject_appearance(seed, "h36m", 9 + person)
    start, end, depth = PATHS[person]
    joints, extras = [], []
    for t in range(frames):
        x = start + (end - start) * t / max(frames - 1, 1)
        body, body_extras = forward_kinematics(shape, walking_angles(2 * np.pi * t / STRIDE_FRAMES + person))
        rotation, translation = _body_to_camera(np.sign(end - start), x, depth)
        joints.append(body @ rotation.T + translation)
        extras.append({k: rotation @ v + translation for k, v in body_extras.items()})
    return np.stack(joints), extras, shape, colours


def render_frame(background, people, intrinsics):
    """(H, W, 3) uint8 frame: ``people`` [(joints (17, 3), extras, shape, colours)] drawn over ``background``."""
    canvas = background.astype(np.float32) / 255
    depth = new_depth_buffer(*canvas.shape[:2])
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for joints, extras, shape, colours in people:
        capsules, focal = _capsules_in_canvas(_capsule_list(joints, extras, shape, colours), intrinsics, identity)
        render_capsules(canvas, depth, capsules, focal, reference_depth=5.0)
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_sequence(people=2, frames=48, seed=0, noise_px=2.0):
    """Frames and ground truth of a sequence (arrays as the module docstring's npz)."""
    if people not in (1, 2):
        raise ValueError(f"people must be 1 or 2, got {people}")
    if frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {frames}")
    rng = np.random.default_rng([seed, 2606])
    intrinsics = np.array(H36M_INTRINSICS[0], dtype=np.float64)
    motions = [person_motion(p, frames, seed) for p in range(people)]
    joints = np.stack([m[0] for m in motions], axis=1)  # (T, P, 17, 3)
    keypoints = _project(joints, intrinsics)  # (T, P, 17, 2)
    detected = keypoints + rng.normal(0.0, noise_px, keypoints.shape)
    listed = np.stack([rng.permutation(people) for _ in range(frames)])  # (T, P)
    background = background_bank(seed, H36M_HEIGHT, H36M_WIDTH)[0]
    images = [render_frame(background, [(m[0][t], m[1][t], m[2], m[3]) for m in motions], intrinsics)
              for t in range(frames)]
    truth = dict(joints_3d=joints.astype(np.float32), keypoints_2d=keypoints.astype(np.float32),
                 detected=detected.astype(np.float32), listed=listed, intrinsics=intrinsics, fps=np.float64(25.0),
                 width=np.int64(H36M_WIDTH), height=np.int64(H36M_HEIGHT))
    return images, truth


def keypoint_file(truth, track_ids=False):
    """The detections as a keypoint file (dict frame number -> persons), in ``truth['listed']`` order."""
    people = {}
    for t, order in enumerate(truth["listed"]):
        people[str(t)] = [{"keypoints": truth["detected"][t, p].round(2).tolist(), "format": "h36m",
                           **({"track_id": int(p)} if track_ids else {})} for p in order]
    return people


def write_sequence(out, name="clip", people=2, frames=48, seed=0, noise_px=2.0, track_ids=False):
    """Write ``name``.mp4, ``name``.json and ``name``_truth.npz into ``out``; returns the three Paths."""
    out = Path(out)
    images, truth = make_sequence(people, frames, seed, noise_px)
    video = write_mp4(out / f"{name}.mp4", images, float(truth["fps"]))
    keypoints = write_text(out / f"{name}.json", json.dumps(keypoint_file(truth, track_ids)))
    with atomic_write(out / f"{name}_truth.npz") as stream:
        np.savez(stream, **truth)
    return video, keypoints, out / f"{name}_truth.npz"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.synthetic.sequences", allow_abbrev=False,
                                     description="Write a short synthetic video with ground truth.")
    parser.add_argument("--out", default="videos", help="output folder (default: videos)")
    parser.add_argument("--name", default="clip", help="file name stem (default: clip)")
    parser.add_argument("--people", type=int, choices=(1, 2), default=2, help="1 or 2 people (default: 2)")
    parser.add_argument("--frames", type=int, default=48, help="number of frames, at least 2 (default: 48)")
    parser.add_argument("--seed", type=int, default=0, help="seed of looks and noise (default: 0)")
    parser.add_argument("--noise-px", type=float, default=2.0, help="2D keypoint noise, pixels (default: 2)")
    parser.add_argument("--track-ids", action="store_true", help="write the identities as track_id")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.noise_px < 0:
        parser.error("--frames must be at least 2 and --noise-px at least 0")
    for path in write_sequence(args.out, args.name, args.people, args.frames, args.seed, args.noise_px,
                               args.track_ids):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""People in videos, measured on synthetic clips with ground truth: smoothing, identities, camera space, speed.

For each clip (``common.synthetic.sequences``: one person walking, or two whose
paths cross; their 2D keypoints are the true ones plus Gaussian pixel noise),
runs the whole video path once as a user does, timed:

    python -m common.infer clip.mp4 --keypoints clip.json --smooth savgol --bvh --focal FX

(decode, crop, lift, track, smooth, camera space, JSON, npz and BVH files; no
figures), then scores its outputs against the truth, and applies the One-Euro
filter to the same raw means (``common.infer.smoothing``, as ``--smooth one-euro``
would). Prints one table:

- MPJPE (mm) of the root-relative means, raw and smoothed;
- acceleration error (mm/frame^2): the mean distance between the second
  differences x[t+1] - 2 x[t] + x[t-1] of the prediction and of the truth, per
  joint, as MotionBERT and SmoothNet report it;
- identity switches: the number of times a person's track id changes between consecutive frames;
- root error: the camera-space root's distance from the truth over the truth's distance from the camera,
  with the true focal length (and with the default field of view);
- BVH: the mean distance (mm) of the BVH file's joints (read back by pybvh) from the smoothed means;
- frames/s of the whole run.

``--reuse`` scores the clips and outputs already in ``--out`` again without running
the model (frames/s is then left out): to try other smoothing settings or BVH code
on the same lifted poses.

    python -m benchmarks.video --checkpoint demo_output/checkpoint/best_h36m.bin --out video_bench
"""
import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from common.infer import cli as infer
from common.infer.bvh import BVH_NAMES, bvh_to_camera, write_bvh
from common.infer.camera_space import fit_root, focal_from_fov
from common.infer.smoothing import SmoothingConfig, smooth_track
from common.synthetic.sequences import write_sequence

CLIPS = {"one person": 1, "two crossing": 2}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.video", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="SnapPose checkpoint (the demo's)")
    parser.add_argument("--out", default="video_bench", help="folder for the clips and outputs (default: video_bench)")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip (default: 48)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one clip of each kind per seed")
    parser.add_argument("--noise-px", type=float, default=2.0, help="2D keypoint noise, pixels (default: 2)")
    parser.add_argument("--hypotheses", type=int, help="H (default: the checkpoint's config)")
    parser.add_argument("--timesteps", type=int, help="K (default: the checkpoint's config)")
    parser.add_argument("--reuse", action="store_true",
                        help="score the outputs already in --out again instead of running the model")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def acceleration_error(predicted, truth):
    """Mean over frames and joints of |second difference of predicted - of truth|, (T, J, 3) in, same units per frame^2."""
    assert predicted.shape == truth.shape
    if len(predicted) < 3:
        return float("nan")
    second = lambda x: x[2:] - 2 * x[1:-1] + x[:-2]  # noqa: E731
    return float(np.linalg.norm(second(predicted) - second(truth), axis=-1).mean())


def identity_switches(tracks, identities, frames):
    """Times a person's track id changes from one of their frames to the next."""
    switches = 0
    for person in np.unique(identities):
        mine = np.argsort(frames[identities == person], kind="stable")
        ids = tracks[identities == person][mine]
        switches += int((ids[1:] != ids[:-1]).sum())
    return switches


def _bvh_distance(out, npz, fps):
    """Mean distance (m) of every track's BVH joints (written as the command writes them, read by pybvh)
    from its smoothed means plus roots."""
    import pybvh

    distances = []
    tracks, smoothed, roots = npz["tracks"], npz["mean_smoothed"].astype(np.float64), npz["root_camera"]
    for track in np.unique(tracks):
        rows = tracks == track
        path = write_bvh(out / f"score_track{track}.bvh", npz["frames"][rows], smoothed[rows], roots[rows], fps)
        motion = pybvh.Bvh.from_file(path)
        names = list(motion.joint_names)
        read = bvh_to_camera(motion.joint_positions()[:, [names.index(n) for n in BVH_NAMES]])
        if len(read) == rows.sum():  # a track with missed frames has filled-in ones the outputs lack
            distances.append(np.linalg.norm(read - (smoothed[rows] + roots[rows][:, None]), axis=-1).mean())
    return float(np.mean(distances)) if distances else float("nan")


def measure_clip(args, kind, people, seed):
    """Run the video path on one clip (unless --reuse) and score it; returns a dict of numbers."""
    out = Path(args.out) / f"{kind.replace(' ', '_')}_{seed}"
    if args.reuse:
        truth = np.load(out / "clip_truth.npz")
        seconds = float("nan")
    else:
        truth, seconds = _run_clip(args, out, people, seed)
    return score_clip(out, truth, kind, seed, people, seconds)


def _run_clip(args, out, people, seed):
    """Write a clip and run ``python -m common.infer`` on it; returns (truth, seconds)."""
    video, keypoints, truth_path = write_sequence(out, "clip", people, args.frames, seed, args.noise_px)
    truth = np.load(truth_path)
    options = ["--smooth", "savgol", "--bvh", "--focal", f"{truth['intrinsics'][0]:.3f}", "--device", "cpu"]
    options += ["-num_proposals", str(args.hypotheses)] if args.hypotheses else []
    options += ["-timesteps", str(args.timesteps)] if args.timesteps else []
    start = time.perf_counter()
    status = infer.main([str(video), "--checkpoint", args.checkpoint, "--keypoints", str(keypoints),
                         "--out", str(out / "out"), *options])
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"python -m common.infer failed on {video} (exit {status})")
    return truth, seconds


def score_clip(out, truth, kind, seed, people, seconds):
    """The row of one clip: its outputs in ``out/out`` against its ``truth``."""
    npz = np.load(out / "out" / "clip.npz")
    count = len(truth["listed"])
    frames, tracks = npz["frames"], npz["tracks"]
    slot = np.concatenate([np.arange(people)] * count)  # the file's order is kept in the outputs
    identities = truth["listed"][frames, slot]
    joints = truth["joints_3d"][frames, identities].astype(np.float64)  # (N, 17, 3)
    target = joints - joints[:, :1]
    raw = npz["mean"].astype(np.float64)
    estimates = {"raw": raw, "savgol": npz["mean_smoothed"].astype(np.float64),
                 "one-euro": _smoothed(raw, tracks, frames, float(truth["fps"]), "one-euro")}
    row = {"clip": kind, "seed": seed, "frames": count, "people": people,
           "identity_switches": identity_switches(tracks, identities, frames), "tracks": int(len(np.unique(tracks))),
           "frames_per_second": count / seconds}
    for name, estimate in estimates.items():
        row[f"mpjpe_{name}"] = 1000 * float(np.linalg.norm(estimate - target, axis=-1).mean())
        row[f"accel_{name}"] = 1000 * float(np.mean([acceleration_error(estimate[identities == p], target[identities == p])
                                                     for p in range(people)]))
    distance = np.linalg.norm(joints[:, 0], axis=-1)
    row["root_error_given_focal"] = float((np.linalg.norm(npz["root_camera"] - joints[:, 0], axis=-1) / distance).mean())
    width, height = int(truth["width"]), int(truth["height"])
    default = fit_root(raw, npz["keypoints_2d"], focal_from_fov(width), np.array([width, height]) / 2)
    row["root_error_default_fov"] = float((np.linalg.norm(default - joints[:, 0], axis=-1) / distance).mean())
    row["bvh_distance_mm"] = 1000 * _bvh_distance(out / "out", npz, float(truth["fps"]))
    return row


def _smoothed(means, tracks, frames, fps, method):
    smoothed = np.empty_like(means)
    for track in np.unique(tracks):
        rows = np.flatnonzero(tracks == track)
        smoothed[rows] = smooth_track(means[rows], frames[rows], fps, SmoothingConfig(method))
    return smoothed


def print_table(rows):
    print(f"{'clip':<14} {'seed':>4} {'MPJPE raw':>9} {'1-euro':>7} {'savgol':>7} {'accel raw':>9} {'1-euro':>7} "
          f"{'savgol':>7} {'ID sw':>5} {'root err':>8} {'(60 deg)':>8} {'BVH mm':>7} {'frames/s':>8}")
    for r in rows:
        print(f"{r['clip']:<14} {r['seed']:>4} {r['mpjpe_raw']:>9.1f} {r['mpjpe_one-euro']:>7.1f} "
              f"{r['mpjpe_savgol']:>7.1f} {r['accel_raw']:>9.2f} {r['accel_one-euro']:>7.2f} {r['accel_savgol']:>7.2f} "
              f"{r['identity_switches']:>5} {100 * r['root_error_given_focal']:>7.1f}% "
              f"{100 * r['root_error_default_fov']:>7.1f}% {r['bvh_distance_mm']:>7.1f} {r['frames_per_second']:>8.2f}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = [measure_clip(args, kind, people, seed) for seed in args.seeds for kind, people in CLIPS.items()]
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

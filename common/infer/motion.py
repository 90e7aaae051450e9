"""What ``python -m common.infer`` does across the frames of a video or folder: tracks, smoothing, camera space, BVH.

While the frames are lifted, each frame's persons get their track ids
(``common.infer.tracking``) from their boxes and 2D keypoints, or keep those the
keypoint file gives. Once all are lifted, ``finish`` smooths each track's means
(``--smooth``, ``common.infer.smoothing``), puts every person's root in the camera's
space (``common.infer.camera_space``) and writes a BVH file per track
(``--bvh``, ``common.infer.bvh``). What it adds to every person of the outputs:
``track``, ``root_camera`` (3,) metres, and with ``--smooth`` ``mean_smoothed``
(17, 3) metres beside the raw ``mean``, ``hypotheses`` and ``spread_mm``.
"""
import logging
from pathlib import Path

import numpy as np

from common.core.geometry import PIXEL_STD
from common.infer.bvh import write_bvh
from common.infer.camera_space import fit_root, resolve_focal
from common.infer.inputs import InputError
from common.infer.smoothing import SMOOTHERS, SmoothingConfig, smooth_track
from common.infer.tracking import Tracker, TrackError, track_boxes

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


def add_arguments(parser):
    """The command line's options for tracks, smoothing, camera space and BVH files."""
    group = parser.add_argument_group("videos: tracks, smoothing, camera space, BVH")
    group.add_argument("--smooth", choices=SMOOTHERS,
                       help="smooth each track's mean over time: one-euro (causal; min cutoff 0.5 Hz, beta 8) or "
                            "savgol (window 11 frames, order 2) (default: none, the per-frame means)")
    group.add_argument("--focal", type=float, metavar="PX",
                       help="camera focal length in pixels, for the persons' positions in camera space (default: "
                            "the photo's EXIF 35 mm-equivalent focal length, else a 60 degree field of view)")
    group.add_argument("--bvh", action="store_true", help="write a BVH file per track (<stem>_track<ID>.bvh)")
    group.add_argument("--track", type=int, metavar="ID",
                       help="the track the figures and the animation follow (default: the first person's)")
    group.add_argument("--fps", type=float,
                       help="frames per second of the input (default: the video's, else 25), for smoothing and BVH")
    group.add_argument("--max-missed", type=int, default=5, metavar="N",
                       help="frames a person may be missed and keep their track id (default: 5)")


def check_arguments(parser, args):
    """``parser.error`` (exit 2, one line) for option values that cannot work."""
    if args.focal is not None and not (np.isfinite(args.focal) and args.focal > 0):
        parser.error(f"--focal must be a positive number of pixels, got {args.focal:g}")
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be a positive number, got {args.fps:g}")
    if args.max_missed < 0:
        parser.error(f"--max-missed must be at least 0, got {args.max_missed}")
    if args.track is not None and args.track < 0:
        parser.error(f"--track must be a track id >= 0, got {args.track}")


def assign_tracks(tracker, position, people, specs, where):
    """Track ids (list) of a frame's prepared persons; InputError naming ``where`` for unusable given ids."""
    if not people:
        return []
    boxes = track_boxes([p.center for p in people], [p.scale for p in people], PIXEL_STD)
    keypoints = [None if p.keypoints is None else np.asarray(p.keypoints.pixels, np.float64) for p in people]
    try:
        return tracker.update(position, boxes, keypoints, [getattr(s, "track", None) for s in specs])
    except TrackError as error:
        raise InputError(f"{where}: {error}") from error


def new_tracker(args):
    return Tracker(max_missed=args.max_missed)


def input_fps(args, kind):
    """Frames per second between the lifted frames: --fps, else the video's, else DEFAULT_FPS; over --every."""
    from common.core.video import video_fps

    fps = args.fps
    if fps is None and kind == "video":
        try:
            fps = video_fps(args.input, DEFAULT_FPS)
        except ImportError:
            fps = DEFAULT_FPS
    return (fps or DEFAULT_FPS) / args.every


def _tracks(records):
    """track id -> list of (record index, person index), in frame order."""
    tracks = {}
    for r, record in enumerate(records):
        for p, track in enumerate(record["tracks"][:len(record["persons"])]):
            tracks.setdefault(track, []).append((r, p))
    return tracks


def finish(records, args, kind, out, stem):
    """Smooth, place in camera space and export every track; fills ``record["extras"]``.

    Returns (header dict for the outputs, list of files written). Raises InputError when
    ``--track`` names a track no person has.
    """
    tracks = _tracks(records)
    if args.track is not None and args.track not in tracks:
        raise InputError(f"--track {args.track}: no person has this track id; the tracks are {sorted(tracks)}")
    fps = input_fps(args, kind)
    smoothing = SmoothingConfig(method=args.smooth) if args.smooth else None
    for record in records:
        record["extras"] = [{"track": int(t)} for t in record["tracks"][:len(record["persons"])]]
    focals, focal_source = _focal_lengths(records, args, kind)
    written = []
    for track, members in sorted(tracks.items()):
        positions = np.array([records[r]["position"] for r, _ in members])
        means = np.stack([records[r]["persons"][p].mean for r, p in members])
        smoothed = smooth_track(means, positions, fps, smoothing) if smoothing else means
        roots = []
        for (r, p), mean in zip(members, smoothed):
            record, result = records[r], records[r]["persons"][p]
            focal = focals[r]
            root = fit_root(mean, result.keypoints_2d, focal, np.array([record["width"], record["height"]]) / 2)
            record["extras"][p]["root_camera"] = root.tolist()
            if smoothing:
                record["extras"][p]["mean_smoothed"] = mean.tolist()
            roots.append(root)
        if args.bvh:
            written.append(write_bvh(Path(out) / f"{stem}_track{track}.bvh", positions, smoothed, np.stack(roots), fps))
    distinct = sorted(set(focals.values()))
    header = {"fps": fps, "tracks": len(tracks), "smoothing": smoothing.describe() if smoothing else None,
              "focal_px": distinct[0] if len(distinct) == 1 else distinct, "focal_source": focal_source}
    return header, written


def _focal_lengths(records, args, kind):
    """(focal length in pixels per record index, where the last came from): --focal, the image's EXIF, or the default."""
    focals, source = {}, None
    for r, record in enumerate(records):
        path = None
        if kind == "image":
            path = args.input
        elif kind == "folder":
            path = Path(args.input) / record["image"]
        focals[r], source = resolve_focal(args.focal, path, record["width"], record["height"])
    return focals, source


def person_extras(record, index):
    """What ``finish`` added to person ``index`` of ``record`` (track, camera-space root, smoothed mean)."""
    return record.get("extras", [{}] * (index + 1))[index]


def npz_columns(records):
    """Columns of the npz beside the lifted ones: ``tracks`` (N,), ``root_camera`` (N, 3), ``mean_smoothed`` (N, 17, 3)."""
    extras = [person_extras(r, i) for r in records for i in range(len(r["persons"]))]
    columns = {"tracks": np.array([e["track"] for e in extras], dtype=np.int64),
               "root_camera": np.array([e["root_camera"] for e in extras], dtype=np.float32).reshape(-1, 3)}
    if extras and "mean_smoothed" in extras[0]:
        columns["mean_smoothed"] = np.array([e["mean_smoothed"] for e in extras], dtype=np.float32)
    return columns

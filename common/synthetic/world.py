"""Synthetic Human3.6M- and MPI-INF-3DHP-like WebDataset shards in the released layout.

Poses come from common.synthetic.body_model (action families, per-subject bone lengths,
joint limits), cameras are Human3.6M-like, images are rendered with
common.synthetic.render (depth-ordered shaded capsules on textured backgrounds), and the 2D
inputs imitate a detector (pixel noise, occasional outliers and left/right swaps).

Layout (``docs/formats.md``, Shards):
- h36m: ``train/`` (subjects 1 5 6 7 8) and ``validation/`` (subjects 9 11), shards
  ``data-000000.tar ...``, keys ``s_XX_act_YY_subact_ZZ_ca_WW_NNNNNN``; ``jpg`` full
  1000 x 1002 frames and a ``pyd`` dict: ``joints_3d`` (17, 3) metres camera
  coordinates, ``joints_2d_cpn`` (17, 2) normalized screen coordinates,
  ``joints_2d_cpn_crop`` (17, 2) crop pixels, ``center`` (2,), ``scale`` (2,),
  ``camera_id`` (0-3), and the noise-free ``joints_2d_gt`` / ``joints_2d_gt_crop``.
- mpi: ``train/`` (keys ``S{1-8}_Seq{1-2}_NNNNNN``) and ``test/`` (keys
  ``TS{1-6}_NNNNNN``); ``png`` 192 x 256 crops and a ``pyd`` dict: ``joints_3d``
  millimetres, ``joints_2d`` normalized screen coordinates of a 2048 x 2048 frame,
  ``joints_2d_crop``, and ``joints_2d_gt_crop``.

Every sample is drawn from its own generator seeded by (seed, dataset, split,
index), so the output is the same for any number of worker processes.

Usage:
    python -m common.synthetic --out webdataset/synthetic --dataset h36m --train 4000 --test 800 --seed 0
"""
import argparse
import colorsys
import functools
import io
import json
import logging
import multiprocessing
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, atomic_write, output_folder, write_text
from common.core.geometry import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_affine,
    bbox_center_scale,
    crop_image,
    crop_matrix,
    invert_affine,
    normalize_screen_coordinates,
)
from common.core.skeleton import DATASETS, H36M_TEST_SUBJECTS, H36M_TRAIN_SUBJECTS, LEFT_JOINTS, PARENTS, RIGHT_JOINTS
from common.data.counts import record_counts
from common.data.samples import shard_writer
from common.synthetic.body_model import ACTION_FAMILIES, H36M_ACTION_FAMILY, sample_body_shape, sample_pose
from common.synthetic.render import Capsules, new_depth_buffer, render_capsules

log = logging.getLogger(__name__)

TEST_SPLIT = {"h36m": "validation", "mpi": "test"}
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Human3.6M frame size and the intrinsics (fx, fy, cx, cy) of its four cameras.
H36M_WIDTH, H36M_HEIGHT = 1000, 1002
H36M_INTRINSICS = (
    (1145.05, 1143.78, 512.54, 515.45),
    (1149.68, 1147.59, 508.85, 508.06),
    (1149.14, 1148.80, 519.82, 501.40),
    (1145.51, 1144.77, 514.97, 501.88),
)
# MPI-INF-3DHP-like virtual frame: the shards keep only the crop.
MPI_WIDTH = MPI_HEIGHT = 2048
MPI_INTRINSICS = (1500.0, 1500.0, 1024.0, 1024.0)
MPI_TRAIN_SUBJECTS = tuple(range(1, 9))
MPI_TEST_SEQUENCES = tuple(range(1, 7))

_BACKGROUND_BANK_SIZE = 12
_MPI_BACKGROUND_SIZE = 384


@dataclass(frozen=True)
class NoiseOptions:
    """Detector-like corruption of the 2D inputs, in pixels of the 192 x 256 crop.

    Attributes:
        sigma: standard deviation of the Gaussian noise on every joint (>= 0).
        outlier_rate: probability that a joint is a gross error (0-1).
        outlier_sigma: standard deviation of a gross error's extra offset.
        swap_rate: probability per sample that one limb's left and right joints swap (0-1).
    """

    sigma: float = 2.0
    outlier_rate: float = 0.02
    outlier_sigma: float = 15.0
    swap_rate: float = 0.02

    def __post_init__(self):
        for name in ("sigma", "outlier_sigma"):
            if not 0 <= getattr(self, name) < float("inf"):  # NaN fails too
                raise BadInput(f"NoiseOptions.{name} ({NOISE_FLAGS[name]}) must be finite and >= 0, "
                               f"got {getattr(self, name)}")
        for name in ("outlier_rate", "swap_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInput(f"NoiseOptions.{name} ({NOISE_FLAGS[name]}) is a probability in [0, 1], "
                               f"got {getattr(self, name)}")


# The command-line option of each NoiseOptions field, for messages.
NOISE_FLAGS = {"sigma": "--noise-px", "outlier_rate": "--outlier-rate", "outlier_sigma": "--outlier-px",
               "swap_rate": "--swap-rate"}


@dataclass
class SyntheticSample:
    """One generated sample before encoding.

    Attributes:
        key: the WebDataset key.
        image: uint8 RGB, (1002, 1000, 3) frame for h36m or (256, 192, 3) crop for mpi.
        mask: (H, W) bool, where the person was drawn in ``image``.
        fields: the ``pyd`` dict (float32 arrays and ints) as written to the shard.
        family: the action family drawn.
    """

    key: str
    image: np.ndarray
    mask: np.ndarray
    fields: dict
    family: str


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise BadInput(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}")


def sample_identity(dataset, split, index):
    """Subject, action, sub-action, camera, family and key of sample ``index`` of a split.

    Consecutive indices cycle through subjects first, then actions, so that every
    split of a few hundred samples covers all of them. Returns a dict.
    """
    _check_dataset(dataset)
    test = split == TEST_SPLIT[dataset]
    if not test and split != "train":
        raise ValueError(f"unknown split {split!r} for {dataset}; valid: ['train', {TEST_SPLIT[dataset]!r}]")
    if dataset == "h36m":
        subjects = H36M_TEST_SUBJECTS if test else H36M_TRAIN_SUBJECTS
        n = len(subjects)
        subject = subjects[index % n]
        action = 2 + (index // n) % 15
        subaction = 1 + (index // (n * 15)) % 2
        camera = 1 + (index // (n * 30)) % 4
        key = f"s_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{camera:02d}_{index:06d}"
        return dict(subject=subject, action=action, subaction=subaction, camera=camera,
                    family=H36M_ACTION_FAMILY[action], key=key, body_id=subject)
    if test:
        sequence = MPI_TEST_SEQUENCES[index % len(MPI_TEST_SEQUENCES)]
        family = ACTION_FAMILIES[(index // len(MPI_TEST_SEQUENCES)) % len(ACTION_FAMILIES)]
        return dict(subject=sequence, action=None, subaction=None, camera=None, family=family,
                    key=f"TS{sequence}_{index:06d}", body_id=100 + sequence)
    subject = MPI_TRAIN_SUBJECTS[index % len(MPI_TRAIN_SUBJECTS)]
    seq = 1 + (index // len(MPI_TRAIN_SUBJECTS)) % 2
    family = ACTION_FAMILIES[(index // (2 * len(MPI_TRAIN_SUBJECTS))) % len(ACTION_FAMILIES)]
    return dict(subject=subject, action=None, subaction=seq, camera=None, family=family,
                key=f"S{subject}_Seq{seq}_{index:06d}", body_id=subject)


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


@functools.lru_cache(maxsize=64)
def subject_appearance(seed, dataset, body_id):
    """A subject's BodyShape and colours, fixed for (seed, dataset, body_id).

    Left limbs are blue-violet, right limbs red-orange, the torso a neutral or
    green-yellow shirt; returns (shape, colours dict name -> (3,) RGB in [0, 1]).
    """
    rng = np.random.default_rng([seed, DATASETS.index(dataset), 7919, body_id])
    shape = sample_body_shape(rng)
    left_hue, right_hue = rng.uniform(0.56, 0.72), rng.uniform(-0.02, 0.08)
    sat, val = rng.uniform(0.55, 0.85), rng.uniform(0.6, 0.85)
    shirt = _hsv(rng.choice([0.15, 0.3, 0.4, 0.12]), rng.uniform(0.0, 0.5), rng.uniform(0.45, 0.9))
    skin = np.array([0.92, 0.74, 0.6]) * rng.uniform(0.55, 1.0)
    colours = {
        "l_leg": _hsv(left_hue, sat, val * 0.8), "r_leg": _hsv(right_hue, sat, val * 0.8),
        "l_arm": _hsv(left_hue, sat * 0.8, min(val * 1.15, 1.0)),
        "r_arm": _hsv(right_hue, sat * 0.8, min(val * 1.15, 1.0)),
        "torso": shirt, "skin": skin,
    }
    return shape, colours


def _smooth_noise(rng, height, width, cells, channels=3):
    """Value noise: a (cells_y, cells_x) random grid resized bilinearly to (height, width), in [0, 1]."""
    cells_y = max(2, int(round(cells * height / width)))
    grid = (rng.random((cells_y, cells, channels)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255


def _background(rng, height, width):
    """A textured (height, width, 3) uint8 backdrop: a wall with a pattern above a floor."""
    wall = _hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.85))
    floor = _hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.7))
    image = np.empty((height, width, 3), dtype=np.float32)
    horizon = int(height * rng.uniform(0.45, 0.8))
    image[:horizon] = wall
    image[horizon:] = floor
    image *= 0.75 + 0.5 * _smooth_noise(rng, height, width, int(rng.integers(3, 8)))
    image += 0.12 * (_smooth_noise(rng, height, width, int(rng.integers(30, 90))) - 0.5)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(12, 90) * width / 1000
    pattern = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period))
    if rng.random() < 0.5:
        # Soft-edged tiles: sharp edges would double the JPEG size.
        pattern = np.tanh(3 * pattern * np.sin((xs * -np.sin(angle) + ys * np.cos(angle)) * (2 * np.pi / period)))
    strength = rng.uniform(0.03, 0.15)
    image[:horizon] *= 1 + strength * pattern[:horizon, :, None]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def background_bank(seed, height, width, count=_BACKGROUND_BANK_SIZE):
    """``count`` backgrounds (count, height, width, 3) uint8, identical in every process for a seed."""
    return np.stack([_background(np.random.default_rng([seed, 104729, i]), height, width) for i in range(count)])


def _place_person(rng, dataset, joints_body, extras):
    """Rotate the body to a random heading and put it in front of the camera.

    Returns camera-coordinate joints (17, 3) and extras (metres; x right, y down, z forward).
    """
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = np.radians(rng.uniform(3, 18))  # the camera looks down at the person
    c, s = np.cos(yaw), np.sin(yaw)
    heading = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    y_down = np.diag([1.0, -1.0, 1.0])
    ct, st = np.cos(-tilt), np.sin(-tilt)
    pitch = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
    rotation = pitch @ y_down @ heading
    low, high = (4.0, 6.0) if dataset == "h36m" else (3.5, 5.5)
    translation = np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.15, 0.25), rng.uniform(low, high)])
    joints = joints_body @ rotation.T + translation
    extras = {k: rotation @ v + translation for k, v in extras.items()}
    return joints, extras


def _project(points, intrinsics):
    fx, fy, cx, cy = intrinsics
    return np.stack([fx * points[..., 0] / points[..., 2] + cx, fy * points[..., 1] / points[..., 2] + cy], -1)


def _capsule_list(joints, extras, shape, colours):
    """(start, end, radius pair, colour) for every body part, in camera metres."""
    r, j, e = shape.radii, joints, extras
    parts = [
        (j[0], j[7], r["pelvis"], colours["torso"]), (j[7], j[8], r["chest"], colours["torso"]),
        (j[4], j[1], r["hips"], colours["torso"]), (j[11], j[14], r["shoulders"], colours["torso"]),
        (j[8], j[9], r["neck"], colours["skin"]), (e["head_centre"], e["head_centre"], r["head"], colours["skin"]),
    ]
    for side, hip, knee, ankle, shoulder, elbow, wrist in (("l", 4, 5, 6, 11, 12, 13), ("r", 1, 2, 3, 14, 15, 16)):
        leg, arm = colours[f"{side}_leg"], colours[f"{side}_arm"]
        parts += [
            (j[hip], j[knee], r["thigh"], leg), (j[knee], j[ankle], r["shin"], leg),
            (j[ankle], e[f"{side}_toe"], r["foot"], leg * 0.7),
            (j[shoulder], j[elbow], r["upper_arm"], arm), (j[elbow], j[wrist], r["forearm"], arm),
            (e[f"{side}_hand"], e[f"{side}_hand"], r["hand"], colours["skin"]),
        ]
    return parts


def _capsules_in_canvas(parts, intrinsics, matrix):
    """Project capsules into a canvas reached from frame pixels by the 2x3 ``matrix``."""
    starts = np.array([p[0] for p in parts])
    ends = np.array([p[1] for p in parts])
    radii = np.array([p[2] for p in parts])  # (N, 2) metres
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    focal = 0.5 * (intrinsics[0] + intrinsics[1]) * zoom
    return Capsules(
        p0=apply_affine(_project(starts, intrinsics), matrix), p1=apply_affine(_project(ends, intrinsics), matrix),
        z0=starts[:, 2], z1=ends[:, 2], r0=radii[:, 0] * focal / starts[:, 2], r1=radii[:, 1] * focal / ends[:, 2],
        colour=np.array([p[3] for p in parts]),
    ), focal


# Limbs whose left and right joints a detector may confuse as a whole.
_SWAP_GROUPS = (((4, 5, 6), (1, 2, 3)), ((11, 12, 13), (14, 15, 16)), ((5, 6), (2, 3)), ((12, 13), (15, 16)))


def _detect(rng, keypoints_crop, noise):
    """Detector-like 2D keypoints (17, 2) from the true ones, all in crop pixels."""
    # Draw every random number whatever the rates, so that the rates change only the noise.
    jitter = rng.normal(0.0, 1.0, keypoints_crop.shape)
    outlier = rng.random(len(keypoints_crop)) < noise.outlier_rate
    outlier_offset = rng.normal(0.0, 1.0, keypoints_crop.shape)
    swap = rng.random() < noise.swap_rate
    group = _SWAP_GROUPS[rng.integers(len(_SWAP_GROUPS))]
    detected = keypoints_crop.copy()
    if swap:
        left, right = list(group[0]), list(group[1])
        detected[left], detected[right] = keypoints_crop[right], keypoints_crop[left]
    detected += noise.sigma * jitter + outlier[:, None] * noise.outlier_sigma * outlier_offset
    return detected


def _pyd_fields(dataset, joints, keypoints, keypoints_crop, detected, detected_crop, center, scale, camera,
                width, height):
    """The sample's ``pyd`` dict in the released layout of ``dataset`` (``docs/formats.md``, Shards)."""
    f32 = np.float32
    if dataset == "h36m":
        return {
            "joints_3d": joints.astype(f32),
            "joints_2d_cpn": normalize_screen_coordinates(detected, width, height).astype(f32),
            "joints_2d_cpn_crop": detected_crop.astype(f32),
            "center": center.astype(f32), "scale": scale.astype(f32),
            "camera_id": camera - 1,
            "joints_2d_gt": normalize_screen_coordinates(keypoints, width, height).astype(f32),
            "joints_2d_gt_crop": keypoints_crop.astype(f32),
        }
    return {
        "joints_3d": (joints * 1000).astype(f32),
        "joints_2d": normalize_screen_coordinates(detected, width, height).astype(f32),
        "joints_2d_crop": detected_crop.astype(f32),
        "joints_2d_gt_crop": keypoints_crop.astype(f32),
    }


def make_sample(dataset, split, index, seed=0, noise=NoiseOptions()):
    """Generate sample ``index`` of a split; deterministic in (dataset, split, index, seed, noise).

    Args:
        dataset: "h36m" or "mpi".
        split: "train", or "validation" (h36m) / "test" (mpi).
        index: sample number within the split (>= 0).
        seed: dataset seed.
        noise: NoiseOptions for the 2D detections.
    Returns:
        SyntheticSample.
    """
    identity = sample_identity(dataset, split, index)
    split_id = 0 if split == "train" else 1
    rng = np.random.default_rng([seed, DATASETS.index(dataset), split_id, index])
    shape, colours = subject_appearance(seed, dataset, identity["body_id"])
    joints_body, extras_body = sample_pose(identity["family"], shape, rng)
    joints, extras = _place_person(rng, dataset, joints_body, extras_body)

    if dataset == "h36m":
        intrinsics = H36M_INTRINSICS[identity["camera"] - 1]
        width, height = H36M_WIDTH, H36M_HEIGHT
    else:
        intrinsics, width, height = MPI_INTRINSICS, MPI_WIDTH, MPI_HEIGHT
    keypoints = _project(joints, intrinsics)  # (17, 2) frame pixels
    center, scale = bbox_center_scale(keypoints)
    to_crop = crop_matrix(center, scale)
    keypoints_crop = apply_affine(keypoints, to_crop)
    detected_crop = _detect(rng, keypoints_crop, noise)
    detected = apply_affine(detected_crop, invert_affine(to_crop))

    parts = _capsule_list(joints, extras, shape, colours)
    if dataset == "h36m":
        frame = background_bank(seed, height, width)[rng.integers(_BACKGROUND_BANK_SIZE)]
        frame = frame[:, ::-1] if rng.random() < 0.5 else frame
        frame = frame.copy()
        # Only the region the crop sees needs the person drawn.
        corners = apply_affine(np.array([[0, 0], [CROP_WIDTH - 1, CROP_HEIGHT - 1]]), invert_affine(to_crop))
        x0, y0 = np.clip(np.floor(corners[0]).astype(int) - 2, 0, [width, height])
        x1, y1 = np.clip(np.ceil(corners[1]).astype(int) + 3, 0, [width, height])
        to_canvas = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
        image = frame
        canvas = frame[y0:y1, x0:x1].astype(np.float32) / 255
        mask = np.zeros((height, width), dtype=bool)
    else:
        bank = background_bank(seed, _MPI_BACKGROUND_SIZE, _MPI_BACKGROUND_SIZE)
        tile = bank[rng.integers(_BACKGROUND_BANK_SIZE)]
        oy, ox = rng.integers(0, _MPI_BACKGROUND_SIZE - CROP_HEIGHT), rng.integers(0, _MPI_BACKGROUND_SIZE - CROP_WIDTH)
        canvas = tile[oy:oy + CROP_HEIGHT, ox:ox + CROP_WIDTH].astype(np.float32) / 255
        canvas *= rng.uniform(0.7, 1.2, 3).astype(np.float32)
        to_canvas, x0, y0 = to_crop, 0, 0
        image = None
    capsules, focal = _capsules_in_canvas(parts, intrinsics, to_canvas)
    depth = new_depth_buffer(*canvas.shape[:2])
    render_capsules(canvas, depth, capsules, focal, reference_depth=float(joints[0, 2]))
    pixels = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    if image is None:
        image, mask = pixels, np.isfinite(depth)
    else:
        image[y0:y1, x0:x1] = pixels
        mask[y0:y1, x0:x1] = np.isfinite(depth)

    fields = _pyd_fields(dataset, joints, keypoints, keypoints_crop, detected, detected_crop, center, scale,
                         identity["camera"], width, height)
    return SyntheticSample(key=identity["key"], image=image, mask=mask, fields=fields, family=identity["family"])


def encode_sample(sample, dataset, jpeg_quality=85):
    """The raw WebDataset members of a sample: {"__key__", "jpg" or "png": bytes, "pyd": bytes}."""
    buffer = io.BytesIO()
    if dataset == "h36m":
        Image.fromarray(sample.image).save(buffer, format="JPEG", quality=jpeg_quality)
        extension = "jpg"
    else:
        Image.fromarray(sample.image).save(buffer, format="PNG", compress_level=1)
        extension = "png"
    return {"__key__": sample.key, extension: buffer.getvalue(), "pyd": pickle.dumps(sample.fields, protocol=4)}


def _encoded(task, dataset, seed, noise, jpeg_quality):
    split, index = task
    return encode_sample(make_sample(dataset, split, index, seed, noise), dataset, jpeg_quality)


def _settings(dataset, num_train, num_test, seed, noise, samples_per_shard, jpeg_quality):
    return {"version": MANIFEST_VERSION, "dataset": dataset, "num_train": num_train, "num_test": num_test,
            "seed": seed, "noise": asdict(noise), "samples_per_shard": samples_per_shard,
            "jpeg_quality": jpeg_quality}


def _pool(workers):
    methods = multiprocessing.get_all_start_methods()
    # fork starts in milliseconds; the children only run numpy and PIL.
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def generate_dataset(out_dir, dataset="h36m", num_train=4000, num_test=800, seed=0, workers=2,
                     noise=NoiseOptions(), samples_per_shard=500, jpeg_quality=85, progress=True, force=False):
    """Write a synthetic dataset in the released shard layout and return its shard paths.

    Nothing is regenerated when ``out_dir/manifest.json`` records the same settings
    and all its shards exist (``workers`` and ``progress`` do not change the output).

    Args:
        out_dir: folder that receives ``train/`` and ``validation/`` (h36m) or ``test/`` (mpi).
        dataset: "h36m" or "mpi".
        num_train, num_test: samples per split (>= 0).
        seed: dataset seed.
        workers: processes rendering in parallel (>= 1).
        noise: NoiseOptions for the 2D detections.
        samples_per_shard: samples per tar file (>= 1).
        jpeg_quality: JPEG quality of h36m frames (1-95).
        force: regenerate even when the manifest matches.
    Returns:
        dict split name -> list of shard paths (Path), in order.
    """
    _check_dataset(dataset)
    if num_train < 0 or num_test < 0 or samples_per_shard < 1 or workers < 1 or not 1 <= jpeg_quality <= 95:
        raise BadInput(f"expected --train, --test >= 0, --samples-per-shard, --workers >= 1 and --jpeg-quality "
                       f"1-95; got {num_train}, {num_test}, {samples_per_shard}, {workers}, {jpeg_quality}")
    out_dir = Path(out_dir)
    settings = _settings(dataset, num_train, num_test, seed, noise, samples_per_shard, jpeg_quality)
    splits = {"train": num_train, TEST_SPLIT[dataset]: num_test}
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and not force:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("settings") == settings:
            shards = {split: [out_dir / name for name in names] for split, names in manifest["shards"].items()}
            if all(p.exists() for paths in shards.values() for p in paths):
                log.info("synthetic %s: skipped, the shards in %s already have these settings (%s); "
                         "--force regenerates them", dataset, out_dir, manifest_path.name)
                return shards

    manifest_path.unlink(missing_ok=True)
    shards = {}
    tasks = []
    for split, count in splits.items():
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("data-*.tar"):
            stale.unlink()
        shards[split] = [folder / f"data-{i:06d}.tar" for i in range(-(-count // samples_per_shard))]
        tasks += [(split, i) for i in range(count)]

    work = functools.partial(_encoded, dataset=dataset, seed=seed, noise=noise, jpeg_quality=jpeg_quality)
    pool = _pool(workers) if workers > 1 else None
    results = pool.imap(work, tasks, chunksize=8) if pool else map(work, tasks)
    try:
        with tqdm(total=len(tasks), desc=f"synthetic {dataset}", unit="sample", disable=not progress) as bar:
            for split, count in splits.items():
                written = {}
                for number, path in enumerate(shards[split]):
                    written[path.name] = min(samples_per_shard, count - number * samples_per_shard)
                    with shard_writer(path) as writer:
                        for _ in range(written[path.name]):
                            writer.write(next(results))
                            bar.update()
                record_counts(out_dir / split, written)
    finally:
        if pool:
            pool.terminate()
    manifest = {"settings": settings,
                "shards": {split: [str(p.relative_to(out_dir)) for p in paths] for split, paths in shards.items()}}
    write_text(manifest_path, json.dumps(manifest, indent=2))
    return shards


def crop_view(sample, dataset):
    """The 192 x 256 crop a model sees, as uint8 (256, 192, 3), with the crop-pixel detections (17, 2)."""
    if dataset == "mpi":
        return sample.image, sample.fields["joints_2d_crop"]
    return crop_image(sample.image, sample.fields["center"], sample.fields["scale"]), sample.fields["joints_2d_cpn_crop"]


def contact_sheet(path, dataset="h36m", count=24, columns=6, seed=0, split="train", noise=NoiseOptions()):
    """Write a PNG grid of generated crops with their detected 2D joints drawn.

    Joints are dots, bones lines: cyan on the left side, yellow on the right,
    white in the middle; the caption is the action family.
    """
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * CROP_WIDTH, rows * CROP_HEIGHT), "black")
    for i in range(count):
        sample = make_sample(dataset, split, i, seed, noise)
        crop, keypoints = crop_view(sample, dataset)
        tile = Image.fromarray(crop)
        draw = ImageDraw.Draw(tile)
        for joint, parent in enumerate(PARENTS):
            colour = (0, 255, 255) if joint in LEFT_JOINTS else (255, 230, 0) if joint in RIGHT_JOINTS else (255, 255, 255)
            if parent >= 0:
                draw.line([tuple(keypoints[parent]), tuple(keypoints[joint])], fill=colour, width=1)
            x, y = keypoints[joint]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((3, 3), sample.family, fill=(255, 255, 255))
        sheet.paste(tile, ((i % columns) * CROP_WIDTH, (i // columns) * CROP_HEIGHT))
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"--visualize {path} is a folder, expected a file name (e.g. {path / 'sheet.png'})")
    output_folder(path.parent, "--visualize folder")
    with atomic_write(path) as stream:
        sheet.save(stream, format="PNG")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", metavar="DIR", help="output folder (receives train/ and validation/ or test/)")
    parser.add_argument("--dataset", choices=DATASETS, default="h36m",
                        help="released layout to imitate: Human3.6M or MPI-INF-3DHP (default: %(default)s)")
    parser.add_argument("--train", type=int, default=4000, help="training samples (default: %(default)s)")
    parser.add_argument("--test", type=int, default=800,
                        help="validation (h36m) or test (mpi) samples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="dataset seed: the same seed gives the same shards (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="rendering processes; the output does not depend on it (default: %(default)s)")
    parser.add_argument("--samples-per-shard", type=int, default=500,
                        help="samples per tar file (default: %(default)s)")
    parser.add_argument("--noise-px", type=float, default=NoiseOptions.sigma,
                        help="Gaussian noise of the 2D detections, crop pixels (default: %(default)s)")
    parser.add_argument("--outlier-rate", type=float, default=NoiseOptions.outlier_rate,
                        help="probability that a detected joint is a gross error (default: %(default)s)")
    parser.add_argument("--outlier-px", type=float, default=NoiseOptions.outlier_sigma,
                        help="spread of a gross error, crop pixels (default: %(default)s)")
    parser.add_argument("--swap-rate", type=float, default=NoiseOptions.swap_rate,
                        help="probability per sample of a left/right limb swap (default: %(default)s)")
    parser.add_argument("--jpeg-quality", type=int, default=85,
                        help="JPEG quality of the h36m frames, 1-95 (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    parser.add_argument("--visualize", metavar="PATH.png", help="write a contact sheet of training crops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out is None and args.visualize is None:
        parser.error("give --out DIR to write shards and/or --visualize PATH.png for a contact sheet")
    try:
        return _generate(args)
    except (BadInput, DiskFullError) as error:
        return refuse(error)


def _generate(args):
    """Write the shards and the contact sheet ``main``'s parsed ``args`` ask for; returns the exit status."""
    noise = NoiseOptions(args.noise_px, args.outlier_rate, args.outlier_px, args.swap_rate)
    if args.out is not None:
        output_folder(args.out, "--out folder")
        shards = generate_dataset(args.out, args.dataset, args.train, args.test, args.seed, args.workers, noise,
                                  args.samples_per_shard, args.jpeg_quality, force=args.force)
        for split, paths in shards.items():
            print(f"{split}: {len(paths)} shard(s) in {Path(args.out) / split}")
    if args.visualize is not None:
        print(f"contact sheet: {contact_sheet(args.visualize, args.dataset, seed=args.seed, noise=noise)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

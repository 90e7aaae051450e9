"""Tiny shards in the released layout (docs/formats.md, Shards), written from seeded random arrays.

For tests of anything that reads shards. A sample is a dict ``{"__key__": str,
"jpg" or "png": bytes, "pyd": dict of numpy arrays}``; ``write_shard`` pickles
the ``pyd`` dict and writes the tar. Tests may edit a sample's ``pyd`` dict or
image bytes before writing it, to make bad data.

The images are dark noise with a bright disk (radius ``MARKER_RADIUS`` frame
pixels) drawn at every 2D joint, so a reader's crop can be checked against the
keypoints independently of the reader's own arithmetic.

    rng = np.random.default_rng(0)
    samples = [make_h36m_sample(h36m_key(9, 2, i), rng) for i in range(4)]
    write_shard(tmp_path / "validation" / "data-000000.tar", samples)
"""
import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

import webdataset as wds
from common.core.geometry import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_affine,
    bbox_center_scale,
    crop_matrix,
    normalize_screen_coordinates,
)
from common.core.skeleton import NUM_JOINTS

FRAME_WIDTH, FRAME_HEIGHT = 320, 240  # small full frames keep tests fast
FOCAL = 300.0  # pixels; puts a 1.7 m person at 5 m about 100 px tall in the small frame
MARKER_RADIUS = 4
MARKER_VALUE = 250
BACKGROUND_MAX = 40


def h36m_key(subject, action, frame, subaction=1, camera=1):
    """``s_09_act_02_subact_01_ca_01_000123``-style key."""
    return f"s_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{camera:02d}_{frame:06d}"


def mpi_key(sequence, frame):
    """``TS1_000123``-style key of the MPI-INF-3DHP test set."""
    return f"TS{sequence}_{frame:06d}"


def encode_image(pixels, fmt):
    """(H, W, 3) uint8 -> encoded bytes; fmt ``"jpg"`` (quality 95) or ``"png"``."""
    buffer = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def draw_markers(width, height, points, rng):
    """(height, width, 3) uint8 dark noise with a bright disk at each (x, y) point."""
    pixels = rng.integers(0, BACKGROUND_MAX, size=(height, width, 3)).astype(np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    for x, y in points:
        pixels[(xs - x) ** 2 + (ys - y) ** 2 <= MARKER_RADIUS ** 2] = MARKER_VALUE
    return pixels


def random_pose_3d(rng):
    """(17, 3) float32 camera-frame joints in metres, about 5 m in front of the camera."""
    root = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), rng.uniform(4.5, 5.5)])
    offsets = rng.normal(0.0, 0.3, size=(NUM_JOINTS, 3))
    offsets[0] = 0
    return (root + offsets).astype(np.float32)


def make_h36m_sample(key, rng, width=FRAME_WIDTH, height=FRAME_HEIGHT):
    """A Human3.6M sample: full ``width`` x ``height`` jpg frame and its pyd.

    The 3D joints are projected with a pinhole camera (focal ``FOCAL``, centred);
    ``joints_2d_cpn`` are those projections in normalized screen coordinates,
    ``center``/``scale`` the HRNet box around them and ``joints_2d_cpn_crop`` the
    projections in crop pixels.
    """
    joints_3d = random_pose_3d(rng)
    pixels_2d = FOCAL * joints_3d[:, :2] / joints_3d[:, 2:] + np.array([width / 2, height / 2])
    center, scale = bbox_center_scale(pixels_2d)
    pyd = {
        "joints_3d": joints_3d,
        "joints_2d_cpn": normalize_screen_coordinates(pixels_2d, width, height).astype(np.float32),
        "joints_2d_cpn_crop": apply_affine(pixels_2d, crop_matrix(center, scale)).astype(np.float32),
        "center": center,
        "scale": scale,
        "camera_id": 0,
    }
    return {"__key__": key, "jpg": encode_image(draw_markers(width, height, pixels_2d, rng), "jpg"), "pyd": pyd}


def make_mpi_sample(key, rng):
    """An MPI-INF-3DHP sample: 192 x 256 png crop, pyd with ``joints_3d`` in millimetres."""
    joints_3d = random_pose_3d(rng)
    crop_2d = rng.uniform([20, 20], [CROP_WIDTH - 20, CROP_HEIGHT - 20], size=(NUM_JOINTS, 2))
    pyd = {
        "joints_3d": joints_3d * 1000,
        "joints_2d": normalize_screen_coordinates(crop_2d, 2048, 2048).astype(np.float32),
        "joints_2d_crop": crop_2d.astype(np.float32),
    }
    return {"__key__": key, "png": encode_image(draw_markers(CROP_WIDTH, CROP_HEIGHT, crop_2d, rng), "png"),
            "pyd": pyd}


def write_shard(path, samples):
    """Write samples (see the module docstring) to the tar ``path``; returns the path as str."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), encoder=False, mtime=0) as sink:
        for sample in samples:
            sample = dict(sample)
            if isinstance(sample.get("pyd"), dict):
                sample["pyd"] = pickle.dumps(sample["pyd"])
            sink.write(sample)
    return str(path)


def write_split(folder, dataset, counts, seed=0):
    """Shards ``data-000000.tar ...`` in ``folder`` with ``counts[i]`` samples each, unique keys.

    Human3.6M keys cycle through actions 2-16 of subject 9; MPI keys through
    test sequences 1-6. Returns the shard paths (str), in order.
    """
    rng = np.random.default_rng(seed)
    paths, frame = [], 0
    for index, count in enumerate(counts):
        samples = []
        for _ in range(count):
            if dataset == "h36m":
                samples.append(make_h36m_sample(h36m_key(9, 2 + frame % 15, frame), rng))
            else:
                samples.append(make_mpi_sample(mpi_key(1 + frame % 6, frame), rng))
            frame += 1
        paths.append(write_shard(Path(folder) / f"data-{index:06d}.tar", samples))
    return paths

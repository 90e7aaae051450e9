"""One sample of the released WebDataset shards of Human3.6M and MPI-INF-3DHP:
reading its fields, cropping, the flipped test view, batching, and writing shards.

A shard is a tar of samples ``<key>.jpg|png`` + ``<key>.pyd`` (a pickled dict of
numpy arrays, read with ``common.core.safe_pickle`` so that it cannot run code);
``docs/formats.md`` (Shards) gives the fields of each dataset and their units.
``decode_sample`` turns one raw sample into model inputs and targets;
``common.data.loader`` streams batches of them.

Units and coordinates of a decoded sample:
- ``image``: RGB / 255, normalized with ImageNet mean and std, (3, 256, 192).
- ``keypoints_3d``: metres, root-relative (joint 0 exactly 0), (1, 17, 3).
- ``keypoints_2d``: normalized screen coordinates (x in [-1, 1]), (17, 2).
- ``keypoints_2d_crop``: pixels of the 192 x 256 crop, (17, 2).
- ``ref``: the context blocks' reference points, ``reference_points(keypoints_2d_crop)``.
In evaluation the image and 2D inputs gain a leading axis of 2: the original
view and its horizontal flip; the 3D target stays unflipped.

Bad data (undecodable image, missing field, wrong shape, non-finite values, a
crop box off the frame, a pyd that asks to run code) raises ``ShardDataError``
naming the shard and the key.
"""
import os
import re
from contextlib import contextmanager

import numpy as np
import torch

import webdataset as wds
from common.core import safe_pickle
from common.core.errors import BadInput, one_line
from common.core.files import atomic_write
from common.core.geometry import CROP_HEIGHT, CROP_WIDTH, PIXEL_STD, crop_image
from common.core.skeleton import (
    DATASETS,
    NUM_JOINTS,
    flip_keypoints_crop,
    flip_keypoints_normalized,
    flip_pose_3d,
)
from common.data.decode import decode_rgb

# The reader's image normalisation (RGB / 255, then per channel): ImageNet's mean and std.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Keys of the released shards: Human3.6M ``s_09_act_02_subact_01_ca_01_000123``,
# MPI-INF-3DHP test ``TS1_000123`` (test sequence 1).
H36M_KEY = re.compile(r"^s_(\d+)_act_(\d+)_subact_(\d+)_ca_(\d+)_(\d+)$")
MPI_KEY = re.compile(r"^TS(\d+)_(\d+)$")

# pyd fields each dataset needs: name -> shape.
H36M_FIELDS = {
    "joints_3d": (NUM_JOINTS, 3),
    "joints_2d_cpn": (NUM_JOINTS, 2),
    "joints_2d_cpn_crop": (NUM_JOINTS, 2),
    "center": (2,),
    "scale": (2,),
}
MPI_FIELDS = {
    "joints_3d": (NUM_JOINTS, 3),
    "joints_2d": (NUM_JOINTS, 2),
    "joints_2d_crop": (NUM_JOINTS, 2),
}

# Sides of a sensible crop box, in frame pixels: at least a few pixels, at most ten frames.
MIN_BOX_PIXELS = 4
MAX_BOX_FRAMES = 10

TENSOR_FIELDS = ("image", "crop", "keypoints_3d", "keypoints_2d", "keypoints_2d_crop", "ref")


class ShardDataError(BadInput):
    """A shard or sample that cannot be read; ``shard`` and ``key`` say where."""

    def __init__(self, message, shard=None, key=None, problem=None):
        super().__init__(message)
        self.shard, self.key, self.problem = shard, key, problem


def bad_sample(shard, key, problem):
    """The ``ShardDataError`` for ``problem`` in ``shard`` (and sample ``key``, None for the tar itself)."""
    where = f"shard {shard}" if key is None else f"shard {shard}, sample {key!r}"
    problem = one_line(problem)  # numpy's messages may quote arrays over several lines
    return ShardDataError(
        f"{where}: {problem}. Re-create or re-download that shard, or pass --skip-bad "
        "(skip_bad=True in Python) to skip bad samples and report them at the end.",
        shard=shard, key=key, problem=problem)


def check_dataset(dataset):
    """Raise ValueError unless ``dataset`` is one of ``DATASETS``."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def parse_key(key):
    """Subject and action numbers carried by a sample key.

    Returns:
        dict with ``subject`` and ``action`` (ints, or None where the key does not
        carry them) and, for Human3.6M keys, ``subaction``, ``camera`` (1-4) and ``frame``.
        MPI-INF-3DHP test keys ``TS<n>_<frame>`` give the test sequence n as ``subject``.
    """
    match = H36M_KEY.match(key)
    if match:
        subject, action, subaction, camera, frame = (int(g) for g in match.groups())
        return dict(subject=subject, action=action, subaction=subaction, camera=camera, frame=frame)
    match = MPI_KEY.match(key)
    if match:
        return dict(subject=int(match.group(1)), action=None, frame=int(match.group(2)))
    return dict(subject=None, action=None)


def reference_points(keypoints_2d_crop):
    """Crop pixels (..., 2) -> the context blocks' reference points in [-1, 1] (align_corners=True)."""
    half = torch.tensor([CROP_WIDTH / 2, CROP_HEIGHT / 2], dtype=torch.float32)
    if isinstance(keypoints_2d_crop, torch.Tensor):
        return keypoints_2d_crop / half.to(keypoints_2d_crop) - 1
    return np.asarray(keypoints_2d_crop) / half.numpy() - 1


def normalize_image(crop):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 tensor, / 255 then ImageNet mean/std."""
    return normalize_crops(crop_tensor(crop))


def crop_tensor(crop):
    """(H, W, 3) uint8 array -> a uint8 tensor sharing its memory (copied only if read-only or strided)."""
    return torch.from_numpy(np.require(crop, requirements=["C", "W"]))


def normalize_crops(crops, mirror=False):
    """uint8 RGB crops (..., H, W, 3) -> float32 (..., 3, H, W): / 255, then ImageNet mean/std.

    One pass over a whole batch on the crops' device (the GPU when they are there).
    With ``mirror`` the left-right mirror view joins each crop: (..., 2, 3, H, W), view 0
    the crop as given. Mirroring after normalising is exact (it only moves pixels).
    """
    if crops.dtype != torch.uint8 or crops.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) uint8 crops, got {crops.dtype} of shape {tuple(crops.shape)}")
    mean, std = (torch.from_numpy(v).to(crops.device) for v in (IMAGE_MEAN, IMAGE_STD))
    # The same float32 steps as per-sample NumPy normalisation (bit for bit), in place on the new tensor.
    images = crops.float().div_(255).sub_(mean).div_(std).movedim(-1, -3)  # (..., 3, H, W)
    if mirror:
        return torch.stack([images, images.flip(-1)], dim=-4)  # (..., 2, 3, H, W)
    return images.contiguous()


def device_images(batch, device, test):
    """The normalised images of a loader batch, on ``device``.

    A batch of uint8 crops (``crop`` (B, 256, 192, 3), the loader's default) is moved
    as 8 bits and normalised there; a test batch (``test=True``: both flip-test
    views) gains the mirror view there too. A batch of normalised ``image``
    (``build_loader(uint8_crops=False)``) is moved as it is.
    Returns:
        (B, 3, 256, 192) for training batches, (B, 2, 3, 256, 192) for test batches; float32.
    """
    if "crop" not in batch:
        return batch["image"].to(device, non_blocking=True)
    crops = batch["crop"].to(device, non_blocking=True)
    return normalize_crops(crops, mirror=test)


def _read_image(sample, shard, key):
    for ext in ("jpg", "png", "jpeg"):
        if ext in sample:
            data = sample[ext]
            break
    else:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise bad_sample(shard, key, f"no image: expected a 'jpg' or 'png' entry, found {found}")
    try:
        return decode_rgb(data)
    except Exception as exn:
        raise bad_sample(shard, key, f"the {ext} image does not decode ({type(exn).__name__}: {exn})") from exn


def read_fields(sample, shard, key, fields):
    """The pyd fields of a raw sample, checked: {name: float32 array of the shape ``fields`` gives}.

    Args:
        sample: raw WebDataset sample with a ``pyd`` entry (pickled dict, read safely).
        shard, key: where the sample is, for error messages.
        fields: {name: shape}, e.g. ``H36M_FIELDS``; other fields of the pyd are ignored.
    Raises:
        ShardDataError: no pyd, a pyd that does not unpickle or asks to run code, a
            missing, non-numeric, mis-shaped or non-finite field.
    """
    if "pyd" not in sample:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise bad_sample(shard, key, f"no 'pyd' entry (pickled labels), found {found}")
    try:
        labels = safe_pickle.loads(sample["pyd"])
    except safe_pickle.RefusedGlobal as exn:
        raise bad_sample(shard, key, f"the pyd entry asks for {exn.name}, which labels never need and which could "
                               "run code: refused (only dicts, lists, numbers, strings and numpy arrays are read)"
                   ) from exn
    except Exception as exn:
        raise bad_sample(shard, key, f"the pyd entry does not unpickle ({type(exn).__name__}: {exn})") from exn
    if not isinstance(labels, dict):
        raise bad_sample(shard, key, f"the pyd entry should be a dict of arrays, found {type(labels).__name__}")
    arrays = {}
    for name, shape in fields.items():
        if name not in labels:
            raise bad_sample(shard, key, f"pyd has no field {name!r} (expected {sorted(fields)}, found {sorted(labels)})")
        try:
            value = np.asarray(labels[name], dtype=np.float32)
        except (TypeError, ValueError) as exn:
            raise bad_sample(shard, key, f"pyd field {name!r} is not numeric ({exn})") from exn
        if value.shape != shape:
            raise bad_sample(shard, key, f"pyd field {name!r} has shape {value.shape}, expected {shape}")
        if not np.isfinite(value).all():
            raise bad_sample(shard, key, f"pyd field {name!r} holds NaN or infinite values")
        arrays[name] = value
    return arrays


def _check_box(center, scale, frame_shape, shard, key):
    """Raise ShardDataError unless the HRNet box is a sensible size and overlaps the frame.

    A box off the frame crops black; a tiny or huge one shrinks or blows up the
    person beyond anything the network saw: either would change the metrics silently.
    """
    height, width = frame_shape[:2]
    size = scale * PIXEL_STD  # (2,) box width and height in frame pixels
    largest = MAX_BOX_FRAMES * max(width, height)
    if not ((size >= MIN_BOX_PIXELS) & (size <= largest)).all():
        raise bad_sample(shard, key, f"pyd field 'scale' {scale.tolist()} gives a {size[0]:.4g} x {size[1]:.4g} px "
                               f"crop box; expected sides of {MIN_BOX_PIXELS} to {largest} px for this "
                               f"{width}x{height} frame")
    low, high = center - size / 2, center + size / 2
    if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
        raise bad_sample(shard, key, f"the crop box (pyd 'center' {center.tolist()}, 'scale' {scale.tolist()}) spans "
                               f"x {low[0]:.4g}..{high[0]:.4g}, y {low[1]:.4g}..{high[1]:.4g} px and does not "
                               f"overlap the {width}x{height} frame")


def _root_relative_metres(joints_3d, millimetres):
    """(17, 3) camera coordinates -> (1, 17, 3) root-relative metres (root exactly 0)."""
    pose = torch.from_numpy(joints_3d)
    pose = pose - pose[:1]
    if millimetres:
        pose = pose / 1000
    return pose[None]  # (1, 17, 3)


def read_pose_3d(sample, dataset):
    """The 3D target of a raw sample from its labels alone, without decoding the image.

    Returns (1, 17, 3) metres, root-relative, unflipped: what ``decode_sample``
    returns as ``keypoints_3d`` in test mode. Raises ShardDataError like it.
    """
    check_dataset(dataset)
    shard = sample.get("__url__", "<unknown shard>")
    key = sample.get("__key__", "<no key>")
    arrays = read_fields(sample, shard, key, {"joints_3d": (NUM_JOINTS, 3)})
    return _root_relative_metres(arrays["joints_3d"], millimetres=dataset == "mpi")


def decode_sample(sample, dataset, train, rng=None, uint8_crops=False):
    """Turn one raw WebDataset sample into model inputs and targets.

    Human3.6M frames are cropped from the pyd's ``center``/``scale`` (``docs/formats.md``, Crop);
    MPI-INF-3DHP images are already 192 x 256 crops and their millimetres become metres.

    Args:
        sample: dict with ``__key__``, image bytes under ``jpg`` or ``png``, ``pyd``
            bytes, and optionally ``__url__`` (the shard, used in error messages).
        dataset: ``"h36m"`` or ``"mpi"``.
        train: True flips image, 2D and 3D together with probability 0.5; False
            returns the original and its flip stacked on a leading axis of 2.
        rng: numpy Generator for the training flip (a fresh unseeded one if None).
        uint8_crops: return the 8-bit crop as ``crop`` (256, 192, 3) uint8 (in
            training flipped with the 2D and 3D) instead of ``image``, and no mirror
            image in test mode: ``normalize_crops``/``device_images`` make both later,
            for a whole batch at once.
    Returns:
        dict: ``image`` (3, 256, 192) / (2, 3, 256, 192) float32; ``keypoints_3d``
        (1, 17, 3) metres, root-relative; ``keypoints_2d`` (17, 2) / (2, 17, 2)
        normalized screen coordinates; ``keypoints_2d_crop`` (17, 2) / (2, 17, 2)
        crop pixels; ``ref`` like keypoints_2d_crop, in [-1, 1]; ``key`` (str);
        ``subject`` and ``action`` (int or None, see ``parse_key``).
    Raises:
        ShardDataError: naming the shard and key, for any sample that cannot be read.
    """
    check_dataset(dataset)
    shard = sample.get("__url__", "<unknown shard>")
    key = sample.get("__key__", "<no key>")
    try:
        return _decode(sample, dataset, train, rng, shard, key, not uint8_crops)
    except ShardDataError:
        raise
    except Exception as exn:  # anything unforeseen still says where it happened
        raise bad_sample(shard, key, f"{type(exn).__name__}: {exn}") from exn


def _decode(sample, dataset, train, rng, shard, key, normalize):
    if dataset == "h36m":
        arrays = read_fields(sample, shard, key, H36M_FIELDS)
        frame = _read_image(sample, shard, key)
        _check_box(arrays["center"], arrays["scale"], frame.shape, shard, key)
        crop = crop_image(frame, arrays["center"], arrays["scale"])
        joints_3d, joints_2d, joints_crop = (arrays[n] for n in ("joints_3d", "joints_2d_cpn", "joints_2d_cpn_crop"))
        millimetres = False
    else:
        arrays = read_fields(sample, shard, key, MPI_FIELDS)
        crop = _read_image(sample, shard, key)
        if crop.shape[:2] != (CROP_HEIGHT, CROP_WIDTH):
            raise bad_sample(shard, key, f"MPI image is {crop.shape[1]}x{crop.shape[0]}, expected the "
                                   f"{CROP_WIDTH}x{CROP_HEIGHT} crop")
        joints_3d, joints_2d, joints_crop = (arrays[n] for n in ("joints_3d", "joints_2d", "joints_2d_crop"))
        millimetres = True

    pose = _root_relative_metres(joints_3d, millimetres)
    keypoints = torch.from_numpy(joints_2d)
    keypoints_crop = torch.from_numpy(joints_crop)

    # Mirroring the 8-bit crop before normalizing is exact and cheaper than flipping the tensor.
    if train:
        rng = np.random.default_rng() if rng is None else rng
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            keypoints = flip_keypoints_normalized(keypoints)
            keypoints_crop = flip_keypoints_crop(keypoints_crop, CROP_WIDTH)
            pose = flip_pose_3d(pose)
        views = dict(keypoints_2d=keypoints, keypoints_2d_crop=keypoints_crop, ref=reference_points(keypoints_crop))
        if normalize:
            views["image"] = normalize_image(crop)
    else:
        views = flip_test_views(None if not normalize else crop, keypoints, keypoints_crop)
    if not normalize:
        views["crop"] = crop_tensor(crop)  # (256, 192, 3) uint8

    parsed = parse_key(key)
    return dict(**views, keypoints_3d=pose, key=key, subject=parsed["subject"], action=parsed["action"])


def flip_test_views(crop, keypoints_2d, keypoints_2d_crop):
    """The two views a test sample is lifted from: the crop as given and mirrored.

    Shared by evaluation (through ``decode_sample``) and by inference on a user's
    images, so that both feed the model the same numbers.

    Args:
        crop: (256, 192, 3) uint8 RGB person crop; None leaves ``image`` out.
        keypoints_2d: (17, 2) float32 tensor, normalized screen coordinates.
        keypoints_2d_crop: (17, 2) float32 tensor, crop pixels.
    Returns:
        dict of ``image`` (2, 3, 256, 192), ``keypoints_2d``, ``keypoints_2d_crop``
        and ``ref`` (2, 17, 2); index 0 is the original view, 1 the mirror image.
    """
    keypoints = torch.stack([keypoints_2d, flip_keypoints_normalized(keypoints_2d)])  # (2, 17, 2)
    keypoints_crop = torch.stack([keypoints_2d_crop, flip_keypoints_crop(keypoints_2d_crop, CROP_WIDTH)])
    views = dict(keypoints_2d=keypoints, keypoints_2d_crop=keypoints_crop, ref=reference_points(keypoints_crop))
    if crop is not None:
        views["image"] = normalize_crops(crop_tensor(crop), mirror=True)  # (2, 3, H, W)
    return views


def collate_samples(samples):
    """Stack decoded samples into a batch: tensors gain a batch axis, ``key``/``subject``/``action`` become lists.

    The samples hold either ``image`` (normalised) or ``crop`` (uint8), as ``decode_sample`` made them.
    """
    batch = {name: torch.stack([s[name] for s in samples]) for name in TENSOR_FIELDS if name in samples[0]}
    for name in ("key", "subject", "action"):
        batch[name] = [s[name] for s in samples]
    return batch


PARTIAL_SUFFIX = ".partial"


@contextmanager
def shard_writer(path):
    """Write one shard atomically: yields a ``webdataset.TarWriter`` (raw bytes, no encoding).

    The tar is written to ``path + ".partial"``, flushed to disk and renamed to
    ``path`` when the block ends; on an error the partial file is removed, so a
    crash never leaves a truncated shard under the final name. Members carry no
    time stamp or owner, so the same samples always give the same bytes.
    Written with ``common.core.files.atomic_write``.
    """
    path = os.fspath(path)
    with atomic_write(path, temporary=path + PARTIAL_SUFFIX) as stream:  # a full disk: DiskFullError
        with wds.TarWriter(stream, user="", group="", mode=0o644, encoder=False, mtime=0) as writer:
            yield writer

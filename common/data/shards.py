"""Reading the released WebDataset shards of Human3.6M and MPI-INF-3DHP (SPEC §2).

A shard is a tar of samples ``<key>.jpg|png`` + ``<key>.pyd`` (a pickled dict of
numpy arrays, read with ``common.core.safe_pickle`` so that it cannot run code).
``decode_sample`` turns one raw sample into model inputs and targets;
``build_loader`` streams batches of them through a WebDataset pipeline (shard
list -> split by process and worker -> tar reading -> shuffle -> decode ->
batch), optionally in DataLoader worker processes.

Units and coordinates of a decoded sample:
- ``image``: RGB / 255, normalized with ImageNet mean and std, (3, 256, 192).
- ``keypoints_3d``: metres, root-relative (joint 0 exactly 0), (1, 17, 3).
- ``keypoints_2d``: normalized screen coordinates (x in [-1, 1]), (17, 2).
- ``keypoints_2d_crop``: pixels of the 192 x 256 crop, (17, 2).
- ``ref``: the context blocks' reference points, ``reference_points(keypoints_2d_crop)``.
In evaluation the image and 2D inputs gain a leading axis of 2: the original
view and its horizontal flip; the 3D target stays unflipped.

Bad data (unreadable tar, undecodable image, missing field, wrong shape,
non-finite values, a crop box off the frame, a pyd that asks to run code) raises ``ShardDataError`` naming the shard and the key; with
``skip_bad=True`` the loader skips such samples, counts them and logs a summary
at the end of each pass (``ShardLoader.skipped``).
"""
import io
import logging
import os
import random
import re
from collections import namedtuple
from contextlib import contextmanager
from glob import escape, glob

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from common.core import safe_pickle
from common.core.geometry import CROP_HEIGHT, CROP_WIDTH, PIXEL_STD, crop_image
from common.core.skeleton import NUM_JOINTS, flip_keypoints_crop, flip_keypoints_normalized, flip_pose_3d

log = logging.getLogger(__name__)

DATASETS = ("h36m", "mpi")
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

TENSOR_FIELDS = ("image", "keypoints_3d", "keypoints_2d", "keypoints_2d_crop", "ref")
DEFAULT_SPLITS = {("h36m", True): "train", ("h36m", False): "validation",
                  ("mpi", True): "train", ("mpi", False): "test"}

SkipRecord = namedtuple("SkipRecord", "shard key reason")
SkipRecord.__doc__ = "One skipped sample or unreadable shard part: shard URL, sample key (or None), reason."


class ShardDataError(ValueError):
    """A shard or sample that cannot be read; ``shard`` and ``key`` say where."""

    def __init__(self, message, shard=None, key=None, problem=None):
        super().__init__(message)
        self.shard, self.key, self.problem = shard, key, problem


def _bad(shard, key, problem):
    where = f"shard {shard}" if key is None else f"shard {shard}, sample {key!r}"
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
    scaled = (crop.astype(np.float32) / 255 - IMAGE_MEAN) / IMAGE_STD
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))  # (3, H, W)


def _read_image(sample, shard, key):
    for ext in ("jpg", "png", "jpeg"):
        if ext in sample:
            data = sample[ext]
            break
    else:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise _bad(shard, key, f"no image: expected a 'jpg' or 'png' entry, found {found}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Exception as exn:
        raise _bad(shard, key, f"the {ext} image does not decode ({type(exn).__name__}: {exn})") from exn


def _read_fields(sample, shard, key, fields):
    if "pyd" not in sample:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise _bad(shard, key, f"no 'pyd' entry (pickled labels), found {found}")
    try:
        labels = safe_pickle.loads(sample["pyd"])
    except safe_pickle.RefusedGlobal as exn:
        raise _bad(shard, key, f"the pyd entry asks for {exn.name}, which labels never need and which could "
                               "run code: refused (only dicts, lists, numbers, strings and numpy arrays are read)"
                   ) from exn
    except Exception as exn:
        raise _bad(shard, key, f"the pyd entry does not unpickle ({type(exn).__name__}: {exn})") from exn
    if not isinstance(labels, dict):
        raise _bad(shard, key, f"the pyd entry should be a dict of arrays, found {type(labels).__name__}")
    arrays = {}
    for name, shape in fields.items():
        if name not in labels:
            raise _bad(shard, key, f"pyd has no field {name!r} (expected {sorted(fields)}, found {sorted(labels)})")
        try:
            value = np.asarray(labels[name], dtype=np.float32)
        except (TypeError, ValueError) as exn:
            raise _bad(shard, key, f"pyd field {name!r} is not numeric ({exn})") from exn
        if value.shape != shape:
            raise _bad(shard, key, f"pyd field {name!r} has shape {value.shape}, expected {shape}")
        if not np.isfinite(value).all():
            raise _bad(shard, key, f"pyd field {name!r} holds NaN or infinite values")
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
        raise _bad(shard, key, f"pyd field 'scale' {scale.tolist()} gives a {size[0]:.4g} x {size[1]:.4g} px "
                               f"crop box; expected sides of {MIN_BOX_PIXELS} to {largest} px for this "
                               f"{width}x{height} frame")
    low, high = center - size / 2, center + size / 2
    if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
        raise _bad(shard, key, f"the crop box (pyd 'center' {center.tolist()}, 'scale' {scale.tolist()}) spans "
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
    arrays = _read_fields(sample, shard, key, {"joints_3d": (NUM_JOINTS, 3)})
    return _root_relative_metres(arrays["joints_3d"], millimetres=dataset == "mpi")


def decode_sample(sample, dataset, train, rng=None):
    """Turn one raw WebDataset sample into model inputs and targets.

    Human3.6M frames are cropped from the pyd's ``center``/``scale`` (SPEC §2);
    MPI-INF-3DHP images are already 192 x 256 crops and their millimetres become metres.

    Args:
        sample: dict with ``__key__``, image bytes under ``jpg`` or ``png``, ``pyd``
            bytes, and optionally ``__url__`` (the shard, used in error messages).
        dataset: ``"h36m"`` or ``"mpi"``.
        train: True flips image, 2D and 3D together with probability 0.5; False
            returns the original and its flip stacked on a leading axis of 2.
        rng: numpy Generator for the training flip (a fresh unseeded one if None).
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
        return _decode(sample, dataset, train, rng, shard, key)
    except ShardDataError:
        raise
    except Exception as exn:  # anything unforeseen still says where it happened
        raise _bad(shard, key, f"{type(exn).__name__}: {exn}") from exn


def _decode(sample, dataset, train, rng, shard, key):
    if dataset == "h36m":
        arrays = _read_fields(sample, shard, key, H36M_FIELDS)
        frame = _read_image(sample, shard, key)
        _check_box(arrays["center"], arrays["scale"], frame.shape, shard, key)
        crop = crop_image(frame, arrays["center"], arrays["scale"])
        joints_3d, joints_2d, joints_crop = (arrays[n] for n in ("joints_3d", "joints_2d_cpn", "joints_2d_cpn_crop"))
        millimetres = False
    else:
        arrays = _read_fields(sample, shard, key, MPI_FIELDS)
        crop = _read_image(sample, shard, key)
        if crop.shape[:2] != (CROP_HEIGHT, CROP_WIDTH):
            raise _bad(shard, key, f"MPI image is {crop.shape[1]}x{crop.shape[0]}, expected the "
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
        views = dict(image=normalize_image(crop), keypoints_2d=keypoints, keypoints_2d_crop=keypoints_crop,
                     ref=reference_points(keypoints_crop))
    else:
        views = flip_test_views(crop, keypoints, keypoints_crop)

    parsed = parse_key(key)
    return dict(**views, keypoints_3d=pose, key=key, subject=parsed["subject"], action=parsed["action"])


def flip_test_views(crop, keypoints_2d, keypoints_2d_crop):
    """The two views a test sample is lifted from: the crop as given and mirrored.

    Shared by evaluation (through ``decode_sample``) and by inference on a user's
    images, so that both feed the model the same numbers.

    Args:
        crop: (256, 192, 3) uint8 RGB person crop.
        keypoints_2d: (17, 2) float32 tensor, normalized screen coordinates.
        keypoints_2d_crop: (17, 2) float32 tensor, crop pixels.
    Returns:
        dict of ``image`` (2, 3, 256, 192), ``keypoints_2d``, ``keypoints_2d_crop``
        and ``ref`` (2, 17, 2); index 0 is the original view, 1 the mirror image.
    """
    image = torch.stack([normalize_image(crop), normalize_image(crop[:, ::-1])])  # (2, 3, H, W)
    keypoints = torch.stack([keypoints_2d, flip_keypoints_normalized(keypoints_2d)])  # (2, 17, 2)
    keypoints_crop = torch.stack([keypoints_2d_crop, flip_keypoints_crop(keypoints_2d_crop, CROP_WIDTH)])
    return dict(image=image, keypoints_2d=keypoints, keypoints_2d_crop=keypoints_crop,
                ref=reference_points(keypoints_crop))


def collate_samples(samples):
    """Stack decoded samples into a batch: tensors gain a batch axis, ``key``/``subject``/``action`` become lists."""
    batch = {name: torch.stack([s[name] for s in samples]) for name in TENSOR_FIELDS}
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
    """
    path = os.fspath(path)
    partial = path + PARTIAL_SUFFIX
    try:
        with open(partial, "wb") as stream:
            with wds.TarWriter(stream, user="", group="", mode=0o644, encoder=False, mtime=0) as writer:
                yield writer
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def _is_remote(url):
    return url.startswith("pipe:") or "://" in url


def find_shards(source, split=None):
    """List the shard URLs of a source, in a fixed order.

    Args:
        source: a directory (its ``split`` subfolder if present, else its own
            ``*.tar`` files), a brace pattern (``data-{000000..000155}.tar``), a
            glob, one tar file, a ``pipe:``/``http(s)://``/... URL (brace-expanded,
            not checked), or a list of any of these.
        split: ``"train"``, ``"validation"`` or ``"test"``; used for directories only.
    Returns:
        list of str, never empty.
    Raises:
        FileNotFoundError: when nothing is found, saying what was looked for.
    """
    if isinstance(source, (list, tuple)):
        urls = [url for item in source for url in find_shards(item, split)]
        if not urls:
            raise FileNotFoundError("the list of shard sources is empty")
        return urls
    source = os.fspath(source)
    if _is_remote(source):
        return wds.shardlists.expand_urls(source)
    if os.path.isdir(source):
        folder = source
        if split is not None and os.path.isdir(os.path.join(source, split)):
            folder = os.path.join(source, split)
        urls = sorted(glob(os.path.join(escape(folder), "*.tar")))
        if not urls:
            subfolders = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
            if split is None and subfolders:
                raise FileNotFoundError(f"no .tar shards directly in {folder}, which holds the subfolders "
                                        f"{subfolders}: name one of them, e.g. {os.path.join(source, subfolders[0])}")
            raise FileNotFoundError(
                f"no .tar shards in {folder}"
                + (f" (no '{split}' subfolder either)" if split is not None and folder == source else "")
                + f"; expected the released layout with train/, validation/ or test/ subfolders of "
                f"data-NNNNNN.tar files (subfolders found: {subfolders})")
        return urls
    if "{" in source:
        urls = wds.shardlists.expand_urls(source)
        missing = [u for u in urls if not os.path.isfile(u)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of the {len(urls)} shards of {source} do not exist, "
                                    f"e.g. {missing[0]}")
        return urls
    if any(c in source for c in "*?["):
        urls = sorted(glob(source))
        if not urls:
            raise FileNotFoundError(f"no shards match {source}")
        return urls
    if os.path.isfile(source):
        return [source]
    raise FileNotFoundError(f"shard source {source} does not exist: give a directory with train/, validation/ "
                            "or test/ subfolders, a brace pattern, a glob, a tar file or a URL")


def _consumer():
    """(index, count) of this DataLoader worker within its process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _Plan:
    """How the shards are divided among ``world_size`` processes x workers.

    With at least as many shards as consumers, each consumer reads every
    consumer-count-th shard; with fewer (MPI's test split is one shard), every
    consumer reads all shards and keeps every consumer-count-th sample. Either way
    each sample goes to exactly one consumer.
    """

    def __init__(self, num_shards, rank, world_size):
        self.num_shards, self.rank, self.world_size = num_shards, rank, world_size

    def consumer(self):
        worker, num_workers = _consumer()
        return self.rank * num_workers + worker, self.world_size * num_workers

    def by_shard(self):
        return self.num_shards >= self.consumer()[1]


def _split_shards(shards, plan, skips):
    (index, count), by_shard = plan.consumer(), plan.by_shard()
    for i, shard in enumerate(shards):
        if not by_shard or i % count == index:
            skips.current_shard = shard["url"]
            yield shard


def _split_samples(samples, plan):
    (index, count), by_shard = plan.consumer(), plan.by_shard()
    for i, sample in enumerate(samples):
        if by_shard or i % count == index:
            yield sample


class _SkipLog:
    """Exception handler of the pipeline: raises ``ShardDataError`` or records a ``SkipRecord``.

    Records travel to the main process inside batches (``_attach_skips``), so
    skips that happen in DataLoader workers are counted too.
    """

    def __init__(self, skip_bad):
        self.skip_bad = skip_bad
        self.records = []
        self.current_shard = None
        self.broken_shards = set()

    def __call__(self, exn):
        if isinstance(exn, ShardDataError):
            if not self.skip_bad:
                exn.args = exn.args[:1]  # WebDataset's outer stages append the stream and URL
                raise exn
            record = SkipRecord(exn.shard, exn.key, exn.problem)
        else:
            # Raised while reading the tar itself (truncated, corrupt, missing file).
            detail = str(exn.args[0]) if exn.args else type(exn).__name__
            error = _bad(self.current_shard, None, f"cannot read the tar file ({type(exn).__name__}: "
                                                   f"{detail.split(' @ ')[0]}); samples after this point are lost")
            if not self.skip_bad:
                raise error from exn
            if self.current_shard in self.broken_shards:
                return True
            self.broken_shards.add(self.current_shard)
            record = SkipRecord(self.current_shard, None, error.problem)
        self.records.append(record)
        return True

    def take(self):
        records, self.records = self.records, []
        return records


def _attach_skips(batches, skips):
    for batch in batches:
        batch["skipped"] = skips.take()
        yield batch
    remaining = skips.take()
    if remaining:
        yield {"skipped": remaining}  # no samples: only carries the last records out


class _Decoder:
    """Picklable ``decode_sample`` stage with a per-consumer, per-epoch flip generator."""

    def __init__(self, dataset, train, seed, epoch, plan):
        self.dataset, self.train, self.seed, self.epoch, self.plan = dataset, train, seed, epoch, plan
        self.rng = None

    def __call__(self, sample):
        if self.rng is None:
            self.rng = np.random.default_rng([self.seed, self.epoch, self.plan.consumer()[0]])
        return decode_sample(sample, self.dataset, self.train, self.rng)


class ShardLoader:
    """Iterable of collated batches over WebDataset shards; see ``build_loader``.

    Attributes after (or during) a pass:
        skipped: list of ``SkipRecord`` of this pass (empty unless ``skip_bad``).
        num_samples: samples yielded by this pass.
        epoch: the epoch whose shuffle the next pass uses; advances after each pass.
    """

    def __init__(self, urls, dataset, train, batch_size, num_workers=0, shuffle_buffer=1000,
                 max_samples=None, skip_bad=False, seed=0, rank=None, world_size=None):
        check_dataset(dataset)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        if max_samples is not None and max_samples < 0:
            raise ValueError(f"max_samples must be None or 0 or more, got {max_samples}")
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = (torch.distributed.get_rank() if distributed else 0) if rank is None else rank
            world_size = (torch.distributed.get_world_size() if distributed else 1) if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.urls = list(urls)
        self.dataset, self.train, self.batch_size = dataset, train, batch_size
        self.num_workers, self.shuffle_buffer, self.skip_bad, self.seed = num_workers, shuffle_buffer, skip_bad, seed
        self.rank, self.world_size = rank, world_size
        self.max_samples = max_samples
        self.epoch = 0
        self.skipped = []
        self.num_samples = 0

    def set_epoch(self, epoch):
        """Choose the shuffle of the next pass (training); passes otherwise advance it by one."""
        self.epoch = epoch

    def _quota(self):
        """This process's share of ``max_samples`` (shares add up to it)."""
        if self.max_samples is None:
            return None
        return self.max_samples // self.world_size + (self.rank < self.max_samples % self.world_size)

    def shard_order(self):
        """The shard URLs in the order the next pass reads them: shuffled per epoch in training."""
        urls = list(self.urls)
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        return urls

    def pipeline(self):
        """The WebDataset pipeline of one pass (yields collated batches with a ``skipped`` list)."""
        plan = _Plan(len(self.urls), self.rank, self.world_size)
        skips = _SkipLog(self.skip_bad)
        shuffle = self.train and self.shuffle_buffer > 1
        stages = [
            wds.SimpleShardList(self.shard_order()),
            wds.pipelinefilter(_split_shards)(plan, skips),
            wds.tarfile_to_samples(handler=skips),
            wds.pipelinefilter(_split_samples)(plan),
        ]
        if shuffle:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer),
                                      seed=f"{self.seed}-{self.epoch}-{self.rank}-shuffle"))
        stages += [
            wds.map(_Decoder(self.dataset, self.train, self.seed, self.epoch, plan), handler=skips),
            wds.batched(self.batch_size, collation_fn=collate_samples, partial=True),
            wds.pipelinefilter(_attach_skips)(skips),
        ]
        return wds.DataPipeline(*stages)

    def __iter__(self):
        pipeline = self.pipeline()
        if self.num_workers > 0:
            batches = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=self.num_workers)
        else:
            batches = pipeline
        self.skipped, self.num_samples = [], 0
        quota = self._quota()
        seen = set()
        try:
            for batch in batches:
                for record in batch.pop("skipped"):
                    if record not in seen:  # a broken shard read by several workers counts once
                        seen.add(record)
                        self.skipped.append(record)
                if "key" not in batch:
                    continue
                size = len(batch["key"])
                if quota is not None and self.num_samples + size >= quota:
                    keep = quota - self.num_samples
                    if keep > 0:
                        self.num_samples += keep
                        yield {name: value[:keep] for name, value in batch.items()}
                    break
                self.num_samples += size
                yield batch
        finally:
            self.epoch += 1
        self._report()

    def _report(self):
        if not self.skipped:
            return
        samples = sum(r.key is not None for r in self.skipped)
        shards = len(self.skipped) - samples
        first = "; ".join(f"{r.shard}, {r.key or 'tar'}: {r.reason}" for r in self.skipped[:3])
        log.warning("skipped %d bad samples and %d unreadable shard tails (%d samples read); first: %s",
                    samples, shards, self.num_samples, first)


def build_loader(source, dataset, train, batch_size, num_workers=0, shuffle_buffer=1000, max_samples=None,
                 skip_bad=False, seed=0, split=None, rank=None, world_size=None):
    """Batches of decoded samples from released-layout shards.

    Args:
        source: anything ``find_shards`` takes; for a directory, ``split``
            defaults to ``train`` in training and ``validation`` (h36m) or ``test``
            (mpi) in evaluation.
        dataset: ``"h36m"`` or ``"mpi"``.
        train: training (random flip, shuffled shards and samples, new order per
            epoch) or evaluation (fixed order, flipped second view).
        batch_size: samples per batch; the last batch of a pass may be smaller.
        num_workers: DataLoader worker processes (0 decodes in this process).
        shuffle_buffer: samples held for shuffling in training (0 or 1: none).
        max_samples: stop after this many samples over all processes (each
            process yields its share); None reads everything.
        skip_bad: skip unreadable samples (counted in ``.skipped`` and logged at
            the end of the pass) instead of raising ``ShardDataError``.
        seed: seeds shard order, sample shuffle and flips, with the epoch.
        rank, world_size: this process among several; default to
            torch.distributed's (0 and 1 when it is not initialized).
    Returns:
        ShardLoader: iterating gives dicts with ``image`` (B, 3, 256, 192) in
        training or (B, 2, 3, 256, 192) in evaluation, ``keypoints_3d`` (B, 1, 17, 3),
        ``keypoints_2d``/``keypoints_2d_crop``/``ref`` (B, 17, 2) or (B, 2, 17, 2),
        and lists ``key``, ``subject``, ``action``. Across processes and workers,
        an evaluation pass yields every sample exactly once.
    """
    check_dataset(dataset)
    urls = find_shards(source, split or DEFAULT_SPLITS[dataset, bool(train)])
    return ShardLoader(urls, dataset, train, batch_size, num_workers=num_workers, shuffle_buffer=shuffle_buffer,
                       max_samples=max_samples, skip_bad=skip_bad, seed=seed, rank=rank, world_size=world_size)

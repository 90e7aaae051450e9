"""What ``common.infer.lifting`` reads: images, folders, videos, and files of person boxes and 2D keypoints.

Media: an image file (anything Pillow reads), a folder of images (sorted by
name), or a video. Animated GIFs are read with Pillow; other videos (mp4, avi,
mov, mkv, webm) need PyAV (``pip install av``, which ships its own FFmpeg).

Annotation files (one person per entry, several per image allowed):
- COCO annotations (``{"images": [...], "annotations": [...]}``, as COCO, CVAT
  and MMPose's test data write them): ``keypoints`` 17 x (x, y, visibility),
  ``bbox`` x, y, w, h; matched to images by ``file_name``. Annotations without
  any keypoint (``num_keypoints`` 0, e.g. crowds) are not people to lift and are left out.
- COCO results (a list of ``{"image_id", "keypoints", "bbox", "score"}``, as
  Detectron2 and OpenPose-to-COCO converters write): matched by ``file_name`` when
  an entry has one, else by ``image_id`` = the number in the image's file name
  (COCO's own naming, ``000000000785.jpg``).
- MMPose predictions (``{"instance_info": ...}``): for an image, a list of
  ``{"keypoints": [[x, y]] * 17, "keypoint_scores", "bbox": [[x1, y1, x2, y2]]}``;
  for a video, a list of ``{"frame_id", "instances": [...]}`` (frame_id counts from 1, as MMPose's demo writes).
- Our own: ``{"<file name or frame number>": [{"bbox": [x, y, w, h], "keypoints": [[x, y(, score)]] * 17,
  "format": "coco" | "h36m"}, ...]}``; either field may be left out, and a box may be
  ``{"center": [x, y], "scale": [w / 200, h / 200]}`` (HRNet's convention, as in Human3.6M's label files).
- npz: ``keypoints`` (N, 17, 2 or 3); optional ``names`` (N,) file names or
  ``frames`` (N,) frame numbers (default: row i is frame / sorted image i),
  ``boxes`` (N, 4) x, y, w, h, and ``format`` ("coco" or "h36m").
Keypoints are image pixels; a third value of 0 (COCO's visibility 0, a score of
0) marks a joint that is missing.

Any person entry may carry a ``track_id`` (PoseTrack's and MMPose's name; the npz
column ``tracks``): an integer >= 0 that names the same person in every frame. Given
ids are kept; persons without one are tracked (``common.infer.tracking``).
"""
import logging
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from common.core.errors import BadInput, one_line
from common.core.reading import read_json, read_npz, require_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SEQUENCE_SUFFIXES = (".gif",) + VIDEO_SUFFIXES
KEYPOINT_FORMATS = ("coco", "h36m")
MAX_IMAGE_PIXELS = 100_000_000  # larger images are refused before decoding (decompression bombs)
MIN_IMAGE_SIDE = 16  # smaller images cannot show a person: refused
# What Pillow raises for a damaged or foreign file (a broken PNG chunk is a SyntaxError, a short one an
# EOFError, a GIF frame past its damaged end an IndexError or struct.error).
PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
              Image.DecompressionBombError)


class InputError(BadInput):
    """A user's input (image, video, box or keypoint file) that cannot be used; the message says why."""


@dataclass
class PersonSpec:
    """One person to lift, as a file describes it (image pixels).

    bbox: (x, y, w, h), or a dict with ``center`` and ``scale``, or None.
    keypoints: (17, 2 or 3) array in ``format`` order, or None (find them with the backbone).
    track: the identity the file gives (an int >= 0), or None (found by tracking).
    """

    bbox: object = None
    keypoints: object = None
    format: str = "coco"
    track: object = None


def read_image(path):
    """(H, W, 3) uint8 RGB of an image file as it is displayed (EXIF orientation applied).

    Raises InputError if it is missing, does not decode, or has more than
    MAX_IMAGE_PIXELS pixels (refused from its header, before decoding).
    """
    path = require_file(path, "image", InputError)
    try:
        with Image.open(path) as image:
            _refuse_size(image, path)
            return to_rgb(ImageOps.exif_transpose(image))
    except PIL_ERRORS as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot read image {path} ({type(error).__name__}: {one_line(error)}); expected a whole "
                         f"file Pillow decodes ({', '.join(IMAGE_SUFFIXES)}): re-export it") from error


def to_rgb(image):
    """(H, W, 3) uint8 RGB of a PIL image of any mode, as a viewer shows it.

    16-bit gray (I;16, I) keeps its top 8 bits (Pillow's own conversion would clip
    everything above 255 to white); transparency is composited onto white;
    palette, gray, CMYK and the rest convert as Pillow converts them.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16).astype(np.uint32)
        top = 0xFFFF if image.mode != "I" or wide.max(initial=0) > 0xFF else 0xFF
        gray = (wide * 255 // top).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info or image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _refuse_size(image, path):
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"image {path} is {width} x {height} pixels, more than {MAX_IMAGE_PIXELS:,}: refused "
                         f"before decoding; downscale it (the model sees a 256 x 192 crop)")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"image {path} is {width} x {height} pixels: too small to hold a person (sides under "
                         f"{MIN_IMAGE_SIDE} pixels are refused); give the original picture")


def input_kind(path):
    """'image', 'folder' or 'video' for an input path; InputError if it is none of them."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise InputError(f"input {path} not found: give an image, a folder of images or a video")
    suffix = path.suffix.lower()
    if suffix in SEQUENCE_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise InputError(f"input {path} has the unknown extension {suffix!r}: expected an image "
                     f"({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(SEQUENCE_SUFFIXES)}) or a folder")


def folder_images(path, log_skipped=False):
    """Sorted image files of a folder; InputError when it holds none.

    Entries with other extensions (and sub-folders) are left out; ``log_skipped`` warns with their count.
    """
    entries = list(Path(path).iterdir())
    files = sorted(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    others = len(entries) - len(files)
    if others and log_skipped:
        log.warning("folder %s: %d entries that are not images (%s) are skipped", path, others, ", ".join(IMAGE_SUFFIXES))
    return files


def _require_av(path):
    try:
        import av
    except ImportError as error:
        raise InputError(
            f"reading the video {path} needs PyAV, which is not installed: pip install av (its wheels ship "
            f"FFmpeg), or extract the frames into a folder (ffmpeg -i {Path(path).name} frames/%06d.png) "
            f"and pass the folder; animated GIFs need nothing extra") from error
    return av


def count_frames(path):
    """Number of frames of a video, or None where the container does not say."""
    path = require_file(path, "video", InputError)
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1)
        except PIL_ERRORS:
            return None  # video_frames says what is wrong with it
    av = _require_av(path)
    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames or None
    except (av.FFmpegError, IndexError):
        return None


def video_frames(path, every=1, max_frames=None):
    """Yield (frame number, (H, W, 3) uint8 RGB) of a video, every ``every``-th frame, at most ``max_frames``."""
    path = require_file(path, "video", InputError)
    if every < 1:
        raise InputError(f"every must be at least 1 (lift every N-th frame), got {every}")

    def decoded():
        if path.suffix.lower() == ".gif":
            try:
                with Image.open(path) as image:
                    for frame in ImageSequence.Iterator(image):
                        yield np.asarray(frame.convert("RGB"))
            except PIL_ERRORS as error:
                raise InputError(f"cannot read the GIF {path} ({type(error).__name__}: {one_line(error)}); "
                                 f"re-export it") from error
            return
        av = _require_av(path)
        try:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, IndexError) as error:  # IndexError: a container without a video stream
            raise InputError(f"cannot decode the video {path} ({type(error).__name__}: {one_line(error)}); "
                             f"re-encode it or extract its frames into a folder") from error

    yielded = 0
    for number, frame in enumerate(decoded()):
        if number % every:
            continue
        if max_frames is not None and yielded >= max_frames:
            return
        yielded += 1
        yield number, frame


# ---------------------------------------------------------------- annotation files

def _numbers(values, where, what):
    """float64 array of ``values``; InputError naming ``where`` for strings, None in lists, NaN or inf."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {what} must be numbers, got {values!r:.80} ({error})") from error
    if not np.isfinite(array).all():
        raise InputError(f"{where}: {what} hold NaN, infinite or null values; fix or leave out this person")
    return array


def _keypoint_array(values, where):
    array = _numbers(values, where, "keypoints")
    if array.ndim == 1 and array.size % 3 == 0:
        array = array.reshape(-1, 3)  # COCO's flat [x1, y1, v1, x2, ...]
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise InputError(f"{where}: keypoints must be 17 x (x, y) or 17 x (x, y, score), got shape {array.shape}")
    return array


def _person(entry, where, default_format):
    if not isinstance(entry, dict):
        if np.asarray(entry, dtype=object).shape == (4,):
            return PersonSpec(bbox=_numbers(entry, where, "bbox").tolist(), format=default_format)
        raise InputError(f"{where}: expected a dict with 'bbox' and/or 'keypoints', or a box [x, y, w, h]; "
                         f"got {entry!r:.80}")
    keypoints = entry.get("keypoints")
    if keypoints is not None:
        keypoints = _keypoint_array(keypoints, where)
        scores = entry.get("keypoint_scores")
        if scores is not None and keypoints.shape[1] == 2:
            keypoints = np.concatenate([keypoints, np.asarray(scores, dtype=np.float64).reshape(-1, 1)], axis=1)
    fmt = entry.get("format", default_format)
    if fmt not in KEYPOINT_FORMATS:
        raise InputError(f"{where}: keypoint format must be one of {KEYPOINT_FORMATS}, got {fmt!r}")
    bbox = entry.get("bbox")
    if bbox is not None and not isinstance(bbox, dict):
        bbox = _numbers(bbox, where, "bbox").reshape(-1).tolist()
    return PersonSpec(bbox=bbox, keypoints=keypoints, format=fmt, track=_track_id(entry.get("track_id"), where))


def _track_id(value, where):
    """A given track id as an int >= 0, or None; InputError for anything else (a name, a fraction, a negative number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer() or value < 0:
        raise InputError(f"{where}: track_id must be an integer >= 0 naming the person across frames, got {value!r}; "
                         f"fix it or leave track_id out to let tracking find the identities")
    return int(value)


def _mmpose_person(instance, where):
    bbox = instance.get("bbox")
    if bbox is not None:
        x1, y1, x2, y2 = _numbers(bbox, where, "bbox").reshape(-1)[:4]
        bbox = [x1, y1, x2 - x1, y2 - y1]
    return _person({"keypoints": instance.get("keypoints"), "keypoint_scores": instance.get("keypoint_scores"),
                    "bbox": bbox, "track_id": instance.get("track_id")}, where, "coco")


def _number_in_name(name):
    digits = re.findall(r"\d+", Path(str(name)).stem)
    return int(digits[-1]) if digits else None


def read_annotations(path, default_format="coco"):
    """Persons per image or frame from a box or keypoint file (formats: module docstring).

    Returns:
        (people, match): ``people`` maps a name (file name str, or frame number int)
        to a list of PersonSpec; ``match`` is "name", "image_id" (an int matched
        against the number in a file name), "frame", or "single" (MMPose's
        single-image file, for whatever one image is given).
    Raises:
        InputError: a missing or malformed file, naming what was expected.
    """
    path = require_file(path, "annotation file", InputError)
    if default_format not in KEYPOINT_FORMATS:
        raise ValueError(f"keypoint format must be one of {KEYPOINT_FORMATS}, got {default_format!r}")
    if path.suffix.lower() == ".npz":
        people, match = _read_npz(path, default_format)
    else:
        data = read_json(path, "annotation file", InputError, "expected one of the formats of docs/inference.md",
                         object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
        try:
            people, match = _parse_annotations(data, path, default_format)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise InputError(f"annotation file {path} is malformed ({type(error).__name__}: {error}); expected "
                             f"one of the formats of docs/inference.md") from error
    if not any(people.values()):
        raise InputError(f"annotation file {path} holds no persons: give a file with at least one person, "
                         f"or leave out --keypoints/--boxes")
    return people, match


def _unique_keys(pairs, path):
    """A JSON object's dict; InputError when a key repeats (json would silently keep only the last)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        key = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise InputError(f"annotation file {path}: the key {key!r} appears twice (only one would be used); "
                         f"merge its persons into one list")
    return result


def _parse_annotations(data, path, default_format):
    """(people, match) of a parsed JSON annotation file; see read_annotations."""
    people = {}
    if isinstance(data, dict) and "annotations" in data and "images" in data:  # COCO annotations
        names = {image["id"]: image["file_name"] for image in data["images"]}
        repeated = sorted(n for n, count in Counter(names.values()).items() if count > 1)
        if repeated or len(names) != len(data["images"]):
            raise InputError(f"{path}: image file names or ids appear twice ({', '.join(repeated) or 'ids'}); "
                             f"each image must be listed once")
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}, annotation {i}"
            if ann.get("num_keypoints", 1) == 0 or ("keypoints" in ann and not any(ann["keypoints"])):
                continue
            if ann.get("image_id") not in names:
                raise InputError(f"{where}: image_id {ann.get('image_id')} is not among the file's images")
            people.setdefault(names[ann["image_id"]], []).append(_person(ann, where, "coco"))
        return people, "name"
    if isinstance(data, dict) and "instance_info" in data:  # MMPose predictions
        info = data["instance_info"]
        if info and isinstance(info[0], dict) and "instances" in info[0]:
            for frame in info:
                if int(frame["frame_id"]) - 1 in people:
                    raise InputError(f"{path}: frame_id {frame['frame_id']} appears twice; list each frame once")
                people[int(frame["frame_id"]) - 1] = [
                    _mmpose_person(inst, f"{path}, frame_id {frame['frame_id']}") for inst in frame["instances"]]
            return people, "frame"
        return {None: [_mmpose_person(inst, f"{path}, instance {i}") for i, inst in enumerate(info)]}, "single"
    if isinstance(data, list):  # COCO results
        match = "name"
        for i, entry in enumerate(data):
            where = f"{path}, entry {i}"
            if not isinstance(entry, dict):
                raise InputError(f"{where}: expected a dict with image_id or file_name, keypoints and bbox")
            if "file_name" in entry:
                name = entry["file_name"]
            elif "image_id" in entry:
                name, match = int(entry["image_id"]), "image_id"
            else:
                raise InputError(f"{where}: an entry needs 'file_name' or 'image_id' to find its image")
            people.setdefault(name, []).append(_person(entry, where, "coco"))
        return people, match
    if isinstance(data, dict):  # our own
        match = "frame" if data and all(str(k).isdigit() for k in data) else "name"
        for name, entries in data.items():
            key = int(name) if match == "frame" else name
            if not isinstance(entries, list):
                raise InputError(f"{path}, {name!r}: expected a list of persons, got {type(entries).__name__}")
            people[key] = [_person(e, f"{path}, {name!r} person {i}", default_format) for i, e in enumerate(entries)]
        return people, match
    raise InputError(f"{path}: not a known box or keypoint format (COCO annotations or results, MMPose "
                     f"predictions, or {{file name: [persons]}})")


def _read_npz(path, default_format):
    arrays = read_npz(path, "keypoint file", InputError, "keypoint npz files must hold plain numeric or string "
                      "arrays (np.savez without object arrays), which load without pickle")
    if "keypoints" not in arrays:
        raise InputError(f"{path} has no 'keypoints' array (found {sorted(arrays)})")
    keypoints = arrays["keypoints"]
    if keypoints.ndim != 3 or keypoints.shape[2] not in (2, 3) or not np.issubdtype(keypoints.dtype, np.number):
        raise InputError(f"{path}: 'keypoints' must be numbers (N, 17, 2 or 3), got {keypoints.dtype} {keypoints.shape}")
    if not np.isfinite(keypoints).all():
        bad = np.flatnonzero(~np.isfinite(keypoints).all(axis=(1, 2)))
        raise InputError(f"{path}: 'keypoints' rows {bad[:10].tolist()} hold NaN or infinite values; fix or drop them")
    for name in ("names", "frames", "tracks"):
        if name in arrays and arrays[name].shape != (len(keypoints),):
            raise InputError(f"{path}: '{name}' must be ({len(keypoints)},), one per keypoint row, "
                             f"got {arrays[name].shape}")
    fmt = str(arrays["format"]) if "format" in arrays else default_format
    if fmt not in KEYPOINT_FORMATS:
        raise InputError(f"{path}: 'format' must be one of {KEYPOINT_FORMATS}, got {fmt!r}")
    boxes = arrays.get("boxes")
    if boxes is not None and boxes.shape != (len(keypoints), 4):
        raise InputError(f"{path}: 'boxes' must be (N, 4) x, y, w, h for N = {len(keypoints)}, got {boxes.shape}")
    if "names" in arrays:
        names, match = [str(n) for n in arrays["names"]], "name"
    else:
        names, match = [int(n) for n in arrays.get("frames", np.arange(len(keypoints)))], "frame"
    tracks = arrays.get("tracks")
    people = {}
    for i, name in enumerate(names):
        bbox = None if boxes is None else boxes[i].astype(np.float64).tolist()
        track = None if tracks is None else _track_id(tracks[i].item(), f"{path}, 'tracks' row {i}")
        people.setdefault(name, []).append(PersonSpec(bbox=bbox, keypoints=keypoints[i].astype(np.float64), format=fmt,
                                                      track=track))
    return people, match


def people_for(people, match, name, frame=None, position=0):
    """The persons an annotation file gives for image ``name`` (a file name) or video frame ``frame``.

    ``position`` is the image's place in a sorted folder, which an npz without
    names uses. Returns a list (empty when the file has nobody there).
    """
    if match == "single":
        return people[None]
    if match == "frame":
        return people.get(position if frame is None else frame, [])
    if match == "image_id":
        return people.get(_number_in_name(name), [])
    return people.get(Path(str(name)).name, [])

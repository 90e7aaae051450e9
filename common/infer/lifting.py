"""Lift people in your own images, folders of frames or videos to 3D.

    python -m common.infer photo.jpg --checkpoint checkpoint/best_h36m.bin --visualize
    python -m common.infer frames/ --keypoints detections.json --out results
    python -m common.infer clip.mp4 --bbox 120 40 200 420 --animate

Per person: the crop is the shards' ``center``/``scale`` warp (``docs/formats.md``, Crop) of a
box (``--bbox x y w h``, a file of boxes per image, a box around given
keypoints, or else the whole image), padded by 1.25 and grown to 192:256 as
HRNet does. The 2D keypoints come from a file (COCO-17 or H36M-17, see
``common.infer.inputs``) or, by default, from the released backbone's
heatmap head (``common.infer.keypoints``); COCO-17 become H36M-17 by
``common.infer.keypoints.coco_to_h36m``. They enter the model as the shards hold
them: normalized screen coordinates of the full image and crop pixels. Sampling
is evaluation's own (``evaluation.predict_hypotheses``: H hypotheses, K DDIM
steps, flip test), and each person's initial noise is seeded by its key as in
evaluation, so a shard sample's image lifted under its key and with its box and
keypoints gives the hypotheses its evaluation gives.

Python API::

    from common.infer.lifting import load_model, lift
    model = load_model("checkpoint/best_h36m.bin", backbone_weights="checkpoint/pose_hrnet_w32_256x192.pth")
    result = lift("photo.jpg", bbox=(120, 40, 200, 420), model=model)
    result.mean, result.spread_mm  # (17, 3) metres, (17,) millimetres
"""
import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, atomic_write, output_folder, remove_orphaned_temporaries
from common.model.acceleration import PRECISIONS, prepare_backbone
from common.model.checkpoints import load_snappose_weights, read_checkpoint
from common.run.config import Config, config_from_dict, load_config
from common.data.samples import flip_test_views, normalize_image
from common.analysis.reliability import joint_spread
from common.run import distributed
from common.run.evaluation import predict_hypotheses
from common.core.geometry import (
    CROP_HEIGHT, CROP_WIDTH, apply_affine, bbox_center_scale, crop_image, crop_matrix, invert_affine,
    normalize_screen_coordinates,
)
from common.infer.inputs import (
    KEYPOINT_FORMATS, InputError, PersonSpec, count_frames, folder_images, input_kind, people_for,
    read_annotations, read_image, video_frames,
)
from common.infer.keypoints import COCO_JOINT_NAMES, COCO_USED, HEATMAP_DECODERS, coco_to_h36m, decode_heatmaps, heatmap_to_crop
from common.model.samplers import SAMPLERS
from common.core.skeleton import JOINT_NAMES, NUM_JOINTS

log = logging.getLogger(__name__)

HEATMAP_JOINTS = 17


@dataclass
class LiftingModel:
    """A loaded SnapPose model: networks, the configuration it was trained with, and its device.

    Unpacks as ``backbone, denoiser = load_model(...)``.
    """

    backbone: torch.nn.Module
    denoiser: torch.nn.Module
    config: Config
    device: torch.device

    def __iter__(self):
        return iter((self.backbone, self.denoiser))

    @property
    def has_heatmaps(self):
        return getattr(self.backbone, "final_layer", None) is not None

    def lift(self, image, bbox=None, keypoints=None, **options):
        """``lift(image, bbox, keypoints, model=self, **options)``."""
        return lift(image, bbox, keypoints, model=self, **options)


@dataclass
class LiftResult:
    """The 3D hypotheses of one person and what they were lifted from.

    hypotheses: (H, 17, 3) root-relative, metres, H36M order (``common.core.skeleton``).
    mean: (17, 3) their mean. spread_mm: (17,) per joint, the mean distance of the
        hypotheses from their mean (``common.analysis.reliability.joint_spread``),
        millimetres: high where the model is unsure.
    keypoints_2d: (17, 2) the H36M-17 keypoints used, image pixels;
    keypoint_scores: (17,) heatmap maxima or the file's scores (None if it had none).
    keypoint_source: "heatmaps" or "given". center, scale: the crop box (scale = size / 200).
    key: the name that seeded the initial noise.
    """

    hypotheses: np.ndarray
    mean: np.ndarray
    spread_mm: np.ndarray
    keypoints_2d: np.ndarray
    keypoint_scores: object
    keypoint_source: str
    center: np.ndarray
    scale: np.ndarray
    key: str
    image_size: tuple = field(default=(0, 0))

    def to_dict(self):
        """JSON-ready dict (lists of floats)."""
        return {
            "key": self.key, "center": self.center.tolist(), "scale": self.scale.tolist(),
            "keypoints_2d": self.keypoints_2d.tolist(), "keypoint_source": self.keypoint_source,
            "keypoint_scores": None if self.keypoint_scores is None else np.asarray(self.keypoint_scores).tolist(),
            "mean": self.mean.tolist(), "spread_mm": self.spread_mm.tolist(),
            "hypotheses": self.hypotheses.tolist(),
        }


def resolve_config(checkpoint, config=None, trust_checkpoint=False):
    """The configuration a checkpoint was trained with.

    ``config`` (a Config or a YAML path) wins; else the one training stored in
    the checkpoint; else ``config.yaml`` beside it; else the defaults (the
    released model, which the released ``best_*.bin`` files need).
    """
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    stored = read_checkpoint(checkpoint, trust_checkpoint).get("config")
    if isinstance(stored, dict):
        return config_from_dict(stored)
    beside = Path(checkpoint).with_name("config.yaml")
    if beside.is_file():
        return load_config(beside)
    return Config()


def load_model(checkpoint, config=None, device=None, backbone_weights=None, heatmaps=True, trust_checkpoint=False):
    """Rebuild a SnapPose model exactly as it was trained and load its weights.

    The networks are built by ``Config.networks`` (``common.model.networks.build_networks``), as training and
    evaluation build them, so a run with a random backbone gets the same random
    backbone back.

    Args:
        checkpoint: SnapPose checkpoint (``best_h36m.bin``, ``latest_epoch.bin``, ...).
        config: Config or YAML path; None: see :func:`resolve_config`.
        device: "cpu", "cuda", ...; None: CUDA if available.
        backbone_weights: PoseHRNet file, overriding the config's ``weights.backbone``.
        heatmaps: also load the backbone's heatmap head (``final_layer``), which
            finding 2D keypoints needs; only for a pretrained backbone.
        trust_checkpoint: unpickle the weight files fully, which can run code from
            them (see ``checkpoints.read_checkpoint``); only for files you trust.
    Returns:
        LiftingModel in eval mode.
    """
    cfg = resolve_config(checkpoint, config, trust_checkpoint)
    if backbone_weights is not None:
        cfg.weights.backbone = str(backbone_weights)
    device = distributed.resolve_device(device)
    head = HEATMAP_JOINTS if heatmaps and cfg.weights.pretrained_backbone else 0
    backbone, denoiser = cfg.networks(device, trust_checkpoint, heatmap_joints=head)
    load_snappose_weights(denoiser, checkpoint, trust_checkpoint)
    denoiser.eval()
    return LiftingModel(backbone, denoiser, cfg, device)


# ---------------------------------------------------------------- one person's inputs

@dataclass
class _Person:
    """One person prepared as the shards hold a sample."""

    key: str
    crop: np.ndarray  # (256, 192, 3) uint8
    center: np.ndarray
    scale: np.ndarray
    image_size: tuple  # (width, height)
    keypoints: object = None  # (17, 2) f32 normalized, (17, 2) f32 crop px, (17, 2) image px, scores; or None
    keypoint_source: str = "given"


def box_center_scale(bbox, width, height):
    """Crop box of a person: ``bbox`` (x, y, w, h) in pixels, a dict with ``center`` and ``scale``, or None (whole image).

    A pixel box is grown to the crop's 192:256 aspect and padded by 1.25 (HRNet's
    convention). Returns float32 ``center`` (2,) and ``scale`` (2,) = size / 200.
    Raises InputError for an empty box or one that misses the image.
    """
    if isinstance(bbox, dict):
        if "center" not in bbox or "scale" not in bbox:
            raise InputError(f"a box given as a dict needs 'center' and 'scale', got keys {sorted(bbox)}")
        center = np.asarray(bbox["center"], dtype=np.float32).reshape(2)
        scale = np.asarray(bbox["scale"], dtype=np.float32).reshape(2)
        if not (np.isfinite(center).all() and np.isfinite(scale).all() and scale[0] * 200 > 1):
            raise InputError(f"box center {center.tolist()} scale {scale.tolist()}: need finite values and "
                             f"scale[0] * 200 > 1 pixel")
        return center, scale
    box = np.asarray([0, 0, width, height] if bbox is None else bbox, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise InputError(f"box {np.asarray(bbox).tolist()}: expected x, y, w, h with w, h > 0 (pixels)")
    x, y, w, h = box
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InputError(f"box x={x:g} y={y:g} w={w:g} h={h:g} lies outside the {width} x {height} image")
    return bbox_center_scale(np.array([[x, y], [x + w, y + h]]))


def h36m_keypoints(keypoints, fmt="coco", where="keypoints"):
    """User keypoints (17, 2 or 3), pixels, in ``fmt`` order -> (H36M (17, 2) pixels, scores (17,) or None).

    A third column is a visibility or score; 0 marks a missing joint, which is an
    error for every joint the H36M skeleton needs.
    """
    if fmt not in KEYPOINT_FORMATS:
        raise ValueError(f"keypoint format must be one of {KEYPOINT_FORMATS}, got {fmt!r}")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[0] != NUM_JOINTS or keypoints.shape[1] not in (2, 3):
        raise InputError(f"{where}: expected 17 keypoints ({fmt.upper()}-17) as (17, 2) or (17, 3), "
                         f"got shape {keypoints.shape}")
    if not np.isfinite(keypoints).all():
        raise InputError(f"{where}: keypoints hold NaN or infinite values")
    scores = keypoints[:, 2] if keypoints.shape[1] == 3 else None
    if scores is not None:
        names, needed = (COCO_JOINT_NAMES, COCO_USED) if fmt == "coco" else (JOINT_NAMES, range(NUM_JOINTS))
        missing = [names[j] for j in needed if scores[j] == 0]
        if missing:
            raise InputError(f"{where}: {', '.join(missing)} missing (visibility or score 0); lifting needs every "
                             f"{fmt.upper()} joint{' but the ears' if fmt == 'coco' else ''}: complete them, leave "
                             f"this person out (--skip-incomplete), or let the backbone find all keypoints")
    if fmt == "coco":
        keypoints = coco_to_h36m(keypoints)
    return keypoints[:, :2], None if scores is None else keypoints[:, 2].astype(np.float32)


def _require_near_image(pixels, width, height, where):
    """InputError when keypoints (17, 2) pixels lie more than half the image size outside it (another image's, or not pixels)."""
    low, high = -0.5 * np.array([width, height]), 1.5 * np.array([width, height])
    outside = ((pixels < low) | (pixels > high)).any(axis=1)
    if outside.any():
        raise InputError(f"{where}: {int(outside.sum())} keypoints lie far outside the {width} x {height} image "
                         f"(e.g. {pixels[outside][0].round(1).tolist()}): they must be this image's pixels, not "
                         f"normalized or another resolution's coordinates")


def prepare_person(image, bbox=None, keypoints=None, keypoint_format="coco", key="image", where="image"):
    """Crop one person and put given keypoints in the shards' form.

    ``keypoints``: None (the backbone finds them later), pixels (17, 2 or 3) in
    ``keypoint_format`` order, or a dict ``{"normalized": (17, 2), "crop": (17, 2)}``
    in H36M order exactly as shards and Human3.6M label files hold them.
    Without a box, given pixel keypoints get the HRNet-style box around them.
    """
    height, width = image.shape[:2]
    pixels = scores = None
    if keypoints is not None and not isinstance(keypoints, dict):
        pixels, scores = h36m_keypoints(keypoints, keypoint_format, where)
        _require_near_image(pixels, width, height, where)
        if bbox is None:
            bbox = dict(zip(("center", "scale"), bbox_center_scale(pixels)))
    center, scale = box_center_scale(bbox, width, height)
    crop = crop_image(image, center, scale)
    prepared = None
    if isinstance(keypoints, dict):
        normalized = np.asarray(keypoints["normalized"], dtype=np.float32).reshape(NUM_JOINTS, 2)
        crop_px = np.asarray(keypoints["crop"], dtype=np.float32).reshape(NUM_JOINTS, 2)
        pixels = apply_affine(crop_px, invert_affine(crop_matrix(center, scale)))
        prepared = (normalized, crop_px, pixels, None)
    elif pixels is not None:
        prepared = (normalize_screen_coordinates(pixels, width, height).astype(np.float32),
                    apply_affine(pixels, crop_matrix(center, scale)).astype(np.float32), pixels, scores)
    return _Person(key, crop, center, scale, (width, height), prepared)


# ---------------------------------------------------------------- the model on a batch of persons

@torch.no_grad()
def detect_keypoints(model, people, method="dark"):
    """Fill in the keypoints of ``people`` that have none, from the backbone's heatmaps (one batch)."""
    todo = [p for p in people if p.keypoints is None]
    if not todo:
        return
    if not model.has_heatmaps:
        raise InputError(
            "no 2D keypoints given and this model cannot find them: its backbone has no heatmap head "
            "(a random backbone, or loaded with heatmaps=False); give keypoints (--keypoints FILE)")
    images = torch.stack([normalize_image(p.crop) for p in todo]).to(model.device)  # (B, 3, 256, 192)
    heatmaps = model.backbone.heatmaps(model.backbone(images))  # (B, 17, 64, 48) COCO order
    positions, scores = decode_heatmaps(heatmaps, method)
    crop_coco = heatmap_to_crop(positions.numpy(), (heatmaps.shape[3], heatmaps.shape[2]), (CROP_WIDTH, CROP_HEIGHT))
    for person, crop_px, score in zip(todo, crop_coco, scores.numpy()):
        h36m = coco_to_h36m(np.concatenate([crop_px, score[:, None]], axis=1))  # (17, 3): x, y, score
        pixels = apply_affine(h36m[:, :2], invert_affine(crop_matrix(person.center, person.scale)))
        width, height = person.image_size
        person.keypoints = (normalize_screen_coordinates(pixels, width, height).astype(np.float32),
                            h36m[:, :2].astype(np.float32), pixels, h36m[:, 2].astype(np.float32))
        person.keypoint_source = "heatmaps"


def lift_people(model, people, sampling=None, heatmap_decoding="dark"):
    """Lift prepared persons (one batch through backbone and denoiser); returns a LiftResult each.

    ``sampling``: a ``SamplingConfig``; None: the model's evaluation settings
    (``model.config.sampling()``). Inference runs eagerly (its ``compile`` is not used).
    """
    sampling = model.config.sampling() if sampling is None else sampling
    detect_keypoints(model, people, heatmap_decoding)
    views = [flip_test_views(p.crop, torch.from_numpy(p.keypoints[0]), torch.from_numpy(p.keypoints[1]))
             for p in people]
    batch = {name: torch.stack([v[name] for v in views]) for name in views[0]}
    batch["key"] = [p.key for p in people]
    prepare_backbone(model.backbone, sampling.precision)
    hypotheses = predict_hypotheses(model.backbone, model.denoiser, batch, sampling).cpu().numpy()  # (B, H, 17, 3)
    results = []
    for person, poses in zip(people, hypotheses):
        mean = poses.mean(axis=0)
        spread = joint_spread(torch.from_numpy(poses)[None])[0].numpy() * 1000  # (17,) mm
        results.append(LiftResult(poses, mean, spread.astype(np.float32), person.keypoints[2].astype(np.float32),
                                  person.keypoints[3], person.keypoint_source, person.center, person.scale,
                                  person.key, person.image_size))
    return results


def lift(image, bbox=None, keypoints=None, *, model, keypoint_format="coco", key=None, sampling=None,
         heatmap_decoding="dark"):
    """Lift one person of one image to 3D.

    Args:
        image: file path, or (H, W, 3) uint8 RGB array.
        bbox: (x, y, w, h) pixels, or ``{"center", "scale"}`` (HRNet's scale = size / 200);
            None: around the given keypoints, else the whole image.
        keypoints: None (found by the backbone's heatmap head), (17, 2 or 3) pixels in
            ``keypoint_format`` order ("coco" or "h36m"), or ``{"normalized", "crop"}`` as shards hold them.
        model: a LiftingModel from :func:`load_model`.
        key: names the person; its initial noise is seeded by (key, seed) as in
            evaluation. Default: the file's stem, or "image" for an array.
        sampling: a ``common.model.samplers.SamplingConfig`` (H, K, sampler, precision, flip
            test, seed); None: the model's evaluation settings. Change a few with
            ``model.config.sampling().replace(hypotheses=6)``.
        heatmap_decoding: "dark" or "quarter" (``common.infer.keypoints.decode_heatmaps``).
    Returns:
        LiftResult.
    """
    if isinstance(image, (str, Path)):
        key = Path(image).stem if key is None else key
        image = read_image(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    person = prepare_person(image, bbox, keypoints, keypoint_format, "image" if key is None else key)
    return lift_people(model, [person], sampling, heatmap_decoding)[0]


# ---------------------------------------------------------------- command line

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.infer", allow_abbrev=False,
        description="Lift the people in an image, a folder of images or a video to 3D with a SnapPose checkpoint.")
    parser.add_argument("input", help="image file, folder of images, or video (GIF; mp4 and others need PyAV)")
    parser.add_argument("--checkpoint", default="checkpoint/best_h36m.bin", help="SnapPose checkpoint (default: checkpoint/best_h36m.bin)")
    parser.add_argument("--config", help="run configuration (default: the one stored with the checkpoint, "
                                         "else the released model's)")
    parser.add_argument("--backbone-weights", metavar="FILE",
                        help="PoseHRNet-W32 weights (default: the config's, checkpoint/pose_hrnet_w32_256x192.pth)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle weight files fully (can run code from them): only for files you trust "
                             "that are refused otherwise")
    parser.add_argument("--out", default="inference_output", help="folder for JSON, npz, figures and animation (default: inference_output)")
    parser.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"),
                        help="person box in pixels, for every image (default: whole image)")
    parser.add_argument("--boxes", metavar="FILE.json", help="person boxes per image (formats: README)")
    parser.add_argument("--keypoints", metavar="FILE",
                        help="2D keypoints per image, JSON (COCO, MMPose, ...) or npz (default: the backbone's heatmaps)")
    parser.add_argument("--keypoint-format", choices=KEYPOINT_FORMATS, default="coco",
                        help="joint order of keypoint files that do not say (default: coco)")
    parser.add_argument("--skip-incomplete", action="store_true",
                        help="leave out persons whose keypoints miss a joint instead of stopping")
    parser.add_argument("--heatmap-decoding", choices=HEATMAP_DECODERS, default="dark",
                        help="sub-pixel refinement of the heatmap maxima (default: dark)")
    parser.add_argument("-num_proposals", "--num-proposals", dest="num_proposals", type=int, metavar="H",
                        help="hypotheses per person (default: the config's, 20)")
    parser.add_argument("-timesteps", "--timesteps", dest="timesteps", type=int, metavar="K",
                        help="DDIM steps (default: the config's, 20)")
    parser.add_argument("--no-flip-test", action="store_true", help="lift the original view only")
    parser.add_argument("--sampler", choices=SAMPLERS,
                        help="sampler (default: the config's, ddim as in the paper; see README, Faster evaluation)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="autocast precision of backbone and denoiser (default: the config's, fp32)")
    parser.add_argument("--seed", type=int, help="noise seed (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=8, help="persons per batch through the networks (default: 8)")
    parser.add_argument("--device", help="'cpu', 'cuda', ... (default: CUDA if available)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="video: lift every N-th frame (default: 1)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="video: at most N frames")
    parser.add_argument("--visualize", action="store_true",
                        help="draw each person: image with 2D skeleton beside the 3D hypotheses")
    parser.add_argument("--animate", action="store_true", help="folder or video: also write an animated GIF")
    return parser


def _frames(args, kind):
    """Yield (name, frame number or None, position, image array) of the input."""
    path = Path(args.input)
    if kind == "image":
        yield path.name, None, 0, read_image(path)
    elif kind == "folder":
        for position, file in enumerate(folder_images(path, log_skipped=True)):
            yield file.name, None, position, read_image(file)
    else:
        for position, (number, frame) in enumerate(video_frames(path, args.every, args.max_frames)):
            yield f"{path.stem}_{number:06d}", number, position, frame


def _frame_total(args, kind):
    if kind == "image":
        return 1
    if kind == "folder":
        return len(folder_images(args.input))
    total = count_frames(args.input)
    if total is not None:
        total = -(-total // args.every)
        total = total if args.max_frames is None else min(total, args.max_frames)
    return total


def _people_of(args, annotations, boxes, name, number, position, width, height):
    """PersonSpecs of one image: from the keypoint file, the box file, --bbox, or the whole image."""
    listed = people_for(*annotations, name, number, position) if annotations else None
    boxed = people_for(*boxes, name, number, position) if boxes else None
    if listed is not None:
        if boxed:
            if len(boxed) != len(listed):
                raise InputError(f"{name}: the box file has {len(boxed)} persons, the keypoint file {len(listed)}")
            for spec, box in zip(listed, boxed):
                spec.bbox = spec.bbox if spec.bbox is not None else box.bbox
        if not listed:
            log.warning("%s: the keypoint file has nobody in this image; skipped", name)
        return [PersonSpec(spec.bbox if spec.bbox is not None else (args.bbox and list(args.bbox)),
                           spec.keypoints, spec.format) for spec in listed]
    if boxed is not None:
        if not boxed:
            log.warning("%s: not in the box file; the whole image is used", name)
        return boxed or [PersonSpec(bbox=None)]
    return [PersonSpec(bbox=list(args.bbox) if args.bbox else None)]


def _where(args, name, index):
    """How messages name a person: the image, its place, and the file that gave it."""
    given = args.keypoints or args.boxes
    return f"{given}, {name}, person {index}" if given else f"{name}, person {index}"


def run(args):
    """Lift every person of ``args.input``; writes JSON (and npz, figures, GIF); returns (records, files written)."""
    from common.infer.figures import FigureWriter

    kind = input_kind(args.input)
    annotations = read_annotations(args.keypoints, args.keypoint_format) if args.keypoints else None
    boxes = read_annotations(args.boxes, args.keypoint_format) if args.boxes else None
    model = load_model(args.checkpoint, args.config, args.device, args.backbone_weights,
                       heatmaps=args.keypoints is None, trust_checkpoint=args.trust_checkpoint)
    out = output_folder(args.out, "--out folder", InputError)
    stem = Path(args.input).stem if kind != "folder" else Path(args.input).resolve().name
    figures = FigureWriter(out, stem, args.visualize, args.animate and kind != "image")
    sampling = model.config.sampling().replace(
        hypotheses=args.num_proposals, steps=args.timesteps, flip=False if args.no_flip_test else None,
        seed=args.seed, sampler=args.sampler, precision=args.precision)
    options = dict(sampling=sampling, heatmap_decoding=args.heatmap_decoding)
    records, pending = [], []  # pending: (record, prepared person, image) not yet lifted
    lifted = [0]  # persons lifted so far, shown beside the images (one image may hold thousands)

    def flush():
        if pending:
            for (record, _, image), result in zip(pending, lift_people(model, [p for _, p, _ in pending], **options)):
                record["persons"].append(result)
                figures.add(image, result, first=len(record["persons"]) == 1)
            lifted[0] += len(pending)
            pending.clear()
            bar.set_postfix(persons=lifted[0])
        bar.update(len(records) - bar.n)  # the images read so far are lifted (the current one maybe in part)

    with tqdm(total=_frame_total(args, kind), desc="lift", unit="frame" if kind == "video" else "image",
              dynamic_ncols=True) as bar:
        for name, number, position, image in _frames(args, kind):
            height, width = image.shape[:2]
            record = {"image": name, "frame": number, "width": width, "height": height, "persons": []}
            records.append(record)
            base = name if kind == "video" else Path(name).stem
            for index, spec in enumerate(_people_of(args, annotations, boxes, name, number, position, width, height)):
                try:
                    person = prepare_person(image, spec.bbox, spec.keypoints, spec.format,
                                            base if index == 0 else f"{base}#{index}", _where(args, name, index))
                except InputError as error:
                    if not (args.skip_incomplete and "missing" in str(error)):
                        raise
                    log.warning("skipped %s", error)
                    continue
                pending.append((record, person, image))
                if len(pending) >= args.batch_size:
                    flush()
            if not pending:
                bar.update(len(records) - bar.n)
        flush()
    if not records:
        raise InputError(f"{args.input} gave no frames (an empty video, or --max-frames 0): nothing to lift")
    return records, write_outputs(out, stem, kind, records, args) + figures.finish()


def write_outputs(out, stem, kind, records, args):
    """``<stem>.json`` (every image and person) and, for a folder or video, ``<stem>.npz``.

    Both are written atomically (``common.core.files.atomic_write``): a full disk,
    Ctrl-C or a kill leaves the previous file or none, never a part. The JSON is
    written one image at a time, so its text never has to fit in memory at once.
    """
    header = {"input": str(args.input), "checkpoint": str(args.checkpoint), "joints": list(JOINT_NAMES),
              "units": {"3d": "metres, root-relative, camera axes (x right, y down, z forward)",
                        "spread_mm": "millimetres", "keypoints_2d": "image pixels"}}
    paths = [out / f"{stem}.json"]
    with atomic_write(paths[0], "w") as stream:
        stream.write(json.dumps(header)[:-1] + ', "images": [')
        for i, r in enumerate(records):
            image = {**{k: v for k, v in r.items() if k != "persons"}, "persons": [p.to_dict() for p in r["persons"]]}
            stream.write((", " if i else "") + json.dumps(image))
        stream.write("]}")
    remove_orphaned_temporaries(paths[0])
    results = [(r, p) for r in records for p in r["persons"]]
    if kind != "image" and results:
        paths.append(out / f"{stem}.npz")
        with atomic_write(paths[1]) as stream:
            np.savez_compressed(
                stream,
                keys=np.array([p.key for _, p in results]), images=np.array([r["image"] for r, _ in results]),
                frames=np.array([-1 if r["frame"] is None else r["frame"] for r, _ in results]),
                hypotheses=np.stack([p.hypotheses for _, p in results]).astype(np.float32),
                mean=np.stack([p.mean for _, p in results]).astype(np.float32),
                spread_mm=np.stack([p.spread_mm for _, p in results]),
                keypoints_2d=np.stack([p.keypoints_2d for _, p in results]),
                center=np.stack([p.center for _, p in results]), scale=np.stack([p.scale for _, p in results]))
        remove_orphaned_temporaries(paths[1])
    return paths


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.batch_size < 1 or args.every < 1:
        parser.error("--batch-size and --every must be at least 1")
    try:
        records, written = run(args)
    except (BadInput, FileNotFoundError, DiskFullError) as error:
        return refuse(error, log)
    except KeyboardInterrupt:
        log.error("interrupted: results already in %s are the previous run's (nothing is written in part)", args.out)
        return 130
    persons = sum(len(r["persons"]) for r in records)
    print(f"lifted {persons} person(s) in {len(records)} image(s)")
    for path in written[:3] + (["..."] if len(written) > 4 else []) + written[3:][-1:]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

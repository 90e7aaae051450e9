"""The command line of inference: lift the people in images, folders of frames or videos to 3D.

    python -m common.infer photo.jpg --checkpoint checkpoint/human36m/best_h36m.bin --visualize
    python -m common.infer frames/ --keypoints detections.json --out results
    python -m common.infer clip.mp4 --bbox 120 40 200 420 --animate

Per person: a box (``--bbox x y w h``, a file of boxes per image, a box around
given keypoints, or else the whole image) and 2D keypoints (from a file, COCO-17
or H36M-17, or by default the released backbone's heatmap head) are prepared as
``common.infer.person`` says, and lifted in batches (``common.infer.lifting``).
Writes ``<stem>.json`` (and for a folder or video ``<stem>.npz``), figures and
an animation as asked.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, atomic_write, output_folder, remove_orphaned_temporaries
from common.core.layout import SNAPPOSE_WEIGHTS, find_released
from common.core.skeleton import JOINT_NAMES
from common.infer import motion
from common.infer.api import load_model
from common.infer.inputs import (
    KEYPOINT_FORMATS,
    InputError,
    PersonSpec,
    count_frames,
    folder_images,
    input_kind,
    people_for,
    read_annotations,
    read_image,
    video_frames,
)
from common.infer.keypoints import HEATMAP_DECODERS
from common.infer.lifting import lift_people
from common.infer.person import MissingJointsError, prepare_person
from common.model.acceleration import PRECISION_OPTIONS, resolve_precision
from common.model.samplers import SAMPLERS

log = logging.getLogger(__name__)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.infer", allow_abbrev=False,
        description="Lift the people in an image, a folder of images or a video to 3D with a SnapPose checkpoint.")
    parser.add_argument("input", help="image file, folder of images, or video (GIF; mp4 and others need PyAV)")
    parser.add_argument("--checkpoint", default=SNAPPOSE_WEIGHTS["h36m"],
                        help=f"SnapPose checkpoint (default: {SNAPPOSE_WEIGHTS['h36m']}, the released layout)")
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
    parser.add_argument("--boxes", metavar="FILE.json", help="person boxes per image (formats: docs/inference.md)")
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
                        help="sampler (default: the config's, ddim as in the paper; see docs/evaluation.md, Faster evaluation)")
    parser.add_argument("--precision", choices=PRECISION_OPTIONS, default="auto",
                        help="autocast precision of backbone and denoiser (default: auto, bf16 where the device "
                             "computes it natively, else fp32; fp32 is the paper's)")
    parser.add_argument("--seed", type=int, help="noise seed (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=8, help="persons per batch through the networks (default: 8)")
    parser.add_argument("--device", help="'cpu', 'cuda', ... (default: CUDA if available)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="video: lift every N-th frame (default: 1)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="video: at most N frames")
    parser.add_argument("--visualize", action="store_true",
                        help="draw each person: image with 2D skeleton beside the 3D hypotheses")
    parser.add_argument("--animate", action="store_true",
                        help="folder or video: also write an animated GIF and an mp4 (the mp4 needs PyAV)")
    motion.add_arguments(parser)
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
                           spec.keypoints, spec.format, spec.track) for spec in listed]
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
    """Lift every person of ``args.input``; writes JSON (and npz, figures, GIF, mp4, BVH); returns (records, files written).

    Persons are tracked frame by frame as they are read, and the figures follow one track
    (``common.infer.motion``).
    """
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
    # Resolved once here, so that "auto" is decided (and logged) once, not for every batch.
    sampling = sampling.replace(precision=resolve_precision(sampling.precision, model.pipeline.device))
    options = dict(sampling=sampling, heatmap_decoding=args.heatmap_decoding)
    records, pending = [], []  # pending: (record, prepared person, image) not yet lifted
    lifted = [0]  # persons lifted so far, shown beside the images (one image may hold thousands)
    tracker, followed = motion.new_tracker(args), [args.track]

    def flush():
        if pending:
            for (record, _, image), result in zip(pending, lift_people(model, [p for _, p, _ in pending], **options)):
                record["persons"].append(result)
                track = record["tracks"][len(record["persons"]) - 1]
                followed[0] = track if followed[0] is None else followed[0]
                figures.add(image, result, follow=track == followed[0])
            lifted[0] += len(pending)
            pending.clear()
            bar.set_postfix(persons=lifted[0])
        bar.update(len(records) - bar.n)  # the images read so far are lifted (the current one maybe in part)

    with tqdm(total=_frame_total(args, kind), desc="lift", unit="frame" if kind == "video" else "image",
              dynamic_ncols=True) as bar:
        for name, number, position, image in _frames(args, kind):
            height, width = image.shape[:2]
            record = {"image": name, "frame": number, "position": position, "width": width, "height": height,
                      "persons": []}
            records.append(record)
            base = name if kind == "video" else Path(name).stem
            prepared = []
            for index, spec in enumerate(_people_of(args, annotations, boxes, name, number, position, width, height)):
                try:
                    prepared.append((spec, prepare_person(image, spec.bbox, spec.keypoints, spec.format,
                                                          base if index == 0 else f"{base}#{index}",
                                                          _where(args, name, index))))
                except MissingJointsError as error:
                    if not args.skip_incomplete:
                        raise
                    log.warning("skipped %s", error)
            record["tracks"] = motion.assign_tracks(tracker, position, [p for _, p in prepared],
                                                    [s for s, _ in prepared], args.keypoints or name)
            for _, person in prepared:
                pending.append((record, person, image))
                if len(pending) >= args.batch_size:
                    flush()
            if not pending:
                bar.update(len(records) - bar.n)
        flush()
    if not records:
        raise InputError(f"{args.input} gave no frames (an empty video, or --max-frames 0): nothing to lift")
    if not any(record["persons"] for record in records):
        raise InputError(f"{args.input}: no person in any of its {len(records)} frame(s): give boxes or keypoints "
                         f"of the persons (--boxes, --keypoints)")
    header, exported = motion.finish(records, args, kind, out, stem)
    return records, write_outputs(out, stem, kind, records, args, header) + exported + figures.finish()


def write_outputs(out, stem, kind, records, args, extra_header=None):
    """``<stem>.json`` (every image and person) and, for a folder or video, ``<stem>.npz``.

    Both are written atomically (``common.core.files.atomic_write``): a full disk,
    Ctrl-C or a kill leaves the previous file or none, never a part. The JSON is
    written one image at a time, so its text never has to fit in memory at once.
    """
    header = {"input": str(args.input), "checkpoint": str(args.checkpoint), "joints": list(JOINT_NAMES),
              "units": {"3d": "metres, root-relative, camera axes (x right, y down, z forward)",
                        "spread_mm": "millimetres", "keypoints_2d": "image pixels",
                        "root_camera": "metres, camera axes"}, **(extra_header or {})}
    paths = [out / f"{stem}.json"]
    with atomic_write(paths[0], "w") as stream:
        stream.write(json.dumps(header)[:-1] + ', "images": [')
        for i, r in enumerate(records):
            image = {**{k: v for k, v in r.items() if k not in ("persons", "tracks", "extras")},
                     "persons": [{**p.to_dict(), **motion.person_extras(r, i)} for i, p in enumerate(r["persons"])]}
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
                center=np.stack([p.center for _, p in results]), scale=np.stack([p.scale for _, p in results]),
                **motion.npz_columns(records))
        remove_orphaned_temporaries(paths[1])
    return paths


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.batch_size < 1 or args.every < 1:
        parser.error("--batch-size and --every must be at least 1")
    motion.check_arguments(parser, args)
    args.checkpoint = str(find_released(args.checkpoint))
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

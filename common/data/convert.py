"""Build Human3.6M shards in the released layout from CA-PF labels and H36M-Toolbox frames.

Inputs (``docs/formats.md``, Shards): Context-Aware PoseFormer's ``h36m_train.pkl`` /
``h36m_validation.pkl`` (a pickled list of per-frame dicts) and the frames of
H36M-Toolbox under ``images/s_XX_act_YY_subact_ZZ_ca_WW/s_XX_act_YY_subact_ZZ_ca_WW_NNNNNN.jpg``.
Output: ``data-000000.tar ...``, each sample ``<key>.jpg`` (the frame's original
bytes) + ``<key>.pyd`` (the label dict pickled, every field kept, float arrays as
float32, numpy scalars as Python numbers), plus ``conversion_report.json``
(options, skipped frames with reasons, and a summary per subject and action).

Conversion runs in three steps:
1. Plan (main process): check every label, drop the bad ones and subjects outside
   the split, order the rest (train: shuffled with ``seed`` across all shards, since
   the training pipeline only shuffles within a 1,000-sample buffer; validation:
   label-file order) and cut them into shards of ``shard_size`` samples (and, if
   ``shard_bytes`` is given, of at most about that many bytes, from the frames'
   file sizes).
2. Write (worker processes, one shard at a time): read and check each frame, write
   the shard as ``data-NNNNNN.tar.partial`` and rename it when complete. Memory
   holds the labels plus one frame per worker, whatever the number of frames.
3. Report: after each shard the report is rewritten, so an interrupted run
   resumes where it stopped: complete shards of the same plan are kept, a partial
   one is rewritten. Tar headers carry no time stamp, so a resumed run writes the
   same bytes as an uninterrupted one.

Command line::

    python -m common.convert h36m --labels h36m_train.pkl --images H36M-Toolbox/images \\
        --out webdataset/Human36m/train
    python -m common.convert --validate webdataset/Human36m/train
"""
import argparse
import concurrent.futures as futures
import glob
import hashlib
import io
import json
import multiprocessing
import numbers
import os
import pickle
import sys
from collections import Counter, defaultdict

import numpy as np
from PIL import Image
from tqdm import tqdm

import webdataset as wds
from common.core import safe_pickle
from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, output_folder, write_text
from common.core.reading import read_json, require_file
from common.core.skeleton import H36M_ACTIONS, H36M_TEST_SUBJECTS, H36M_TRAIN_SUBJECTS, NUM_JOINTS
from common.data.counts import record_counts
from common.data.loader import find_shards
from common.data.samples import PARTIAL_SUFFIX, ShardDataError, decode_sample, shard_writer

SPLITS = ("train", "validation")
SPLIT_SUBJECTS = {"train": H36M_TRAIN_SUBJECTS, "validation": H36M_TEST_SUBJECTS}
REPORT_NAME = "conversion_report.json"
SHARD_PATTERN = "data-{:06d}.tar"
DEFAULT_SHARD_SIZE = 10_000
PICKLE_PROTOCOL = 4  # the released pyd entries' protocol

# Integer label fields and their allowed ranges (inclusive).
INTEGER_FIELDS = {
    "subject": (1, 11), "action": (min(H36M_ACTIONS), max(H36M_ACTIONS)), "subaction": (1, 2),
    "camera_id": (0, 3), "image_id": (0, 10**6 - 1),
}
# Array label fields: shape; the first group is needed, the second checked when present.
ARRAY_FIELDS = {
    "center": (2,), "scale": (2,), "joints_3d": (NUM_JOINTS, 3),
    "joints_2d_cpn": (NUM_JOINTS, 2), "joints_2d_cpn_crop": (NUM_JOINTS, 2),
}
OPTIONAL_ARRAY_FIELDS = {"joints_2d_gt": (NUM_JOINTS, 2), "joints_2d_gt_crop": (NUM_JOINTS, 2)}

SKIP_REASONS = ("missing_field", "bad_shape", "bad_value", "subject_not_in_split", "duplicate_key",
                "missing_frame", "unreadable_frame")
TAR_BLOCK = 512


class ConversionError(BadInput):
    """Bad input or output for the converter; the message names the file or frame and what to do."""


def sample_key(label):
    """Released sample key ``s_09_act_02_subact_01_ca_01_000123`` of a label dict (camera_id 0-3 -> ca 01-04)."""
    return (f"s_{int(label['subject']):02d}_act_{int(label['action']):02d}_"
            f"subact_{int(label['subaction']):02d}_ca_{int(label['camera_id']) + 1:02d}_"
            f"{int(label['image_id']):06d}")


def frame_path(images, key):
    """H36M-Toolbox path of the frame with this sample key."""
    return os.path.join(images, key.rsplit("_", 1)[0], key + ".jpg")


def check_label(label):
    """Check one label dict.

    Returns:
        None when it is usable, else ``(reason, detail)`` with reason one of
        missing_field, bad_shape, bad_value.
    """
    if not isinstance(label, dict):
        return "bad_value", f"expected a dict, found {type(label).__name__}"
    missing = [name for name in (*INTEGER_FIELDS, *ARRAY_FIELDS) if name not in label]
    if missing:
        return "missing_field", f"no field {', '.join(missing)}"
    for name, (low, high) in INTEGER_FIELDS.items():
        value = label[name]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        # The range first: float() of a huge integer overflows.
        if not isinstance(value, numbers.Real) or not low <= value <= high or not float(value).is_integer():
            return "bad_value", f"{name} = {value!r}, expected an integer in {low}-{high}"
    shapes = {**ARRAY_FIELDS, **{k: v for k, v in OPTIONAL_ARRAY_FIELDS.items() if k in label}}
    for name, shape in shapes.items():
        try:
            value = np.asarray(label[name], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float64
            return "bad_value", f"{name} is not numeric"
        if value.shape != shape:
            return "bad_shape", f"{name} has shape {value.shape}, expected {shape}"
        if not np.isfinite(value).all():
            return "bad_value", f"{name} holds NaN or infinite values"
    if not float(label["scale"][0]) * 200 > 1:
        return "bad_value", f"scale {list(np.asarray(label['scale']))} gives an empty crop box"
    return None


def encode_label(label):
    """The pyd entry of a label dict: every field, float arrays as float32, numpy scalars as Python numbers."""
    out = {}
    for name, value in label.items():
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)
        elif isinstance(value, np.generic):
            value = value.item()
        elif name in ARRAY_FIELDS or name in OPTIONAL_ARRAY_FIELDS:
            value = np.asarray(value, dtype=np.float32)
        out[name] = value
    return pickle.dumps(out, protocol=PICKLE_PROTOCOL)


def check_frame(data):
    """Raise ValueError unless ``data`` is a complete JPEG image (decoded at 1/8 scale, which is cheap)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise ValueError(f"expected a JPEG image, found {image.format}")
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exn:
        raise ValueError(f"{type(exn).__name__}: {exn}") from exn


def _load_labels(path):
    path = require_file(path, "label file", ConversionError,
                        "it is Context-Aware PoseFormer's h36m_train.pkl or h36m_validation.pkl")
    try:
        with open(path, "rb") as handle:
            labels = safe_pickle.load(handle)
    except safe_pickle.RefusedGlobal as exn:
        raise ConversionError(f"label file {path} asks for {exn.name}, which labels never need and which "
                              "could run code: refused (only lists, dicts, numbers, strings and numpy arrays "
                              "are read)") from exn
    except (pickle.UnpicklingError, OSError) as exn:
        raise ConversionError(f"label file {path} does not unpickle ({type(exn).__name__}: {exn}); "
                              "expected CA-PF's pickled list of per-frame dicts") from exn
    if not isinstance(labels, (list, tuple)):
        raise ConversionError(f"label file {path} holds a {type(labels).__name__}, "
                              "expected a list of per-frame dicts (CA-PF's h36m_*.pkl)")
    return labels


def _skip(skipped, strict, index, key, reason, detail):
    assert reason in SKIP_REASONS, reason
    if strict:
        raise ConversionError(f"label {index} ({key or 'no key'}): {reason}: {detail} "
                              "(run without --strict to skip such frames and list them in the report)")
    skipped.append({"index": index, "key": key, "reason": reason, "detail": detail})


def _estimated_bytes(frame_size):
    # Tar: a header block per member, data padded to blocks; a pyd is under 3 blocks.
    return 2 * TAR_BLOCK + -(-frame_size // TAR_BLOCK) * TAR_BLOCK + 3 * TAR_BLOCK


def plan_shards(labels, images, split, subjects, shuffle, seed, shard_size, shard_bytes, strict, progress=True):
    """Check the labels and cut the usable ones into shards.

    Returns:
        ``(shards, skipped)``: shards is a list of lists of label indices, in
        writing order; skipped a list of {index, key, reason, detail}.
    """
    skipped, keep, seen = [], [], set()
    for index, label in enumerate(tqdm(labels, desc="checking labels", unit="label", mininterval=2,
                                          disable=not progress)):
        problem = check_label(label)
        if problem is not None:
            _skip(skipped, strict, index, None, *problem)
            continue
        key = sample_key(label)
        if int(label["subject"]) not in subjects:
            _skip(skipped, strict, index, key, "subject_not_in_split",
                  f"subject {int(label['subject'])} is not among the {split} subjects {list(subjects)}")
        elif key in seen:
            _skip(skipped, strict, index, key, "duplicate_key", "an earlier label has the same key")
        else:
            seen.add(key)
            keep.append(index)
    order = np.asarray(keep, dtype=np.int64)
    if shuffle:
        order = order[np.random.default_rng(seed).permutation(len(order))]

    sizes = {}
    if shard_bytes is not None:
        usable = []
        for index in tqdm(order.tolist(), desc="sizing frames", unit="frame", mininterval=2,
                          disable=not progress):
            key = sample_key(labels[index])
            try:
                sizes[index] = os.path.getsize(frame_path(images, key))
                usable.append(index)
            except OSError as exn:
                _skip(skipped, strict, index, key, "missing_frame", f"{frame_path(images, key)}: {exn.strerror}")
        order = usable
    else:
        order = order.tolist()

    shards, current, current_bytes = [], [], 0
    for index in order:
        size = _estimated_bytes(sizes[index]) if shard_bytes is not None else 0
        full = len(current) >= shard_size or (
            shard_bytes is not None and current and current_bytes + size > shard_bytes)
        if full:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        shards.append(current)
    return shards, skipped


def _write_shard(task):
    """Write one shard; run in a worker process. Returns its statistics."""
    path = os.path.join(task["out"], SHARD_PATTERN.format(task["shard"]))
    counts, skipped = Counter(), []
    with shard_writer(path) as writer:
        _write_samples(task, writer, counts, skipped)
    return {"shard": task["shard"], "written": sum(counts.values()), "bytes": os.path.getsize(path),
            "counts": dict(counts), "skipped": skipped}


def _write_samples(task, writer, counts, skipped):
    """Read, check and write the frames of one shard; count them per "subject/action" and list the skipped."""
    for index, label in task["labels"]:
        key = sample_key(label)
        source = frame_path(task["images"], key)
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as exn:
            _skip(skipped, task["strict"], index, key, "missing_frame", f"{source}: {exn.strerror}")
            continue
        finally:
            _count_progress()
        try:
            check_frame(data)
        except ValueError as exn:
            _skip(skipped, task["strict"], index, key, "unreadable_frame", f"{source}: {exn}")
            continue
        writer.write({"__key__": key, "jpg": data, "pyd": encode_label(label)})
        counts[f"{int(label['subject'])}/{int(label['action'])}"] += 1


_progress = None  # shared frame counter of the worker processes


def _init_worker(counter):
    global _progress
    _progress = counter


def _count_progress():
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += 1


def _fingerprint(options, shards, labels):
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for shard in shards:
        digest.update(("|".join(sample_key(labels[i]) for i in shard) + "\n").encode())
    return digest.hexdigest()


def _write_json(path, payload):
    write_text(path, json.dumps(payload, indent=1))


def _resume_state(out, fingerprint, num_shards):
    """Statistics of the shards a previous run of the same plan completed; error if ``out`` holds another's."""
    report_path = os.path.join(out, REPORT_NAME)
    existing = sorted(name for name in os.listdir(out) if name.startswith("data-") and name.endswith(".tar"))
    report = None
    if os.path.exists(report_path):
        report = read_json(report_path, "conversion report", ConversionError,
                           "remove it (the shards beside it are then rewritten) or choose another --out")
    if not isinstance(report, dict) or report.get("fingerprint") != fingerprint:
        if existing:
            raise ConversionError(
                f"{out} already holds {len(existing)} shards from a different conversion (other labels, split, "
                "seed or shard size); remove them or choose another --out")
        return {}
    done = {int(k): v for k, v in report.get("shards", {}).items()}
    return {i: stats for i, stats in done.items()
            if i < num_shards and os.path.exists(os.path.join(out, SHARD_PATTERN.format(i)))}


def _summarise(shard_stats, skipped):
    per_subject = defaultdict(lambda: defaultdict(int))
    for stats in shard_stats:
        for pair, count in stats["counts"].items():
            subject, action = (int(v) for v in pair.split("/"))
            per_subject[f"S{subject}"][H36M_ACTIONS[action]] += count
    return {
        "frames_written": sum(s["written"] for s in shard_stats),
        "frames_skipped": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "shards": len(shard_stats),
        "bytes": sum(s["bytes"] for s in shard_stats),
        "per_subject_action": {s: dict(sorted(a.items())) for s, a in sorted(per_subject.items())},
    }


def _checked_split(labels_path, images, split, shard_size, shard_bytes):
    """The split (guessed from the label file's name when None), after checking the options."""
    if split is None:
        name = os.path.basename(labels_path).lower()
        guesses = [s for s in SPLITS if s in name or (s == "validation" and ("valid" in name or "test" in name))]
        if len(guesses) != 1:
            raise ConversionError(f"cannot tell the split from the label file name {name!r}; "
                                  f"pass split= (--split) as one of {SPLITS}")
        split = guesses[0]
    if split not in SPLITS:
        raise ConversionError(f"split must be one of {SPLITS}, got {split!r}")
    if not os.path.isdir(images):
        raise ConversionError(f"frame folder {images} does not exist; it is H36M-Toolbox's images/ folder "
                              "holding s_XX_act_YY_subact_ZZ_ca_WW/ subfolders")
    if shard_size < 1 or (shard_bytes is not None and shard_bytes < 1):
        raise ConversionError(f"--shard-size and --shard-bytes must be positive, got {shard_size} and {shard_bytes}")
    return split


def convert_h36m(labels, images, out, split=None, subjects=None, shuffle=None, seed=0,
                 shard_size=DEFAULT_SHARD_SIZE, shard_bytes=None, workers=0, strict=False, progress=True):
    """Convert CA-PF labels and H36M-Toolbox frames into released-layout shards.

    Args:
        labels: path of ``h36m_train.pkl`` / ``h36m_validation.pkl``.
        images: H36M-Toolbox ``images`` folder.
        out: output folder (created); shards ``data-NNNNNN.tar`` and ``conversion_report.json``.
        split: ``"train"`` or ``"validation"``; None guesses it from the label file name.
        subjects: subject numbers to keep; None keeps the split's (train 1 5 6 7 8, validation 9 11).
        shuffle: shuffle samples across shards; None does so for train only.
        seed: seed of that shuffle.
        shard_size: samples per shard (the last one holds the rest).
        shard_bytes: if given, also cap each shard at about this many bytes.
        workers: processes writing shards in parallel; 0 writes in this process.
        strict: raise ConversionError on the first bad label or frame instead of skipping it.
        progress: show progress bars.
    Returns:
        The report dict (also written to ``out/conversion_report.json``): options,
        ``summary`` (frames_written, frames_skipped, skipped_by_reason, shards, bytes,
        per_subject_action) and ``skipped`` (index, key, reason, detail of each).
    Raises:
        ConversionError: unreadable label file, bad options, an output folder holding
            another conversion's shards, or (with ``strict``) any bad frame.
    """
    labels_path = os.fspath(labels)
    split = _checked_split(labels_path, images, split, shard_size, shard_bytes)
    subjects = tuple(sorted(int(s) for s in (SPLIT_SUBJECTS[split] if subjects is None else subjects)))
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    output_folder(out, "--out folder", ConversionError)

    label_list = _load_labels(labels_path)
    try:
        shards, skipped = plan_shards(label_list, images, split, subjects, shuffle, seed, shard_size,
                                      shard_bytes, strict, progress)
    except ConversionError as error:  # --strict: a bad label or frame, named with the label file it is in
        raise ConversionError(f"{labels_path}: {error}") from None
    options = {"labels": os.path.abspath(labels_path), "images": os.path.abspath(images), "split": split,
               "subjects": list(subjects), "shuffle": shuffle, "seed": seed, "shard_size": shard_size,
               "shard_bytes": shard_bytes}
    plan_options = {k: v for k, v in options.items() if k not in ("labels", "images")}
    fingerprint = _fingerprint(plan_options, shards, label_list)
    done = _resume_state(out, fingerprint, len(shards))
    for name in os.listdir(out):
        if name.endswith(".tar" + PARTIAL_SUFFIX):
            os.remove(os.path.join(out, name))  # left by an interrupted run; its shard is rewritten

    report = {"options": options, "fingerprint": fingerprint, "complete": False, "planned_shards": len(shards),
              "plan_skipped": skipped, "shards": {str(i): s for i, s in sorted(done.items())}}
    report_path = os.path.join(out, REPORT_NAME)
    _write_json(report_path, report)

    def record(stats):
        report["shards"][str(stats["shard"])] = stats
        _write_json(report_path, report)

    todo = [i for i in range(len(shards)) if i not in done]
    tasks = ({"shard": i, "out": out, "images": images, "strict": strict,
              "labels": [(index, label_list[index]) for index in shards[i]]} for i in todo)
    total = sum(len(shards[i]) for i in todo)
    with tqdm(total=total, desc=f"writing {split} shards", unit="frame", disable=not progress) as bar:
        if workers <= 0:
            for task in tasks:
                stats = _write_shard(task)
                bar.update(len(task["labels"]))
                record(stats)
        else:
            _run_pool(tasks, workers, bar, record)

    shard_stats = [report["shards"][str(i)] for i in range(len(shards))]
    all_skipped = skipped + [s for stats in shard_stats for s in stats["skipped"]]
    report.update(complete=True, summary=_summarise(shard_stats, all_skipped), skipped=all_skipped)
    _write_json(report_path, report)
    names = {i: SHARD_PATTERN.format(i) for i in range(len(shard_stats))}
    record_counts(out, {names[i]: stats["written"] for i, stats in enumerate(shard_stats)
                        if os.path.isfile(os.path.join(out, names[i]))})
    return report


def _run_pool(tasks, workers, bar, record):
    """Write shards in ``workers`` processes, at most ``2 * workers`` queued so that memory stays flat."""
    context = multiprocessing.get_context()
    counter = context.Value("q", 0)
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(counter,)) as pool:
        pending = set()
        tasks = iter(tasks)
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < 2 * workers:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(_write_shard, task))
                finished, pending = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
                bar.update(counter.value - bar.n)
                for future in finished:
                    record(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def validate_shards(directory, dataset=None, progress=True):
    """Read a shard set back: decode every sample and count them per subject and action.

    Args:
        directory: a folder of ``*.tar`` shards (or anything ``common.data.loader.find_shards`` accepts).
        dataset: ``"h36m"`` or ``"mpi"``; None tells it from the first image entry.
    Returns:
        dict: ``samples``, ``shards``, ``failures`` (list of {shard, key, error}),
        ``per_subject_action`` {"S9": {"Directions": n}} (MPI test keys give "TS<n>").
    """
    urls = find_shards(directory)
    counts = defaultdict(Counter)
    failures, samples = [], 0
    with tqdm(desc="validating", unit="sample", disable=not progress) as bar:
        for url in urls:
            try:
                for sample in wds.WebDataset(url, shardshuffle=False, empty_check=False):
                    bar.update(1)
                    samples += 1
                    if dataset is None:
                        dataset = "mpi" if "png" in sample else "h36m"
                    try:
                        decoded = decode_sample(sample, dataset, train=False)
                    except ShardDataError as exn:
                        failures.append({"shard": url, "key": sample.get("__key__"), "error": str(exn)})
                        continue
                    subject, action = decoded["subject"], decoded["action"]
                    group = "unknown" if subject is None else (f"TS{subject}" if dataset == "mpi" else f"S{subject}")
                    counts[group][H36M_ACTIONS.get(action, "all")] += 1
            except Exception as exn:  # an unreadable tar stops that shard only
                failures.append({"shard": url, "key": None, "error": f"{type(exn).__name__}: {exn}"})
    return {"samples": samples, "shards": len(urls), "failures": failures,
            "per_subject_action": {s: dict(sorted(a.items())) for s, a in sorted(counts.items())}}


def validate_dataset(directory, dataset=None, progress=True):
    """Validate a shard folder, or each split of a dataset root (train/, validation/, test/ with shards).

    Returns:
        dict folder -> the result of :func:`validate_shards` for that folder.
    """
    if os.path.isdir(directory) and not glob.glob(os.path.join(glob.escape(directory), "*.tar")):
        splits = [os.path.join(directory, split) for split in ("train", "validation", "test")
                  if glob.glob(os.path.join(glob.escape(os.path.join(directory, split)), "*.tar"))]
        if splits:
            return {split: validate_shards(split, dataset, progress) for split in splits}
    return {directory: validate_shards(directory, dataset, progress)}


def _format_counts(per_subject_action):
    lines = []
    for subject, actions in per_subject_action.items():
        lines.append(f"  {subject}: {sum(actions.values())} ("
                     + ", ".join(f"{name} {count}" for name, count in actions.items()) + ")")
    return "\n".join(lines)


def subject_number(text):
    """A subject as the command line gives it, ``S9``, ``s9`` or ``9`` -> 9."""
    digits = text[1:] if text[:1] in ("S", "s") else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a subject: give S1, S5, ... or 1, 5, ...")
    return int(digits)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m common.convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build Human3.6M WebDataset shards in the released layout from Context-Aware\n"
                    "PoseFormer's label files and H36M-Toolbox frames, or check a shard set (--validate).")
    parser.add_argument("--validate", metavar="DIR",
                        help="read the shards in DIR (a split folder, or a dataset root: each of its "
                             "train/, validation/, test/) back and report counts")
    commands = parser.add_subparsers(dest="command")
    h36m = commands.add_parser("h36m", help="convert Human3.6M")
    h36m.add_argument("--labels", required=True, help="CA-PF h36m_train.pkl or h36m_validation.pkl")
    h36m.add_argument("--images", required=True, help="H36M-Toolbox images/ folder")
    h36m.add_argument("--out", required=True, help="output folder, e.g. webdataset/Human36m/train")
    h36m.add_argument("--split", choices=SPLITS, help="default: from the label file name")
    h36m.add_argument("--subjects", type=subject_number, nargs="+", metavar="SUBJECT",
                      help="subjects to keep, as S9 or 9 (default: the split's subjects)")
    h36m.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                      help="shuffle across shards (default: train only)")
    h36m.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default: %(default)s)")
    h36m.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                      help="samples per shard (default: %(default)s)")
    h36m.add_argument("--shard-bytes", type=int, help="also cap shards at about this many bytes")
    h36m.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                      help="parallel writer processes, 0: this process (default: %(default)s)")
    h36m.add_argument("--strict", action="store_true", help="stop at the first bad label or frame")
    # The subcommand's options belong in the main --help too, where a new user looks first.
    parser.epilog = "command h36m:\n" + h36m.format_help()
    args = parser.parse_args(argv)

    if args.validate:
        try:
            results = validate_dataset(args.validate)
        except (FileNotFoundError, BadInput) as exn:
            return refuse(exn)
        for folder, result in results.items():
            print(f"{folder}: {result['samples']} samples in {result['shards']} shards, "
                  f"{len(result['failures'])} failures")
            print(_format_counts(result["per_subject_action"]))
            for failure in result["failures"][:20]:
                print(f"  FAILED {failure['shard']} {failure['key']}: {failure['error']}")
        return 1 if any(result["failures"] for result in results.values()) else 0
    if args.command != "h36m":
        parser.error("give a command (h36m) or --validate DIR")
    try:
        report = convert_h36m(args.labels, args.images, args.out, split=args.split, subjects=args.subjects,
                              shuffle=args.shuffle, seed=args.seed, shard_size=args.shard_size,
                              shard_bytes=args.shard_bytes, workers=args.workers, strict=args.strict)
    except (BadInput, DiskFullError) as exn:
        return refuse(exn)
    except KeyboardInterrupt:
        print(f"interrupted: the finished shards in {args.out} are kept (no shard is left in part); run the same "
              f"command again to resume", file=sys.stderr)
        return 130
    summary = report["summary"]
    print(f"{summary['frames_written']} frames written in {summary['shards']} shards "
          f"({summary['bytes'] / 1e9:.2f} GB), {summary['frames_skipped']} skipped {summary['skipped_by_reason']}")
    print(_format_counts(summary["per_subject_action"]))
    print(f"report: {os.path.join(args.out, REPORT_NAME)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: decoding and cropping evaluation samples per core, three ways, and the whole loader.

On the same full-frame synthetic Human3.6M samples (1000 x 1002 JPEG), one
thread, side by side in one run:
- the original's way, from its documented steps: Pillow decode, ``cv2.warpAffine``
  (INTER_LINEAR), / 255 and ImageNet mean/std in float32, the flipped view, stacked;
- ``decode_sample`` as evaluation called it before, normalising each sample and
  its mirror image on the CPU (now with OpenCV's decode and warp);
- the new path: ``decode_sample(uint8_crops=True)`` (uint8 crop) in the worker,
  and the batch's normalisation plus mirror view as one tensor op (timed here
  on the CPU; on a GPU it leaves the workers entirely).
It prints ms per sample and samples/s per core, the largest crop difference
against the original's (grey levels), then the whole loader
(``build_loader(uint8_crops=True)``) with ``--workers`` processes, and the ratios last.

    python -m benchmarks.loader --data webdataset/benchmark_loader --samples 200 --workers 2
"""
import argparse
import io
import os
import time

import cv2
import numpy as np
import torch
from PIL import Image

import webdataset as wds
from common.core import safe_pickle
from common.core.geometry import CROP_HEIGHT, CROP_WIDTH, crop_matrix
from common.data.loader import build_loader, find_shards
from common.data.samples import IMAGE_MEAN, IMAGE_STD, decode_sample, normalize_crops
from common.synthetic.world import generate_dataset


def original_sample(raw):
    """The original's test sample from its documented steps: (2, 3, 256, 192) float32 and its 8-bit crop."""
    labels = safe_pickle.loads(raw["pyd"])
    with Image.open(io.BytesIO(raw["jpg"])) as image:
        frame = np.asarray(image.convert("RGB"))
    matrix = crop_matrix(labels["center"], labels["scale"])
    crop = cv2.warpAffine(frame, matrix, (CROP_WIDTH, CROP_HEIGHT), flags=cv2.INTER_LINEAR)
    image = ((crop.astype(np.float32) / 255 - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)  # (3, H, W)
    return np.stack([image, image[:, :, ::-1]]).astype(np.float32), crop  # (2, 3, H, W)


def time_ways(ways, samples, repeats):
    """{name: best seconds per sample over ``repeats`` rounds}; the ways take turns on each sample,
    so that the load of a shared machine falls on all of them alike."""
    best = {name: float("inf") for name in ways}
    for _ in range(repeats):
        total = dict.fromkeys(ways, 0.0)
        for raw in samples:
            for name, way in ways.items():
                start = time.perf_counter()
                way(raw)
                total[name] += time.perf_counter() - start
        best = {name: min(best[name], total[name] / len(samples)) for name in ways}
    return best


def time_batch_normalisation(samples, batch_size, repeats):
    """Seconds per sample of ``normalize_crops(mirror=True)`` on batches of uint8 crops, on this CPU."""
    crops = torch.stack([decode_sample(raw, "h36m", train=False, uint8_crops=True)["crop"]
                         for raw in samples[:batch_size]])
    best = float("inf")
    for _ in range(repeats * 4):
        start = time.perf_counter()
        normalize_crops(crops, mirror=True)
        best = min(best, (time.perf_counter() - start) / len(crops))
    return best


def largest_crop_difference(samples):
    worst = 0
    for raw in samples:
        _, original = original_sample(raw)
        ours = decode_sample(raw, "h36m", train=False, uint8_crops=True)["crop"].numpy()
        worst = max(worst, int(np.abs(ours.astype(np.int64) - original).max()))
    return worst


def loader_rate(shards, workers, batch_size, passes):
    """Samples/s of whole passes of ``build_loader(uint8_crops=True)`` (the first pass warms up)."""
    loader = build_loader(shards, "h36m", train=False, batch_size=batch_size, num_workers=workers)
    sum(len(b["key"]) for b in loader)
    start, count = time.perf_counter(), 0
    for _ in range(passes):
        count += sum(len(b["key"]) for b in loader)
    return count / (time.perf_counter() - start)


def print_row(name, seconds):
    print(f"{name:<58} {1000 * seconds:8.2f} ms {1 / seconds:9.1f} samples/s per core")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="webdataset/benchmark_loader",
                        help="synthetic Human3.6M shards (written there once, then reused)")
    parser.add_argument("--samples", type=int, default=200, help="evaluation samples timed per way")
    parser.add_argument("--repeats", type=int, default=2, help="passes per way; the fastest is reported")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes for the whole-loader row")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    generate_dataset(args.data, "h36m", num_train=0, num_test=args.samples, progress=False)
    shards = find_shards(args.data, "validation")
    samples = list(wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples()))[:args.samples]
    print(f"{len(samples)} evaluation samples (1000 x 1002 JPEG frames, flip view), 1 thread, "
          f"best of {args.repeats} rounds, the ways taking turns on each sample; cores available: {len(os.sched_getaffinity(0))}")
    ways = {
        "original": original_sample,
        "today": lambda raw: decode_sample(raw, "h36m", train=False),
        "worker": lambda raw: decode_sample(raw, "h36m", train=False, uint8_crops=True),
    }
    original, today, worker = time_ways(ways, samples, args.repeats).values()
    new = worker + time_batch_normalisation(samples, args.batch_size, args.repeats)
    print_row("original's way (Pillow, cv2.warpAffine, float32, flip)", original)
    print_row("decode_sample, normalised per sample", today)
    print_row("new: uint8 decode_sample (the worker's share)", worker)
    print_row(f"new: + normalisation and mirror of batches of {args.batch_size} here", new)
    print(f"largest crop difference against the original's: {largest_crop_difference(samples)} grey levels")
    rate = loader_rate(shards, args.workers, args.batch_size, args.repeats)
    print(f"whole loader, {args.workers} workers, uint8 crops: {rate:.1f} samples/s "
          f"({rate / max(args.workers, 1):.1f} per worker, against {1 / worker:.1f} per core in one process)")
    print(f"ratios vs the original's way, per core: worker share {original / worker:.2f}x, "
          f"with CPU normalisation {original / new:.2f}x, decode_sample normalised {original / today:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

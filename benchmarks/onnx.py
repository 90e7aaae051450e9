"""Benchmark: the pipeline in PyTorch and on its ONNX graphs (onnxruntime), side by side on the CPU.

The full-size model (PoseHRNet-W32 and the 128-wide denoiser) with seeded random
weights is written as ONNX graphs (``common.pipeline.graphs``); both pipelines
then lift the same synthetic Human3.6M test images (``common.synthetic.world``;
written once, then reused) with the same sampling: DDIM, K steps, H hypotheses,
the flip test. Each pipeline runs one untimed batch first; then ``--repeats``
rounds time one pass of each in turn over the decoded batches (loading is left
out), and the best pass of each counts. Both use ``--threads`` threads. It prints
images per second of each and the largest relative difference of their hypotheses.

    python -m benchmarks.onnx                        # 8 images, H = 20, K = 5, flip test
    python -m benchmarks.onnx --images 16 --threads 4 --steps 20
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from common.data.loader import build_loader
from common.model.networks import ModelConfig, build_model
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.graphs import export_graphs
from common.synthetic.world import generate_dataset


def seeded_networks(seed=0):
    """The released model's sizes with seeded random weights, in eval mode on the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, denoiser = build_model(ModelConfig())
    return backbone.eval(), denoiser.eval()


def one_pass(pipeline, batches):
    """Seconds to lift every batch and the hypotheses (N, H, 17, 3)."""
    start = time.perf_counter()
    hypotheses = [pipeline(batch) for batch in batches]
    return time.perf_counter() - start, torch.cat(hypotheses)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="test images, each with its mirror view (default: 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (default: 4)")
    parser.add_argument("--hypotheses", type=int, default=20, help="H (default: 20)")
    parser.add_argument("--steps", type=int, default=5, help="K DDIM steps (default: 5)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the best per runtime counts (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and onnxruntime (default: 1)")
    parser.add_argument("--graphs", help="folder for the ONNX graphs (default: a temporary folder)")
    parser.add_argument("--shards", default="webdataset/benchmark",
                        help="folder for the synthetic shards (written once, reused after)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("images", "batch_size", "hypotheses", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    root = Path(args.shards)
    generate_dataset(root, "h36m", num_train=16, num_test=args.images, workers=min(os.cpu_count() or 1, 16),
                     progress=False)
    batches = list(build_loader(root / "validation", "h36m", train=False, batch_size=args.batch_size,
                                max_samples=args.images))
    sampling = SamplingConfig(steps=args.steps, hypotheses=args.hypotheses, flip=True)
    backbone, denoiser = seeded_networks()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.graphs or scratch)
        export_graphs(backbone, denoiser, folder)
        pipelines = {"PyTorch": SnapPosePipeline(backbone, denoiser, sampling, "cpu"),
                     "onnxruntime": SnapPosePipeline.from_onnx(folder, sampling, threads=args.threads)}
        for pipeline in pipelines.values():
            pipeline(batches[0])  # start-up costs stay out of the timing
        best = {name: (float("inf"), None) for name in pipelines}
        for _ in range(args.repeats):
            for name, pipeline in pipelines.items():
                seconds, hypotheses = one_pass(pipeline, batches)
                best[name] = min(best[name], (seconds, hypotheses), key=lambda pair: pair[0])
    count = sum(len(b["key"]) for b in batches)
    reference = best["PyTorch"][1]
    difference = ((best["onnxruntime"][1] - reference).norm() / reference.norm()).item()
    print(f"CPU, {args.threads} thread(s); torch {torch.__version__}; full-size model, seeded random weights; "
          f"{count} images x 2 views, H = {args.hypotheses}, K = {args.steps} (ddim), flip test, batch "
          f"{args.batch_size}, best of {args.repeats}")
    print(f"{'runtime':<12} {'images/s':>9} {'seconds':>8} {'vs PyTorch':>10}")
    rates = {name: count / seconds for name, (seconds, _) in best.items()}
    for name, (seconds, _) in best.items():
        print(f"{name:<12} {rates[name]:9.2f} {seconds:8.2f} {rates[name] / rates['PyTorch']:9.2f}x")
    print(f"hypotheses, onnxruntime vs PyTorch: relative difference |a - b| / |b| = {difference:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"arguments": vars(args), "images_per_second": rates,
                                               "relative_difference": difference}, indent=2))


if __name__ == "__main__":
    main()

"""Accuracy and speed of each sampler, number of steps and precision on one trained model.

Reads the test images once into memory, then evaluates them (H hypotheses,
flip test, the evaluation's own ``run_evaluation`` through ``SnapPosePipeline``) for every combination of
``--samplers`` x ``--steps`` x ``--precisions`` and prints a table: MPJPE of
the mean hypothesis, J-Best (best joint, an oracle), P-MPJPE of the mean
hypothesis, and images per second from decoded images to metrics (backbone,
sampling, scoring; decoding is left out, as it is the same for all).

    python -m benchmarks.accuracy --config RUN/config.yaml --weights RUN/best_h36m.bin \\
        -w webdataset/synthetic --max-samples 400
"""
import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.pipeline import Setting
from common.data.loader import build_loader
from common.model.acceleration import PRECISION_OPTIONS, resolve_precision
from common.model.samplers import SAMPLERS
from common.pipeline import SnapPosePipeline
from common.pipeline.config import load_config
from common.run.evaluation import run_evaluation


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the run's config.yaml (model and data settings)")
    parser.add_argument("--weights", required=True, help="SnapPose checkpoint of that run")
    parser.add_argument("-w", "--webdataset-path", help="dataset root (default: the config's data.root)")
    parser.add_argument("--max-samples", type=int, default=400, help="test images")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--steps", nargs="+", type=int, default=[20, 10, 5, 3], help="values of K")
    parser.add_argument("--precisions", nargs="+", choices=PRECISION_OPTIONS, default=["fp32", "bf16"],
                        help="auto: bf16 where the device computes it natively, else fp32")
    parser.add_argument("--settings", nargs="+", type=Setting.parse, metavar="SAMPLER:K:PRECISION",
                        help="evaluate exactly these, in this order, instead of the grid above")
    parser.add_argument("--hypotheses", type=int, help="H (default: the config's evaluation.num_proposals)")
    parser.add_argument("--batch-size", type=int, help="default: the config's data.eval_batch_size")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"device": args.device}
    if args.webdataset_path:
        overrides["data.root"] = args.webdataset_path
    cfg = load_config(args.config, overrides)
    device = torch.device(args.device)
    hypotheses = args.hypotheses or cfg.evaluation.num_proposals
    # One pipeline per precision family: a backbone once prepared for low precision stays channels-last.
    full, _ = SnapPosePipeline.from_config(cfg, args.weights, device)
    low, _ = SnapPosePipeline.from_config(cfg, args.weights, device)
    pipelines = {"fp32": full, "bf16": low, "fp16": low}
    loader = build_loader(cfg.data.root, cfg.dataset, train=False,
                          batch_size=args.batch_size or cfg.data.eval_batch_size,
                          max_samples=args.max_samples)  # uint8 crops, as evaluation reads them: a sixteenth of the memory
    batches = list(loader)
    count = sum(len(b["key"]) for b in batches)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU with {torch.get_num_threads()} threads")
    print(f"{count} images of {cfg.data.root}, H = {hypotheses}, flip test, {where}; "
          f"images/s from decoded images to metrics")
    print(f"{'sampler':<14} {'K':>3} {'precision':<9} {'MPJPE':>7} {'J-Best':>7} {'P-MPJPE':>8} {'img/s':>8}")
    grid = [(s.sampler, s.steps, s.precision) for s in args.settings] if args.settings else \
        [(sampler, steps, precision) for precision in args.precisions for sampler in args.samplers
         for steps in args.steps]
    grid = [(sampler, steps, resolve_precision(precision, device)) for sampler, steps, precision in grid]
    rows = []
    for sampler, steps, precision in grid:
        start = time.perf_counter()
        sampling = cfg.sampling().replace(sampler=sampler, steps=steps, hypotheses=hypotheses, precision=precision,
                                          flip=True, compile=False)
        pipeline = pipelines[precision].prepare(sampling)
        accumulator, _ = run_evaluation(pipeline, batches, cfg.dataset, desc=f"{sampler} K={steps} {precision}")
        seconds = time.perf_counter() - start
        s = accumulator.summary()
        row = {"sampler": sampler, "steps": steps, "precision": precision, "images": s["num_samples"],
               "mpjpe": s["mpjpe_mean_hypothesis"], "j_best": s["mpjpe_best_joint_hypothesis"],
               "p_mpjpe": s["p_mpjpe_mean_hypothesis"], "images_per_second": s["num_samples"] / seconds}
        rows.append(row)
        print(f"{sampler:<14} {steps:>3} {precision:<9} {row['mpjpe']:7.2f} {row['j_best']:7.2f} "
              f"{row['p_mpjpe']:8.2f} {row['images_per_second']:8.1f}", flush=True)
        if args.json:  # after every row, so that an interrupted run keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""The embedded demo: synthetic shards -> training -> evaluation, on a CPU in minutes.

``python -m common.demo`` (or ``make demo``)

1. writes synthetic Human3.6M-layout shards to ``webdataset/synthetic`` unless
   shards with the same settings are already there;
2. trains the shrunk model of ``config/synthetic_demo.yaml`` on them;
3. evaluates the result (20 hypotheses, flip test) on the validation shards,
   prints the metrics table, and compares it with a trivial baseline that
   always predicts the mean training pose, on the same samples;
4. lifts a few validation images through ``common.infer``, as a user lifts
   their own photos (with the shards' boxes and 2D keypoints: the demo's random
   backbone has no heatmap head to find them), and draws them;
5. says where the checkpoints, metrics.json, predictions and figures went.

The training and evaluation code is the same that the entry scripts run on the
released data; only the configuration is smaller.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import webdataset as wds
from common.analysis.metrics import mpjpe, n_mpjpe, p_mpjpe
from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, output_folder
from common.core.geometry import image_coordinates
from common.data.loader import find_shards
from common.data.samples import H36M_FIELDS, read_fields, read_pose_3d
from common.pipeline.config import load_config, output_paths
from common.run.evaluation import evaluate
from common.run.training import train
from common.synthetic.world import generate_dataset

log = logging.getLogger("common.demo")

DEFAULT_CONFIG = "config/synthetic_demo.yaml"


def mean_training_pose(data_root, dataset="h36m"):
    """Mean root-relative 3D pose (17, 3), metres, over the training shards (reads only the labels)."""
    total, count = torch.zeros(17, 3, dtype=torch.float64), 0
    for sample in wds.WebDataset(find_shards(data_root, "train"), shardshuffle=False, empty_check=False):
        total += read_pose_3d(sample, dataset)[0].double()
        count += 1
    if not count:
        raise RuntimeError(f"no training samples found under {data_root}")
    return total / count


def lift_validation_images(data_root, checkpoint, out, count=4, device=None):
    """Export ``count`` validation frames and their labels as a user's files, and lift them with ``common.infer``.

    Writes ``out/images/<key>.jpg`` and ``out/keypoints.json`` (boxes as
    ``center``/``scale``, H36M-17 keypoints in pixels), then runs
    ``python -m common.infer out/images --keypoints out/keypoints.json --visualize``.
    Returns the folder of the figures.
    """
    from common.infer import cli as infer

    images, out = Path(out) / "images", Path(out)
    images.mkdir(parents=True, exist_ok=True)
    people = {}
    source = wds.WebDataset(find_shards(data_root, "validation"), shardshuffle=False, empty_check=False)
    for sample in source:
        if len(people) == count:
            break
        labels = read_fields(sample, sample.get("__url__"), sample["__key__"], H36M_FIELDS)
        name = f"{sample['__key__']}.jpg"
        (images / name).write_bytes(sample["jpg"])
        width, height = Image.open(images / name).size
        pixels = image_coordinates(labels["joints_2d_cpn"].astype(np.float64), width, height)
        people[name] = [{"bbox": {"center": labels["center"].tolist(), "scale": labels["scale"].tolist()},
                         "keypoints": pixels.tolist(), "format": "h36m"}]
    (out / "keypoints.json").write_text(json.dumps(people))
    argv = [str(images), "--checkpoint", str(checkpoint), "--keypoints", str(out / "keypoints.json"),
            "--out", str(out), "--visualize"] + (["--device", device] if device else [])
    if infer.main(argv) != 0:
        raise RuntimeError(f"lifting the validation images failed: python -m common.infer {' '.join(argv)}")
    return out / "figures"


def comparison_table(predicted, baseline, target):
    """Rows of (name, MPJPE, P-MPJPE, N-MPJPE) in millimetres.

    predicted: (N, 17, 3) mean hypotheses; baseline: (17, 3); target: (N, 17, 3); metres.
    """
    rows = []
    for name, pose in (("mean training pose (baseline)", baseline.expand_as(target)),
                       ("SnapPose, mean of hypotheses", predicted)):
        rows.append((name, *(1000 * float(metric(pose, target)) for metric in (mpjpe, p_mpjpe, n_mpjpe))))
    return rows


def format_table(rows):
    lines = [f"{'':32s}{'MPJPE':>10s}{'P-MPJPE':>10s}{'N-MPJPE':>10s}   (mm)"]
    lines += [f"{name:32s}{a:10.2f}{b:10.2f}{c:10.2f}" for name, a, b, c in rows]
    return "\n".join(lines)


def verdict(ratio):
    """One sentence on the model's MPJPE as ``ratio`` x the baseline's."""
    if ratio <= 0.5:
        return f"{ratio:.2f} x the baseline's, at most half of it: the model learned to lift 2D poses to 3D."
    if ratio < 1:
        return (f"{ratio:.2f} x the baseline's: better than the baseline, but not by half; "
                "more epochs (--epochs) should help.")
    return (f"{ratio:.2f} x the baseline's: WORSE than the baseline, which always predicts the mean training "
            "pose; the model has not learned to lift. Train longer (--epochs) or check the data.")


def timing_line(stages):
    """``stages``: (name, seconds) pairs, in order -> "time: data 3 s, training 40 s, ..., in all 50 s"."""
    parts = [f"{name} {seconds:.0f} s" for name, seconds in stages]
    return f"time: {', '.join(parts)}; in all {sum(seconds for _, seconds in stages):.0f} s"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.demo",
        description="SnapPose demo: generate synthetic shards, train a small model on the CPU, evaluate it.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="run configuration (default: %(default)s)")
    parser.add_argument("--data", default="webdataset/synthetic",
                        help="where the synthetic shards go (default: %(default)s)")
    parser.add_argument("--out", default="demo_output",
                        help="checkpoints, metrics, predictions and figures (default: %(default)s)")
    parser.add_argument("--train-samples", type=int, default=4000,
                        help="synthetic training samples (default: %(default)s)")
    parser.add_argument("--test-samples", type=int, default=800,
                        help="synthetic validation samples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data and the training run (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument("--device", help="'cpu', 'cuda', ... (default: the config's)")
    parser.add_argument("--lift-images", type=int, default=4,
                        help="validation images lifted through common.infer at the end, 0 for none "
                             "(default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _demo(args)
    except (BadInput, FileNotFoundError, DiskFullError) as error:
        return refuse(error)


def _demo(args):
    """Run the demo's stages for ``main``'s parsed ``args``; returns the exit status."""
    if args.train_samples < 1 or args.test_samples < 1 or args.lift_images < 0:
        raise BadInput(f"--train-samples and --test-samples must be at least 1 and --lift-images at least 0, got "
                       f"{args.train_samples}, {args.test_samples} and {args.lift_images}")
    output_folder(args.data, "--data folder")
    output_folder(args.out, "--out folder")
    stages, start = [], time.time()

    def stage_done(name):
        nonlocal start
        stages.append((name, time.time() - start))
        start = time.time()

    print(f"[1/4] synthetic data in {args.data}", flush=True)
    generate_dataset(args.data, "h36m", num_train=args.train_samples, num_test=args.test_samples,
                     seed=args.seed, workers=2)
    stage_done("data")

    out = Path(args.out)
    overrides = {"data.root": args.data, "checkpoint": str(out / "checkpoint"), "seed": args.seed,
                 "evaluation.save_predictions": str(out / "predictions.npz")}
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    cfg = load_config(args.config, overrides=overrides, dataset="h36m")
    paths = output_paths(cfg)

    print(f"[2/4] training ({cfg.train.epochs} epochs) into {paths.checkpoint_dir}", flush=True)
    weights = train(cfg)
    stage_done("training")

    print(f"[3/4] evaluating {weights.name}: {cfg.evaluation.num_proposals} hypotheses, "
          f"{cfg.evaluation.timesteps} DDIM steps, flip test", flush=True)
    summary = evaluate(cfg, weights)
    stage_done("evaluation")
    predictions = np.load(paths.predictions)
    target = torch.from_numpy(predictions["ground_truth"]).double()
    predicted = torch.from_numpy(predictions["hypotheses"]).double().mean(dim=1)
    baseline = mean_training_pose(args.data)
    rows = comparison_table(predicted, baseline, target)
    ratio = rows[1][1] / rows[0][1]
    stage_done("baseline")

    print()
    print(f"SnapPose demo on {len(target)} synthetic validation images "
          f"({cfg.evaluation.num_proposals} hypotheses, {cfg.evaluation.timesteps} DDIM steps, flip test)")
    print(format_table(rows))
    print(f"MPJPE of the mean hypothesis is {verdict(ratio)}")
    lifted = None
    if args.lift_images:
        print(f"[4/4] lifting {args.lift_images} validation images with common.infer, as if they were your own "
              f"photos", flush=True)
        lifted = lift_validation_images(args.data, weights, out / "inference", args.lift_images, args.device)
        stage_done("inference")
    print(timing_line(stages))
    files = sorted({weights.name, paths.latest.name, paths.config.name, paths.training_log.name})
    print(f"checkpoints: {paths.checkpoint_dir} ({', '.join(files)}; TensorBoard logs in {paths.tensorboard})")
    print(f"metrics:     {paths.metrics}")
    print(f"predictions: {paths.predictions}")
    if cfg.evaluation.visualize:
        print(f"figures:     {paths.figures}")
    if lifted is not None:
        print(f"inference:   {lifted} (validation images lifted by python -m common.infer)")
    return 0 if np.isfinite(summary["mpjpe_mean_hypothesis"]) else 1


if __name__ == "__main__":
    sys.exit(main())

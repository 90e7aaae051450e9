"""End-to-end benchmark: evaluation from shards to metrics, and training steps, on the full-size model.

Evaluation (H = 20 hypotheses, flip test, K steps) runs the evaluation's own
code (the stages of ``common.pipeline.SnapPosePipeline``, timed one by one, and
``common.analysis.metrics.MetricAccumulator``) over full-frame synthetic Human3.6M
shards (``common.synthetic.world``; written once, then reused), with random weights
of the released sizes (PoseHRNet-W32 and the 128-wide denoiser), for these
settings side by side in one process:

- ``original``: the original implementation's sampling loop (a full forward at
  every step, feature maps repeated per hypothesis; ``benchmarks.sampling.original_ddim``), K = 20, fp32;
- ``today``: the pipeline's DDIM (context once per batch), K = 20, fp32: the paper's setting;
- fast settings, ``--fast SAMPLER:K:PRECISION[:compile|:reduce-overhead]``
  (default ``dpm++:5:auto`` and ``dpm++:5:auto:compile``; "auto" runs as the precision
  ``resolve_precision`` picks for the device, bf16 only where it is native).

For each it prints images per second and the time split by stage: load (read,
decode and crop; with ``--workers`` > 0, the time spent waiting for the
loader), backbone, context (``encode_context``; inside the loop for the
original), denoising loop, metrics; and the peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: growth of the peak resident set).
Each setting first runs one untimed batch with one step (start-up costs,
compilation); then ``--repeats`` rounds time one pass of every setting in
turn, and the best pass of each counts.

Training: samples per second of an epoch after the first (``common.run.training.train``,
2 epochs, the second timed), without a cache, with ``train.cache_features``
and with a context cache when the configuration has one (``train.context_cache``;
"n/a" otherwise). The context layers come frozen from a random file in
Context-Aware PoseFormer's layout, as in real training.

Ratios come last, by wall time and by the process's CPU time (a fairer
measure where other jobs share the CPU). ``--json FILE`` also writes every number.

    python -m benchmarks.pipeline                      # CPU, 8 images, batch 8
    python -m benchmarks.pipeline --device cuda --images 512 --batch-size 64 --workers 8
"""
import argparse
import dataclasses
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.sampling import PeakMemory, original_ddim
from common.analysis.metrics import MetricAccumulator
from common.data.loader import build_loader
from common.model.acceleration import PRECISION_OPTIONS, prepare_backbone, resolve_precision
from common.model.networks import ModelConfig, build_model
from common.model.samplers import SAMPLERS, SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import TrainConfig, load_config, output_paths
from common.synthetic.world import generate_dataset

COMPILE_MODES = {"compile": None, "reduce-overhead": "reduce-overhead"}
DEFAULT_FAST = ("dpm++:5:auto", "dpm++:5:auto:compile")
STAGES = ("load", "backbone", "context", "loop", "metrics")
# Training variants: name -> the TrainConfig switch that turns the cache on (None: no cache).
TRAINING_CACHES = {"no cache": None, "feature cache": "cache_features", "context cache": "context_cache"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One way of evaluating: ``sampler`` is "original" or one of ``SAMPLERS``."""

    name: str
    sampler: str
    steps: int
    precision: str = "fp32"
    compile: str = ""  # "", "compile" or "reduce-overhead"

    @classmethod
    def parse(cls, text):
        """``SAMPLER:K:PRECISION[:compile|:reduce-overhead]`` -> Setting."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or parts[0] not in SAMPLERS or not parts[1].isdigit() \
                or parts[2] not in PRECISION_OPTIONS or (len(parts) == 4 and parts[3] not in COMPILE_MODES):
            raise argparse.ArgumentTypeError(
                f"expected SAMPLER:K:PRECISION[:compile|:reduce-overhead] with SAMPLER in {', '.join(SAMPLERS)} "
                f"and PRECISION in {', '.join(PRECISION_OPTIONS)}, e.g. dpm++:5:bf16:compile; got {text!r}")
        return cls(text, parts[0], int(parts[1]), parts[2], parts[3] if len(parts) == 4 else "")


def resolve_setting(setting, device):
    """``setting`` with "auto" turned into the precision it picks on ``device``; the name then says both."""
    precision = resolve_precision(setting.precision, device)
    name = f"{setting.name} ({precision})" if setting.precision == "auto" else setting.name
    return dataclasses.replace(setting, name=name, precision=precision)


class StageClock:
    """Wall time per stage, synchronising the GPU at each boundary so that a stage owns its kernels."""

    def __init__(self, device):
        self.device = device
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] += time.perf_counter() - start


def make_pipeline(setting, networks, hypotheses):
    """The ``SnapPosePipeline`` of ``setting`` on the shared networks (compiled if asked); seed 0, flip test."""
    backbone, denoiser = networks[setting.precision]
    sampling = SamplingConfig(sampler="ddim" if setting.sampler == "original" else setting.sampler,
                              steps=setting.steps, hypotheses=hypotheses, precision=setting.precision,
                              compile=bool(setting.compile), flip=True, seed=0)
    return SnapPosePipeline(backbone, denoiser, sampling, compile_mode=COMPILE_MODES.get(setting.compile))


@torch.no_grad()
def evaluation_pass(setting, pipeline, shards, args, device, max_batches=None):
    """One pass over the test shards as ``setting``, stage by stage of ``pipeline``; returns (StageClock, summary).

    The original way runs its own loop (a full forward per step) in place of the
    pipeline's context and sampling stages; everything else is the pipeline's.
    """
    clock = StageClock(device)
    loader = build_loader(shards, "h36m", train=False, batch_size=args.batch_size, num_workers=args.workers,
                          max_samples=args.images)
    accumulator = MetricAccumulator("h36m")
    batches = iter(loader)
    count = 0
    while max_batches is None or count < max_batches:
        with clock.stage("load"):
            batch = next(batches, None)
            if batch is None:
                break
            images, keypoints, ref = pipeline.views(batch)
        with clock.stage("backbone"):
            features = pipeline.features(images)
        noise = pipeline.initial_noise(batch["key"])  # (2B, H, 1, 17, 3)
        if setting.sampler == "original":
            with clock.stage("loop"):
                poses = original_ddim(pipeline.denoiser, noise, keypoints, ref, features, setting.steps)
        else:
            with clock.stage("context"):
                context = pipeline.context(keypoints, ref, features)
            with clock.stage("loop"):
                poses = pipeline.sample(context, noise)
        with clock.stage("metrics"):
            poses = pipeline.merge(poses).cpu()
            accumulator.update(poses, batch["keypoints_3d"][:, 0].to(poses.dtype), batch.get("action"),
                               batch.get("subject"))
        count += 1
    with clock.stage("metrics"):
        summary = accumulator.summary()
    return clock, summary


def warm_up(setting, networks, shards, args, device):
    """Prepare ``setting``'s pipeline (compiled if asked) and run one untimed batch; returns (pipeline, seconds)."""
    pipeline = make_pipeline(setting, networks, args.hypotheses)
    sampling = pipeline.sampling
    # Start-up costs (allocations, kernel selection, compilation) depend on the shapes, not on K.
    pipeline.prepare(sampling.replace(steps=1))
    start = time.perf_counter()
    evaluation_pass(dataclasses.replace(setting, steps=1), pipeline, shards, args, device, max_batches=1)
    return pipeline.prepare(sampling), time.perf_counter() - start


def timed_pass(setting, pipeline, shards, args, device):
    """One timed pass of ``setting`` with its ``warm_up`` pipeline; a dict of results."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu_start = time.process_time()
    with PeakMemory(device) as memory:
        clock, summary = evaluation_pass(setting, pipeline, shards, args, device)
    cpu_seconds = time.process_time() - cpu_start
    split = clock.seconds
    total = sum(split.values())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else memory.peak
    return {"setting": setting.name, "seconds": total, "images": summary["num_samples"],
            "images_per_second": summary["num_samples"] / total, "stages": split, "peak_memory_bytes": peak,
            "mpjpe_mean_hypothesis": summary["mpjpe_mean_hypothesis"], "cpu_seconds": cpu_seconds}


def measure_settings(settings, networks, shards, args, device):
    """Warm every setting up, then ``args.repeats`` rounds of one pass each; the best pass per setting.

    Rounds interleave the settings, so that a machine whose load drifts
    (a shared CPU) slows them alike instead of whichever runs last.
    """
    prepared, best = {}, {}
    for setting in settings:
        prepared[setting], seconds = warm_up(setting, networks, shards, args, device)
        print(f"  {setting.name}: warmed up in {seconds:.1f} s", flush=True)
        best[setting] = {"warm_up_seconds": seconds, "seconds": float("inf")}
    for round_ in range(args.repeats):
        for setting in settings:
            result = timed_pass(setting, prepared[setting], shards, args, device)
            print(f"  round {round_ + 1}, {setting.name}: {result['images_per_second']:.2f} images/s", flush=True)
            if result["seconds"] < best[setting]["seconds"]:
                best[setting].update(result)
    return [best[setting] for setting in settings]


def _context_file(denoiser, folder):
    """A random Context-Aware PoseFormer file (its layout: ``{"model": {"module.volume_net.<name>": ...}}``)."""
    from common.model.denoiser import CONTEXT_PREFIXES

    state = {f"module.volume_net.{name}": t for name, t in denoiser.state_dict().items()
             if name.startswith(CONTEXT_PREFIXES)}
    path = Path(folder) / "context_random.bin"
    torch.save({"model": state}, path)
    return path


def training_rate(cache, root, args, device):
    """Training samples per second in the second of two epochs with ``cache`` (a TrainConfig key or None).

    Returns None when this code has no such cache (the key is not a TrainConfig field), or when the
    epoch was too short to time from the log (tenths of a second).
    """
    from common.run.training import train

    if cache is not None and cache not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return None
    with tempfile.TemporaryDirectory() as folder:
        _, denoiser = build_model(ModelConfig())
        overrides = {
            "checkpoint": folder, "device": str(device), "data.root": str(root),
            "data.batch_size": args.train_batch_size, "data.max_train_samples": args.train_samples,
            "data.num_workers": args.workers, "weights.pretrained_backbone": False,
            "weights.context": str(_context_file(denoiser, folder)), "train.epochs": 2, "train.validate_every": 0,
            "train.checkpoint_frequency": 2,
        }
        if cache is not None:  # the context cache takes where it is kept, the feature cache a switch
            overrides[f"train.{cache}"] = "memory" if cache == "context_cache" else True
        cfg = load_config(None, overrides, dataset="h36m")
        train(cfg, device=device)
        log = output_paths(cfg).training_log.read_text()
    seconds = float(re.search(r"^epoch\s+2 \|.*\| ([0-9.]+) s", log, re.MULTILINE).group(1))
    # The log gives tenths of a second: an epoch logged as 0.0 s was too short to time (tiny test runs).
    return args.train_samples / seconds if seconds > 0 else None


def build_networks(device):
    """Full-size random networks in eval mode, per precision (the backbone's memory format follows it)."""
    torch.manual_seed(0)
    backbone, denoiser = build_model(ModelConfig())
    denoiser = denoiser.to(device).eval()
    fp32 = backbone.to(device).eval()
    low = prepare_backbone(build_model(ModelConfig())[0].to(device).eval(), "bf16")
    low.load_state_dict(fp32.state_dict())
    return {"fp32": (fp32, denoiser), "bf16": (low, denoiser), "fp16": (low, denoiser)}


def _mib(n):
    return "n/a" if n is None else f"{n / 2 ** 20:.0f} MiB"


def print_evaluation(results):
    header = f"{'setting':<28} {'img/s':>8} {'total s':>8} " + " ".join(f"{s:>9}" for s in STAGES) \
        + f" {'peak mem':>9} {'warm-up s':>9} {'MPJPE':>7} {'CPU s':>8}"
    print(header)
    for r in results:
        shares = []
        for stage in STAGES:
            if stage == "context" and r["setting"].startswith("original"):
                shares.append(f"{'in loop':>9}")
            else:
                shares.append(f"{100 * r['stages'][stage] / r['seconds']:8.1f}%")
        print(f"{r['setting']:<28} {r['images_per_second']:8.2f} {r['seconds']:8.2f} " + " ".join(shares)
              + f" {_mib(r['peak_memory_bytes']):>9} {r['warm_up_seconds']:9.1f} {r['mpjpe_mean_hypothesis']:7.1f}"
              + f" {r['cpu_seconds']:8.1f}")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--images", type=int, default=8, help="test images (each with its flipped view)")
    parser.add_argument("--batch-size", type=int, default=8, help="evaluation batch size (released: 64)")
    parser.add_argument("--hypotheses", type=int, default=20, help="H")
    parser.add_argument("--steps", type=int, default=20, help="K of the original and of today's DDIM")
    parser.add_argument("--fast", type=Setting.parse, action="append",
                        help="a fast setting SAMPLER:K:PRECISION[:compile|:reduce-overhead]; repeatable "
                             f"(default: {' and '.join(DEFAULT_FAST)})")
    parser.add_argument("--skip", nargs="*", default=[], choices=("original", "today", "training"),
                        help="leave these measurements out")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of one timed pass per setting, interleaved (the best per setting counts)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes (0: in this process)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--train-samples", type=int, default=16, help="training samples per epoch")
    parser.add_argument("--train-batch-size", type=int, default=8, help="training batch size (released: 128)")
    parser.add_argument("--shards", default="webdataset/benchmark",
                        help="folder for the synthetic shards (written once, reused after)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch build sees no CUDA device; use --device cpu")
    for name in ("images", "batch_size", "hypotheses", "steps", "repeats", "train_samples", "train_batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = args.fast or [Setting.parse(text) for text in DEFAULT_FAST]
    fast = [resolve_setting(s, device) for s in fast]
    settings = [s for s in (Setting("original", "original", args.steps), Setting("today", "ddim", args.steps))
                if s.name not in args.skip] + fast

    root = Path(args.shards)
    generate_dataset(root, "h36m", num_train=args.train_samples, num_test=args.images,
                     workers=min(os.cpu_count() or 1, 16), progress=False)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{machine}; torch {torch.__version__}; full-size model, {args.images} images x 2 views, "
          f"H = {args.hypotheses}, batch {args.batch_size}, best of {args.repeats}")

    networks = build_networks(device)
    results = measure_settings(settings, networks, root / "validation", args, device)
    print("\nevaluation, shards to metrics (stage shares of the total):")
    print_evaluation(results)

    training = {}
    if "training" not in args.skip:
        for name, cache in TRAINING_CACHES.items():
            rate = training_rate(cache, root, args, device)
            training[name] = rate
        print(f"\ntraining, samples/s in the second epoch (batch {args.train_batch_size}, "
              f"{args.train_samples} samples per epoch):")
        for name, rate in training.items():
            print(f"  {name:<14} {'n/a' if rate is None else f'{rate:.2f}'}")

    # On a machine shared with other jobs the wall time measures their load as much as this code; the
    # process's CPU time (all its threads, the in-process loader included) measures the work done.
    print("\nratios (images/s by wall time; by this process's CPU time):")
    by_name = {r["setting"]: r for r in results}
    for r in results:
        for base in ("today", "original"):
            if base in by_name and r["setting"] != base and not (base == "today" and r["setting"] == "original"):
                other = by_name[base]
                print(f"  {r['setting']} / {base}: {r['images_per_second'] / other['images_per_second']:.2f}x; "
                      f"{other['cpu_seconds'] / r['cpu_seconds']:.2f}x by CPU time")
    base = training.get("no cache")
    for name in ("feature cache", "context cache"):
        if base and training.get(name):
            print(f"  training {name} / no cache: {training[name] / base:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "arguments": vars(args) | {"fast": [s.name for s in fast]},
                                               "evaluation": results, "training": training}, indent=2))


if __name__ == "__main__":
    main()

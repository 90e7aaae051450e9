"""Does training from the context cache match training from images? Quality and speed, side by side.

Quality (``quality``): frozen context layers that mean something, the demo's
trained context blocks written as a CA-PF-format file (with the demo's frozen
backbone) and loaded frozen, as the released CA-PF weights are; a fresh
denoiser trains on the demo's training samples with the released
``drop_path_rate: 0.2`` for the demo's epochs and is validated on the demo's
validation images (H = 20, a fast sampler at K = 5). Ways: the image path (the
frozen backbone's features, both views, computed once and shared by every run;
a view drawn per sample and epoch, the context blocks in training mode: the
recipe), the eval-mode cache (R = 0) and R draws of the stochastic depth, for
each seed. Runs go two at a time, one thread each, and the table gives each
seed's MPJPE, the means and the spreads.

    python -m benchmarks.context_cache quality --demo-checkpoint demo_output/checkpoint/best_h36m.bin \\
        -w webdataset/synthetic --out runs/context_cache_quality --draws 0 1 4 --seeds 0 1 2

Speed (``speed``): the full-size model on this machine, one process: a
training step from images (decoding, backbone, context blocks in training
mode, denoiser, AdamW) and one from the cache (denoiser and AdamW), taking
turns, and the build's cost per sample for each R (decoding and the backbone
once per view, the context blocks R times).

    python -m benchmarks.context_cache speed --batch-size 16 --rounds 4 --draws 0 1 4 8
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common.core.skeleton import flip_pose_3d
from common.data.loader import build_loader, find_shards
from common.model.checkpoints import CONTEXT_PREFIXES, load_snappose_weights
from common.pipeline.config import load_config, save_config
from common.run.context_cache import cache_dir, compute_part, feature_batches, fingerprint, part_path, part_specs

CPU = torch.device("cpu")
DEMO_CONFIG = "config/synthetic_demo.yaml"


def quality_overrides(args, weights_file):
    """The demo's recipe with frozen, meaningful context layers and the released stochastic depth."""
    return {"data.root": args.webdataset_path, "data.num_workers": 0,
            "model.drop_path_rate": args.drop_path_rate,
            "weights.pretrained_backbone": True, "weights.backbone": str(weights_file),
            "weights.pretrained_context": True, "weights.context": str(weights_file),
            "train.validate_every": 0, "train.val_proposals": args.hypotheses,
            "train.val_timesteps": args.steps, "train.val_sampler": args.sampler,
            "train.checkpoint_minutes": 0}


def write_context_file(demo_config, demo_checkpoint, path):
    """The demo model's backbone (seeded, frozen) and trained context layers as one CA-PF-layout file."""
    backbone, denoiser = demo_config.networks(CPU)
    load_snappose_weights(denoiser, demo_checkpoint)
    model = {f"module.backbone.{name}": t for name, t in backbone.state_dict().items()}
    model.update({f"module.volume_net.{name}": t for name, t in denoiser.state_dict().items()
                  if name.startswith(CONTEXT_PREFIXES)})
    torch.save({"model": model}, path)
    return path


class SharedFeatures:
    """The frozen backbone's features of every training sample, both views, computed once per benchmark.

    Stored per shard, in shard order, as ``feature_batches`` yields them; the
    image-path runs train from it as from ``FeatureCache`` (drawing a view per
    sample and epoch, with the context blocks in training mode), the cache
    runs build their parts from it.
    """

    def __init__(self, shards):
        self.shards = shards  # one dict of tensors per shard
        self.complete = True

    @classmethod
    def compute(cls, cfg, backbone, path):
        shards = []
        for url in find_shards(cfg.data.root, "train"):
            loader = build_loader([url], cfg.dataset, train=False, batch_size=cfg.data.batch_size)
            batches = list(feature_batches(loader, backbone, CPU))
            shards.append({"features": [torch.cat([b["features"][level] for b in batches]) for level in range(4)],
                           **{name: torch.cat([b[name] for b in batches]) for name in ("keypoints", "ref", "pose")},
                           "keys": [key for b in batches for key in b["keys"]]})
        torch.save(shards, path)
        return cls(shards)

    @classmethod
    def load(cls, path):
        return cls(torch.load(path, weights_only=True, mmap=True))

    def __len__(self):
        return sum(len(shard["keys"]) for shard in self.shards)

    def shard_batches(self, index, batch_size):
        """``feature_batches`` dicts of shard ``index``, both views side by side."""
        shard = self.shards[index]
        for start in range(0, len(shard["keys"]), batch_size):
            rows = slice(2 * start, 2 * (start + batch_size))
            yield {"features": [f[rows] for f in shard["features"]], "keypoints": shard["keypoints"][rows],
                   "ref": shard["ref"][rows], "pose": shard["pose"][start:start + batch_size],
                   "keys": shard["keys"][start:start + batch_size]}

    def _flat(self):
        if not hasattr(self, "_all"):
            self._all = {name: torch.cat([s[name] for s in self.shards]) for name in ("keypoints", "ref", "pose")}
            self._all["features"] = [torch.cat([s["features"][level] for s in self.shards]) for level in range(4)]
        return self._all

    def batches(self, batch_size, generator):
        """The image path's epoch: a random order and a fair coin per sample for its view (as ``FeatureCache``)."""
        flat = self._flat()
        order = torch.randperm(len(self), generator=generator)
        view = torch.randint(0, 2, (len(self),), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            rows = 2 * index + view[index]  # views are side by side, sample-major
            flipped = view[index].bool()[:, None, None, None]
            pose = torch.where(flipped, flip_pose_3d(flat["pose"][index]), flat["pose"][index])
            yield {"features": [f[rows] for f in flat["features"]], "keypoints": flat["keypoints"][rows],
                   "ref": flat["ref"][rows], "pose": pose}


def write_cache_parts(cfg, run, shared):
    """Save the run's context cache parts, computed from the shared features, where ``prepare_context_cache`` reads them."""
    base = fingerprint(cfg, run.backbone, run.denoiser)
    specs = part_specs(find_shards(cfg.data.root, "train"), 0, 1)
    for spec in specs:
        part = compute_part(shared.shard_batches(spec.index, cfg.data.batch_size), run.denoiser,
                            cfg.train.context_cache_draws, cfg.seed)
        part.save(part_path(cache_dir(run.paths.checkpoint_dir), spec.index), spec.fingerprint(base))


def run_one(args):
    """One training run (a subprocess of ``quality``): prints a JSON line with its result."""
    from common.run.training import TrainingRun

    torch.set_num_threads(1)
    cfg = load_config(args.config)
    run = TrainingRun(cfg, CPU)
    shared = SharedFeatures.load(args.features)
    start = time.time()
    if cfg.train.context_cache != "off":
        write_cache_parts(cfg, run, shared)
    build = time.time() - start
    run.open()
    if cfg.train.context_cache == "off":
        run.cache = shared  # the image path, from the shared backbone features
    start = time.time()
    path = run.fit()
    seconds = time.time() - start
    metrics = torch.load(path, weights_only=True)["val_metrics"]
    print(json.dumps({"mpjpe": metrics["mpjpe_mean_hypothesis"], "p_mpjpe": metrics["p_mpjpe_mean_hypothesis"],
                      "train_seconds": seconds, "build_seconds": build}), flush=True)


def way_name(draws):
    return "image path" if draws is None else ("eval-mode cache (R = 0)" if draws == 0 else f"cache, R = {draws}")


def _run_configs(args, base_cfg_path, out):
    """(draws or None, seed, config path) of every run, the image path's first; validation after the last epoch."""
    epochs = args.epochs or load_config(base_cfg_path).train.epochs
    jobs = []
    for draws in [None] + list(args.draws):
        for seed in args.seeds:
            name = "image" if draws is None else f"draws{draws}"
            overrides = {"seed": seed, "checkpoint": str(out / "runs" / f"{name}-seed{seed}"),
                         "train.epochs": epochs, "train.validate_every": epochs,
                         "train.cache_features": draws is None}
            if draws is not None:
                overrides.update({"train.context_cache": "disk", "train.context_cache_draws": draws})
            cfg = load_config(base_cfg_path, overrides)
            jobs.append((draws, seed, save_config(cfg, out / "configs" / f"{name}-seed{seed}.yaml")))
    return jobs


def _launch(config, features, log_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "benchmarks.context_cache", "run", "--config", str(config),
               "--features", str(features)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True, env=env)


def run_all(jobs, features, out, parallel):
    """Run the jobs ``parallel`` at a time; results (way, seed) -> dict, kept in out/results.json as they come."""
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    pending = [job for job in jobs if f"{job[0]}/{job[1]}" not in results]
    running = []
    while pending or running:
        while pending and len(running) < parallel:
            draws, seed, config = pending.pop(0)
            log_path = out / "logs" / f"{Path(config).stem}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            running.append(((draws, seed), _launch(config, features, log_path), log_path))
        time.sleep(2)
        for entry in list(running):
            (draws, seed), process, log_path = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            output = process.stdout.read().strip().splitlines()
            if process.returncode != 0 or not output:
                raise RuntimeError(f"run {way_name(draws)}, seed {seed} failed; see {log_path}")
            results[f"{draws}/{seed}"] = json.loads(output[-1])
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{way_name(draws)}, seed {seed}: {results[f'{draws}/{seed}']}", flush=True)
    return results


def quality_table(results, draws_list, seeds):
    """Markdown: per way, each seed's MPJPE, the mean, the spread (sample std) and the difference to the image path."""
    def values(draws):
        return [results[f"{draws}/{seed}"]["mpjpe"] for seed in seeds if f"{draws}/{seed}" in results]

    image = values(None)
    image_mean = statistics.fmean(image)
    image_std = statistics.stdev(image) if len(image) > 1 else 0.0
    tolerance = max(2.0, image_std)
    header = "| way | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread (std) | vs image path | within |"
    lines = [header, "|" + "---|" * (len(seeds) + 5)]
    for draws in [None] + list(draws_list):
        found = values(draws)
        if not found:
            continue
        mean = statistics.fmean(found)
        spread = statistics.stdev(found) if len(found) > 1 else 0.0
        within = "" if draws is None else ("yes" if abs(mean - image_mean) <= tolerance else "no")
        cells = " | ".join(f"{v:.2f}" for v in found)
        lines.append(f"| {way_name(draws)} | {cells} | {mean:.2f} | {spread:.2f} | "
                     f"{mean - image_mean:+.2f} | {within} |")
    lines.append(f"\nMPJPE of the mean hypothesis in mm; target: within max(2 mm, the image path's std "
                 f"{image_std:.2f} mm) = {tolerance:.2f} mm of the image path's mean.")
    seconds = {way_name(d): statistics.fmean(results[f"{d}/{s}"]["train_seconds"] for s in seeds
                                             if f"{d}/{s}" in results)
               for d in [None] + list(draws_list) if values(d)}
    lines.append("Training wall-clock per run (1 thread, two runs at a time, validation included): "
                 + "; ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    return "\n".join(lines)


def quality(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    demo = load_config(args.demo_config, {"data.root": args.webdataset_path})
    weights_file = out / "demo_context.bin"
    if not weights_file.is_file():
        write_context_file(demo, args.demo_checkpoint, weights_file)
    base = save_config(load_config(args.demo_config, quality_overrides(args, weights_file)), out / "base.yaml")
    features = out / "shared_features.pt"
    if not features.is_file():
        start = time.time()
        cfg = load_config(base)
        backbone, _ = cfg.networks(CPU)
        shared = SharedFeatures.compute(cfg, backbone, features)
        print(f"shared backbone features: {len(shared)} samples x 2 views in {time.time() - start:.0f} s", flush=True)
    results = run_all(_run_configs(args, base, out), features, out, args.parallel)
    table = quality_table(results, args.draws, args.seeds)
    (out / "quality.md").write_text(table + "\n")
    print(table)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.context_cache", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("quality", help="train every way and seed; print the quality table")
    q.add_argument("--demo-checkpoint", required=True, help="the demo's trained best_h36m.bin (make demo)")
    q.add_argument("--demo-config", default=DEMO_CONFIG)
    q.add_argument("-w", "--webdataset-path", default="webdataset/synthetic", help="the demo's synthetic shards")
    q.add_argument("--out", required=True, help="work folder (results are kept: a rerun continues)")
    q.add_argument("--draws", nargs="+", type=int, default=[0, 1, 4], help="values of R for the cache runs")
    q.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    q.add_argument("--epochs", type=int, help="training epochs (default: the demo's)")
    q.add_argument("--drop-path-rate", type=float, default=0.2, help="the released 0.2")
    q.add_argument("--hypotheses", type=int, default=20, help="H in validation")
    q.add_argument("--steps", type=int, default=5, help="K in validation")
    q.add_argument("--sampler", default="ddim-trailing", help="validation sampler")
    q.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    q.add_argument("--threads", type=int, default=2, help="threads for the shared features")
    r = commands.add_parser("run", help=argparse.SUPPRESS)
    r.add_argument("--config", required=True)
    r.add_argument("--features", required=True)
    s = commands.add_parser("speed", help="full-size model: a step from images vs from the cache; build cost per R")
    s.add_argument("-w", "--webdataset-path", default="webdataset/context_cache_benchmark",
                   help="folder for full-frame synthetic shards (written once, reused after)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--rounds", type=int, default=4)
    s.add_argument("--draws", nargs="+", type=int, default=[0, 1, 4, 8])
    s.add_argument("--threads", type=int, default=1)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "quality":
        quality(args)
    elif args.command == "run":
        run_one(args)
    else:
        from benchmarks.context_cache_speed import speed
        speed(args)


if __name__ == "__main__":
    main()

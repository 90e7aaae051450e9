"""The speed half of ``python -m benchmarks.context_cache speed``: full-size model, one process, side by side.

- a training step from images: decode a batch (training loader), the frozen
  backbone, the denoiser's full forward in training mode (context blocks with
  their stochastic depth) and backward, AdamW;
- a training step from the cache: the same batch size of cached contexts,
  ``denoise`` forward and backward, AdamW;
  the two take turns for ``--rounds`` rounds; medians and their ratio;
- the build's cost per sample for each R: decoding both views (evaluation
  loader), the backbone on both views, and the context blocks R times (once in
  eval mode for R = 0), timed separately and added up.

Random weights of the released sizes (PoseHRNet-W32, 128-wide denoiser with its
four blocks of each kind); full-frame synthetic Human3.6M-like shards, written
once into ``-w`` when missing.
"""
import statistics
import time
from pathlib import Path

import torch

from common.data.loader import build_loader
from common.model.diffusion import make_ddpm_scheduler
from common.model.networks import ModelConfig, build_model
from common.run.context_cache import CachedContextDenoiser, compute_part, feature_batches
from common.run.training import _prepare, _train_step
from common.synthetic.world import generate_dataset

CPU = torch.device("cpu")


def _networks():
    torch.manual_seed(0)
    backbone, denoiser = build_model(ModelConfig())
    backbone.eval()
    denoiser.freeze_context().train()
    optimizer = torch.optim.AdamW(denoiser.trainable_parameters(), lr=6e-5, weight_decay=0.1)
    return backbone, denoiser, optimizer


def _timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def step_times(root, args, backbone, denoiser, optimizer):
    """(seconds per step from images, per step from the cache), medians over the rounds, and all rounds."""
    scheduler = make_ddpm_scheduler(100)
    generator = torch.Generator().manual_seed(0)
    loader = build_loader(root, "h36m", train=True, batch_size=args.batch_size, shuffle_buffer=0)
    eval_loader = build_loader(root, "h36m", train=False, batch_size=args.batch_size, split="train")
    part = compute_part(feature_batches(eval_loader, backbone, CPU), denoiser)  # the cached contexts of one batch
    cached_inputs = {"context": part.context[:, 0, 0].float(), "pose": part.pose[:, 0]}
    cached_model = CachedContextDenoiser(denoiser)
    images, cached = [], []
    for _ in range(args.rounds):
        def from_images():
            batch = next(iter(loader))
            return _train_step(denoiser, _prepare(batch, backbone, CPU), scheduler, optimizer, generator)
        images.append(_timed(from_images)[1])
        cached.append(_timed(lambda: _train_step(cached_model, cached_inputs, scheduler, optimizer, generator))[1])
        print(f"  round {len(images)}: from images {images[-1]:.2f} s, from the cache {cached[-1]:.2f} s", flush=True)
    return statistics.median(images), statistics.median(cached), images, cached


def build_costs(root, args, backbone, denoiser):
    """Seconds per sample of the build's parts: decoding, the backbone (both views), one context pass (both views)."""
    loader = build_loader(root, "h36m", train=False, batch_size=args.batch_size, split="train")
    batch, decode = _timed(lambda: next(iter(loader)))
    B = len(batch["key"])
    (features,), backbone_seconds = _timed(lambda: list(feature_batches([batch], backbone, CPU)))
    denoiser.eval()
    with torch.no_grad():
        args_ = (features["keypoints"], features["ref"], features["features"])
        _, context_seconds = _timed(lambda: denoiser.encode_context(*args_))
    denoiser.train()
    return decode / B, backbone_seconds / B, context_seconds / B


def speed(args):
    torch.set_num_threads(args.threads)
    root = Path(args.webdataset_path)
    generate_dataset(root, "h36m", num_train=max(2 * args.batch_size, 4), num_test=2, progress=False)
    backbone, denoiser, optimizer = _networks()
    print(f"CPU, {torch.get_num_threads()} thread(s); torch {torch.__version__}; full-size model, batch "
          f"{args.batch_size}, {args.rounds} rounds taking turns", flush=True)
    image_step, cached_step, _, _ = step_times(root, args, backbone, denoiser, optimizer)
    decode, backbone_cost, context_cost = build_costs(root, args, backbone, denoiser)
    print("\n| what | from images | from the cache | ratio |\n|---|---|---|---|")
    print(f"| one training step, batch {args.batch_size}, median of {args.rounds} | {image_step:.2f} s | "
          f"{cached_step:.2f} s | **{image_step / cached_step:.1f}x** |")
    print("\n| R | build per sample (decode {:.0f} ms + backbone, 2 views, {:.0f} ms + R x context, 2 views, "
          "{:.0f} ms) | size per sample, float32 / bfloat16 |\n|---|---|---|".format(
              1000 * decode, 1000 * backbone_cost, 1000 * context_cost))
    per_context = 5 * 17 * 128  # values of one context (5 tokens x 17 joints x 128 channels)
    for draws in args.draws:
        passes = max(draws, 1)
        seconds = decode + backbone_cost + passes * context_cost
        size = 2 * passes * per_context  # both views
        print(f"| {draws} | {1000 * seconds:.0f} ms | {size * 4 / 1000:.1f} KB / {size * 2 / 1000:.1f} KB |")

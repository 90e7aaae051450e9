"""Benchmark: DDIM sampling the original way against the pipeline's (``common.pipeline.SnapPosePipeline``).

The original copies the feature maps (and 2D inputs) once per hypothesis and
runs the full denoiser, context blocks included, at every step. The pipeline
computes the context once per batch (its ``context`` stage) and runs only the
denoising half per step (its ``sample`` stage). Both start from the same noise; the script checks
that they agree and prints, for each, images per second, the speed ratio and
peak memory:

- on CUDA: ``torch.cuda.max_memory_allocated`` during sampling, minus what was
  allocated before (model, inputs);
- on the CPU: growth of the process's peak resident set (VmHWM, reset through
  /proc/self/clear_refs before the run) over the resident set at the start,
  i.e. the extra physical memory the run needed (Linux only; "n/a" elsewhere).

Each sampler runs in a fresh process (so neither inherits the other's
allocator state), after a one-step warm-up on one view; the first full run
measures memory, then the best of ``--repeats`` runs gives the time.

The backbone is not timed (both ways run it once per view); random weights
and smooth random feature maps of PoseHRNet-W32's shapes stand in for real ones.

    python -m benchmarks.sampling                    # 8 images + flips, H = 20, K = 20
    python -m benchmarks.sampling --images 1 --steps 5 --device cpu
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common.core.skeleton import NUM_JOINTS
from common.model.networks import SnapPoseDenoiser
from common.model.samplers import make_sampling_scheduler
from common.pipeline import SnapPosePipeline

FEATURE_SHAPES = [(32, 64, 48), (64, 32, 24), (128, 16, 12), (256, 8, 6)]
VARIANTS = ("pipeline", "original")


@torch.no_grad()
def original_ddim(denoiser, noise, keypoints_2d, ref, features, num_steps):
    """The original's sampling loop: inputs repeated per hypothesis, full forward every step."""
    B, H = noise.shape[:2]

    def repeat(x):
        return x.repeat_interleave(H, dim=0)  # (B, ...) -> (B*H, ...)

    keypoints_2d, ref, features = repeat(keypoints_2d), repeat(ref), [repeat(f) for f in features]
    scheduler = make_sampling_scheduler("ddim", 100)
    scheduler.set_timesteps(num_steps)
    sample = noise.reshape(B * H, 1, NUM_JOINTS, 3)
    for timestep in scheduler.timesteps:
        t = torch.full((B * H,), int(timestep), dtype=torch.long, device=noise.device)
        sample = scheduler.step(denoiser(keypoints_2d, ref, sample, features, t), int(timestep), sample).prev_sample
    return sample.reshape(noise.shape)


def make_inputs(views, hypotheses, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    keypoints_2d = torch.rand((views, 1, NUM_JOINTS, 2), generator=g) * 1.6 - 0.8
    ref = torch.rand((views, NUM_JOINTS, 2), generator=g) * 1.8 - 0.9
    coarse = [torch.randn((views, c, max(h // 4, 2), max(w // 4, 2)), generator=g) for c, h, w in FEATURE_SHAPES]
    features = [F.interpolate(x, size=s[1:], mode="bilinear", align_corners=False) for x, s in zip(coarse, FEATURE_SHAPES)]
    noise = torch.randn((views, hypotheses, 1, NUM_JOINTS, 3), generator=g)
    return [x.to(device) for x in (keypoints_2d, ref, noise)] + [[f.to(device) for f in features]]


class PeakMemory:
    """Extra memory a block of code needs at its peak, in bytes (None where it cannot be measured)."""

    def __init__(self, device):
        self.device = device
        self.peak = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = _reset_peak_rss()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.start is not None:
            self.peak = _status_kib("VmHWM") * 1024 - self.start
        return False


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the peak-RSS mark; return the current RSS in bytes, or None if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        return None


def timed(fn, device, repeats):
    """Best wall time over ``repeats`` runs, peak memory of the first, and the result."""
    times = []
    with PeakMemory(device) as memory:
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times), memory.peak, result


def _mib(n):
    return "n/a" if n is None else f"{n / 2 ** 20:.1f} MiB"


def run_variant(args):
    """Child process: build the model and inputs, warm up, then time one sampler and save its result."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    denoiser = SnapPoseDenoiser().to(device).eval()
    if args.variant == "pipeline":
        # No backbone: feature maps of its shapes stand in (the backbone is not timed here).
        pipeline = SnapPosePipeline(None, denoiser, device=device)

        def sampler(denoiser, noise, keypoints_2d, ref, features, steps):
            pipeline.prepare(pipeline.sampling.replace(steps=steps, hypotheses=noise.shape[1]))
            return pipeline.sample(pipeline.context(keypoints_2d, ref, features), noise)
    else:
        sampler = original_ddim
    # One-time start-up costs (kernel selection, thread pools) stay out of the measurements.
    warm = make_inputs(1, 1, device)
    sampler(denoiser, warm[2], warm[0], warm[1], warm[3], 1)
    keypoints_2d, ref, noise, features = make_inputs(2 * args.images, args.hypotheses, device)
    seconds, peak, sample = timed(lambda: sampler(denoiser, noise, keypoints_2d, ref, features, args.steps),
                                  device, args.repeats)
    torch.save(sample.cpu(), args.save)
    print(json.dumps({"seconds": seconds, "peak": peak}))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8,
                        help="images; each is sampled with its flipped view (default: %(default)s)")
    parser.add_argument("--hypotheses", type=int, default=20, help="H, hypotheses per image (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="K, DDIM steps (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs after the first, which measures memory (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="'cpu', 'cuda' or 'cuda:N' (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return run_variant(args)

    print(f"device {args.device}: {args.images} images x 2 views, H = {args.hypotheses}, K = {args.steps}, "
          f"best of {args.repeats} timed runs; each sampler in its own process")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in VARIANTS:
            save = Path(folder) / f"{name}.pt"
            command = [sys.executable, "-m", "benchmarks.sampling", *(argv if argv is not None else sys.argv[1:]),
                       "--variant", name, "--save", str(save)]
            output = subprocess.run(command, check=True, capture_output=True, text=True,
                                    cwd=Path(__file__).resolve().parents[1]).stdout
            measured = json.loads(output.strip().splitlines()[-1])
            results[name] = (measured["seconds"], measured["peak"], torch.load(save, weights_only=True))
            seconds, peak = measured["seconds"], measured["peak"]
            print(f"{name:>12}: {seconds:8.3f} s  {args.images / seconds:8.2f} images/s  peak memory {_mib(peak)}")

    ours, original = results["pipeline"], results["original"]
    difference = (ours[2] - original[2]).abs().max().item()
    relative = ((ours[2] - original[2]).norm() / original[2].norm()).item()
    print(f"speed-up {original[0] / ours[0]:.2f}x; peak memory {_mib(ours[1])} vs {_mib(original[1])}")
    print(f"max |difference| {difference:.2e} m, relative {relative:.2e}")
    if relative > 1e-4:
        raise SystemExit(f"the two samplers disagree: relative difference {relative:.2e} > 1e-4")


if __name__ == "__main__":
    main()

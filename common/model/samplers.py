"""Samplers: K denoising steps from x_T ~ N(0, I) to a 3D pose, by name.

Every sampler is a diffusers scheduler built on the training schedule (100
steps, linear betas 1e-4 to 0.02, epsilon prediction), so each one turns the
same trained denoiser into poses; they differ only in which timesteps they
visit and how they combine the predicted noise:

- ``"ddim"``: the paper's sampler and the default. ``DDIMScheduler`` with its
  defaults: eta 0, "leading" spacing (K = 20 starts at t = 95, K = 5 at t = 80),
  ``clip_sample=True``.
- ``"ddim-trailing"``: the same DDIM with "trailing" spacing, which starts at
  t = 99, where x_T ~ N(0, I) belongs; much better than "leading" at small K.
- ``"dpm++"``: ``DPMSolverMultistepScheduler``, DPM-Solver++ of order 2
  (first order at the last step), diffusers' default "linspace" spacing (which
  also starts at t = 99), final sigma 0.
- ``"unipc"``: ``UniPCMultistepScheduler`` (predictor-corrector, order 2, "bh2"),
  "linspace" spacing, final sigma 0.

The predicted x_0 is clamped to [-1, 1] m by every sampler: DDIM does it with
``clip_sample``; DPM-Solver++ and UniPC with ``thresholding=True`` and
``sample_max_value=1.0``, which makes their dynamic threshold exactly 1 (the
per-sample percentile s is clamped to [1, sample_max_value]), i.e. the same
clamp. Poses are root-relative metres, so the clamp only bites on wild early
predictions. Each sampler calls the denoiser once per step (K calls).

The network may run under autocast (``precision``); the scheduler's arithmetic
always runs in float32 on a float32 sample.
"""
import dataclasses
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from common.model.acceleration import autocast
from common.model.diffusion import make_ddpm_scheduler

# The x_0 clamp of DDIM's clip_sample, for the schedulers that spell it as thresholding.
_CLAMP_X0 = {"thresholding": True, "sample_max_value": 1.0}

# Sampler name -> (diffusers scheduler class name, options beyond the training scheduler's config; the
# multistep schedulers keep their own "linspace" spacing, not DDPM's "leading"). Class names,
# not classes, so that the command line and the config know the names without importing diffusers.
_SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddim-trailing": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                              "timestep_spacing": "linspace", **_CLAMP_X0}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "timestep_spacing": "linspace", **_CLAMP_X0}),
}
SAMPLERS = tuple(_SCHEDULERS)


@dataclass(frozen=True)
class SamplingConfig:
    """How hypotheses are drawn: built once (``Config.sampling()``) and passed whole.

    sampler: one of ``SAMPLERS`` ("ddim" is the paper's). steps: K denoiser calls.
    hypotheses: H per sample. precision: "fp32", "bf16" or "fp16" autocast, or
    "auto", which the caller turns into one of them for its device
    (``common.model.acceleration.resolve_precision``) before sampling.
    compile: the denoising step through ``torch.compile``. flip: also sample the
    mirrored view and average per hypothesis. seed: with each sample's key, seeds
    its initial noise. num_train_timesteps: the training schedule's length.
    The defaults are the paper's evaluation.
    """

    sampler: str = "ddim"
    steps: int = 20
    hypotheses: int = 20
    precision: str = "fp32"
    compile: bool = False
    flip: bool = True
    seed: int = 0
    num_train_timesteps: int = 100

    def replace(self, **changes):
        """A copy with some fields changed; None values keep the field."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self):
        """One line for logs: "20 hypotheses, 20 ddim steps, flip test on, fp32"."""
        return (f"{self.hypotheses} hypotheses, {self.steps} {self.sampler} steps, flip test "
                f"{'on' if self.flip else 'off'}, {self.precision}{', compiled' if self.compile else ''}")


def make_sampling_scheduler(sampler="ddim", num_train_timesteps=100):
    """A fresh diffusers scheduler for ``sampler`` (one of ``SAMPLERS``) on the training schedule.

    Built with diffusers' ``from_config`` from the training scheduler's own config
    (``common.model.diffusion.make_ddpm_scheduler``), so betas and the prediction
    type are the training's by construction. Multistep schedulers keep state
    between steps: build one per sampling run.
    """
    if sampler not in _SCHEDULERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    import diffusers

    name, options = _SCHEDULERS[sampler]
    return getattr(diffusers, name).from_config(make_ddpm_scheduler(num_train_timesteps).config, **options)


@torch.no_grad()
def sample(denoiser, context, noise, sampling=SamplingConfig(), progress=False):
    """Run ``sampling.steps`` steps of ``sampling.sampler`` from ``noise`` and return the final x_0.

    The context (pose token and deformable blocks) depends on neither the noisy
    pose nor the timestep, so the caller computes it once per batch
    (``denoiser.encode_context``); every step then runs only ``denoiser.denoise``,
    with the H hypotheses folded into the batch there.

    Args:
        denoiser: anything with ``denoise(context, noisy_3d, t)`` as ``SnapPoseDenoiser``
            (in eval mode), e.g. ``common.model.acceleration.compile_denoiser(denoiser)``
            or an ONNX graph of the step (``common.pipeline.onnx``).
        context: (B, 5, J, c) from ``denoiser.encode_context(keypoints_2d, ref, features)``.
        noise: (B, H, 1, J, 3) initial x_T, usually ``torch.randn``, float32.
        sampling: a ``SamplingConfig``; its sampler, steps (K denoiser calls,
            1 <= K <= num_train_timesteps), num_train_timesteps and precision
            (autocast of the denoiser's calls) are used here.
        progress: show a progress bar over the steps.
    Returns:
        (B, H, 1, J, 3) float32, metres; the root joint is not zeroed (the caller does that).
    """
    if noise.dim() != 5:
        raise ValueError(f"expected noise (B, H, 1, J, 3), got {tuple(noise.shape)}")
    if not 1 <= sampling.steps <= sampling.num_train_timesteps:
        raise ValueError(f"steps must be in [1, {sampling.num_train_timesteps}], got {sampling.steps}")
    scheduler = make_sampling_scheduler(sampling.sampler, sampling.num_train_timesteps)
    scheduler.set_timesteps(sampling.steps)
    B = noise.shape[0]
    x = noise
    for timestep in tqdm(scheduler.timesteps, desc=sampling.sampler, leave=False, disable=not progress):
        t = torch.full((B,), int(timestep), dtype=torch.long, device=noise.device)
        with autocast(noise.device, sampling.precision):
            predicted = denoiser.denoise(context, x, t)
        x = scheduler.step(predicted.float(), int(timestep), x).prev_sample
    return x

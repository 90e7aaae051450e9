"""DDPM training objective and DDIM sampling of 3D poses (diffusers schedulers).

Poses are root-relative, in metres. Training: epsilon prediction with
``DDPMScheduler`` (linear betas 1e-4 to 0.02), uniform timesteps, MSE.
Sampling: ``DDIMScheduler`` with diffusers' defaults (eta 0, "leading"
spacing, clip_sample=True, so each predicted x_0 is clamped to [-1, 1] m),
from x_T ~ N(0, I). Both schedulers come from their config, as diffusers
intends, so a saved config rebuilds them exactly. Faster samplers on the same
schedule (DDIM with trailing spacing, DPM-Solver++, UniPC) live in
``common.model.samplers`` and are re-exported here: ``sample(..., sampler=...)``,
``SAMPLERS``.
"""
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from common.model.samplers import SAMPLERS, make_sampling_scheduler, sample

__all__ = ["SAMPLERS", "ddim_sample", "diffusion_loss", "make_ddim_scheduler", "make_ddpm_scheduler",
           "make_sampling_scheduler", "sample"]


def make_ddpm_scheduler(num_train_timesteps=100):
    """The training scheduler: ``DDPMScheduler(num_train_timesteps)`` with its defaults."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps)


def make_ddim_scheduler(num_train_timesteps=100):
    """The sampling scheduler: ``DDIMScheduler(num_train_timesteps)`` with its defaults."""
    return DDIMScheduler(num_train_timesteps=num_train_timesteps)


def diffusion_loss(denoiser, pose_3d, keypoints_2d, ref, features, scheduler, generator=None):
    """Epsilon-prediction MSE on one batch.

    Args:
        denoiser: a ``SnapPoseDenoiser``.
        pose_3d: (B, 1, J, 3) ground truth, metres, root-relative.
        keypoints_2d: (B, 1, J, 2) normalized screen coordinates.
        ref: (B, J, 2) reference points in [-1, 1].
        features: the backbone's four maps for the batch.
        scheduler: a ``DDPMScheduler`` (``make_ddpm_scheduler``).
        generator: optional ``torch.Generator`` (on the pose's device) for the
            timesteps and the noise.
    Returns:
        scalar loss.
    """
    return epsilon_loss(lambda noisy, t: denoiser(keypoints_2d, ref, noisy, features, t), pose_3d, scheduler,
                        generator)


def epsilon_loss(predict_noise, pose_3d, scheduler, generator=None):
    """Epsilon-prediction MSE for any noise predictor (shared by the image and the cached-context paths).

    Args:
        predict_noise: callable (noisy (B, 1, J, 3), t (B,)) -> predicted noise (B, 1, J, 3).
        pose_3d, scheduler, generator: as for ``diffusion_loss``; the timesteps
            are drawn first, then the noise, so both paths make the same draws.
    Returns:
        scalar loss.
    """
    B = pose_3d.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (B,), generator=generator, device=pose_3d.device)
    noise = torch.randn(pose_3d.shape, generator=generator, device=pose_3d.device, dtype=pose_3d.dtype)
    noisy = scheduler.add_noise(pose_3d, noise, t)
    return F.mse_loss(predict_noise(noisy, t), noise)


def ddim_sample(denoiser, noise, keypoints_2d, ref, features, num_steps, num_train_timesteps=100, progress=False):
    """Run K DDIM steps from ``noise`` and return the final x_0: the paper's sampler.

    ``common.model.samplers.sample`` with ``sampler="ddim"`` in fp32. The context
    (pose token and deformable blocks) depends on neither the noisy pose nor
    the timestep, so it is computed once per batch; every step then runs only
    ``denoiser.denoise``, with the H hypotheses folded into the batch there.
    The feature maps are never copied per hypothesis. The result equals a loop
    of full forwards through the same scheduler.

    Args:
        denoiser: a ``SnapPoseDenoiser`` (put it in eval mode first).
        noise: (B, H, 1, J, 3) initial x_T, usually ``torch.randn``.
        keypoints_2d: (B, 1, J, 2); ref: (B, J, 2); features: four maps (B, C_l, h_l, w_l).
        num_steps: K, the number of DDIM steps (1 <= K <= num_train_timesteps).
        num_train_timesteps: the training schedule's length.
        progress: show a progress bar over the steps.
    Returns:
        (B, H, 1, J, 3), metres; the root joint is not zeroed (the caller does that).
    """
    return sample(denoiser, noise, keypoints_2d, ref, features, num_steps, sampler="ddim",
                  num_train_timesteps=num_train_timesteps, progress=progress)

"""DDPM training objective of 3D poses (diffusers' ``DDPMScheduler``).

Poses are root-relative, in metres. Training: epsilon prediction with
``DDPMScheduler`` (its defaults: linear betas 1e-4 to 0.02), uniform timesteps,
MSE. The samplers (``common.model.samplers``) build their schedulers from this
scheduler's config (diffusers' ``from_config``), so sampling always runs on the
schedule the denoiser was trained on.
"""
import torch
import torch.nn.functional as F


def make_ddpm_scheduler(num_train_timesteps=100):
    """The training scheduler: ``DDPMScheduler(num_train_timesteps)`` with its defaults."""
    from diffusers import DDPMScheduler  # diffusers takes seconds to import: only when a schedule is needed

    return DDPMScheduler(num_train_timesteps=num_train_timesteps)


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

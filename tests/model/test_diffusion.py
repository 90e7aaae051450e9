"""Diffusion: scheduler set-up, the training loss and DDIM sampling."""
import pytest
import torch
from model_fixtures import ddim_sample, single_thread, tiny_denoiser, tiny_inputs  # noqa: F401

from common.core.skeleton import NUM_JOINTS
from common.model.diffusion import diffusion_loss, make_ddpm_scheduler
from common.model.samplers import make_sampling_scheduler

pytestmark = pytest.mark.usefixtures("single_thread")


def loop_of_full_forwards(denoiser, noise, keypoints_2d, ref, features, num_steps):
    """DDIM the way the original runs it: features copied per hypothesis, a full forward every step."""
    B, H = noise.shape[:2]
    scheduler = make_sampling_scheduler("ddim", 100)
    scheduler.set_timesteps(num_steps)
    repeat = lambda x: x.repeat_interleave(H, dim=0)  # noqa: E731  (B, ...) -> (B*H, ...)
    keypoints_2d, ref, features = repeat(keypoints_2d), repeat(ref), [repeat(f) for f in features]
    sample = noise.reshape(B * H, 1, NUM_JOINTS, 3)
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            t = torch.full((B * H,), int(timestep))
            sample = scheduler.step(denoiser(keypoints_2d, ref, sample, features, t), timestep, sample).prev_sample
    return sample.reshape(noise.shape)


class OracleDenoiser:
    """Predicts the exact noise that turns x_t back into a fixed pose x_0 (for any timestep)."""

    def __init__(self, x0):
        self.x0 = x0
        self.alphas_cumprod = make_ddpm_scheduler().alphas_cumprod

    def encode_context(self, keypoints_2d, ref, features):
        return None

    def denoise(self, context, noisy, t):
        shape = (-1,) + (1,) * (noisy.dim() - 1)
        alpha_bar = self.alphas_cumprod[t].view(shape)
        x0 = self.x0 if noisy.dim() == self.x0.dim() else self.x0[:, None]
        return (noisy - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    def __call__(self, keypoints_2d, ref, noisy, features, t):
        return self.denoise(None, noisy, t)


def test_schedulers_are_set_up_as_the_original():
    ddpm = make_ddpm_scheduler()
    assert ddpm.config.num_train_timesteps == 100
    torch.testing.assert_close(ddpm.betas, torch.linspace(1e-4, 0.02, 100))
    ddim = make_sampling_scheduler("ddim")
    assert ddim.config.clip_sample and ddim.config.clip_sample_range == 1.0
    assert ddim.config.timestep_spacing == "leading" and ddim.config.set_alpha_to_one
    ddim.set_timesteps(5)
    assert ddim.timesteps.tolist() == [80, 60, 40, 20, 0]


@pytest.mark.parametrize("hypotheses", [1, 20])
@pytest.mark.parametrize("num_steps", [5, 20])
def test_ddim_sample_equals_loop_of_full_forwards(hypotheses, num_steps):
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=hypotheses, seed=hypotheses + num_steps)
    ours = ddim_sample(denoiser, noise, keypoints_2d, ref, features, num_steps)
    reference = loop_of_full_forwards(denoiser, noise, keypoints_2d, ref, features, num_steps)
    assert ours.shape == noise.shape
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_ddim_sample_never_copies_features_per_hypothesis():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=20)
    calls = []
    original = denoiser.encode_context
    denoiser.encode_context = lambda k, r, f: calls.append([x.shape for x in f]) or original(k, r, f)
    ddim_sample(denoiser, noise, keypoints_2d, ref, features, 5)
    assert calls == [[f.shape for f in features]]


def test_ddim_with_exact_noise_recovers_the_pose():
    x0 = torch.rand(3, 1, NUM_JOINTS, 3) * 1.6 - 0.8  # inside the [-1, 1] clamp
    noise = torch.randn(3, 4, 1, NUM_JOINTS, 3)
    sample = ddim_sample(OracleDenoiser(x0), noise, None, None, None, num_steps=5)
    torch.testing.assert_close(sample, x0[:, None].expand_as(sample), rtol=0, atol=1e-5)


def test_ddim_clamps_the_predicted_pose_to_one_metre():
    class Zero(OracleDenoiser):
        def denoise(self, context, noisy, t):
            return torch.zeros_like(noisy)

    noise = 10 * torch.randn(2, 3, 1, NUM_JOINTS, 3)
    sample = ddim_sample(Zero(None), noise, None, None, None, num_steps=5)
    # Zero noise predictions only rescale x_t by positive factors, so signs survive the clamp.
    assert sample.abs().max().item() == pytest.approx(1.0)
    assert torch.equal(sample.sign(), noise.sign())


def test_ddim_rejects_bad_arguments():
    noise = torch.randn(2, 1, NUM_JOINTS, 3)
    with pytest.raises(ValueError, match="B, H, 1, J, 3"):
        ddim_sample(OracleDenoiser(noise), noise, None, None, None, 5)
    with pytest.raises(ValueError, match="steps must be in"):
        ddim_sample(OracleDenoiser(noise), noise[:, None], None, None, None, 0)


def test_diffusion_loss_is_zero_for_the_exact_noise():
    x0 = torch.rand(4, 1, NUM_JOINTS, 3) - 0.5
    loss = diffusion_loss(OracleDenoiser(x0), x0, None, None, None, make_ddpm_scheduler(),
                          generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_diffusion_loss_is_reproducible_and_trains_only_unfrozen_parts():
    denoiser = tiny_denoiser().freeze_context()
    keypoints_2d, ref, _, features, _ = tiny_inputs(B=4)
    pose = torch.rand(4, 1, NUM_JOINTS, 3) - 0.5
    scheduler = make_ddpm_scheduler()
    denoiser.eval()
    losses = [diffusion_loss(denoiser, pose, keypoints_2d, ref, features, scheduler, torch.Generator().manual_seed(5))
              for _ in range(2)]
    assert losses[0].dim() == 0 and torch.isfinite(losses[0])
    assert losses[0].item() == losses[1].item()
    losses[0].backward()
    assert all(p.grad is None for p in denoiser.context_parameters())
    assert all(p.grad is not None for p in denoiser.trainable_parameters())

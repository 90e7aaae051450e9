"""What an optimisation step does, not only how it is called: gradient clipping, and that training learns.

Both tests drive ``common.run.training._train_step``, the step ``train()`` runs on
every batch, on tiny in-memory data (no shards, no backbone), so that they
take seconds on one CPU core.
"""
import copy

import pytest
import torch
from model_fixtures import TINY_CHANNELS, ddim_sample, single_thread, tiny_denoiser  # noqa: F401

from common.analysis.metrics import mpjpe
from common.core.skeleton import NUM_JOINTS
from common.model.diffusion import make_ddpm_scheduler
from common.run import training

pytestmark = pytest.mark.usefixtures("single_thread")

FEATURE_SIZES = ((8, 6), (4, 3), (2, 2), (1, 1))


def lifting_data(n, seed):
    """``n`` samples of a 2D-to-3D lifting task whose answer the 2D input determines.

    3D poses (root-relative, metres) are a fixed mean pose plus a random mix
    of three fixed deformations; the 2D keypoints are their x and y (an
    orthographic camera), so depth follows from the mix the 2D pose reveals.
    The feature maps are zeros: the pose must come from the keypoints. Train
    and test sets share the mean and deformations and differ in ``seed``.
    Returns the training-step inputs: features, keypoints (n, 1, J, 2), ref (n, J, 2), pose (n, 1, J, 3).
    """
    shape = torch.Generator().manual_seed(100)
    mean = 0.1 * torch.randn(NUM_JOINTS, 3, generator=shape)
    deformations = 0.25 * torch.randn(3, NUM_JOINTS, 3, generator=shape)
    mix = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    pose = mean + torch.einsum("nk,kjc->njc", mix, deformations)
    pose = pose - pose[:, :1]  # (n, J, 3)
    keypoints = pose[..., :2] / 1.5  # (n, J, 2), inside [-1, 1]
    return {"features": [torch.zeros(n, c, *size) for c, size in zip(TINY_CHANNELS, FEATURE_SIZES)],
            "keypoints": keypoints[:, None], "ref": keypoints.clamp(-1, 1), "pose": pose[:, None]}


def _batch(data, index):
    return {"features": [f[index] for f in data["features"]],
            **{key: data[key][index] for key in ("keypoints", "ref", "pose")}}


class _Amplified(torch.nn.Module):
    """The denoiser with its output multiplied by ``factor``: a huge loss and huge gradients."""

    def __init__(self, denoiser, factor):
        super().__init__()
        self.denoiser, self.factor = denoiser, factor

    def forward(self, *args):
        return self.factor * self.denoiser(*args)


def _step(model, grad_clip):
    """One _train_step with SGD (lr 1, so the update is minus the applied gradient); returns (loss, update)."""
    data = lifting_data(8, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    loss = training._train_step(model, data, make_ddpm_scheduler(100), optimizer,
                                torch.Generator().manual_seed(0), grad_clip)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    applied = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(before - after, applied)
    return loss, applied.double()


def test_clipping_bounds_the_applied_gradient_of_a_huge_loss():
    model = _Amplified(tiny_denoiser(drop_path_rate=0.0), 1e4)
    clip = 0.5
    loss, unclipped = _step(copy.deepcopy(model), grad_clip=None)
    assert loss > 1e6 and unclipped.norm() > 1000 * clip, "the test needs a gradient far above the clip value"
    loss_clipped, clipped = _step(model, grad_clip=clip)
    assert loss_clipped == loss
    assert clipped.norm() <= clip * (1 + 1e-5)
    # Clipping rescales the whole gradient: same direction, norm exactly the clip value.
    assert clipped.norm().item() == pytest.approx(clip, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(clipped, unclipped, dim=0) > 1 - 1e-6


def test_training_learns_to_lift_better_than_the_mean_pose():
    """150 steps on 256 samples (a few seconds): the loss falls and the mean hypothesis beats
    the mean training pose by a wide margin. An untrained model (or one whose optimizer never
    steps) is about 1.5 x the baseline's error, a trained one below half of it."""
    torch.manual_seed(0)
    train, test = lifting_data(256, seed=1), lifting_data(64, seed=2)
    model = tiny_denoiser(embed_dim=16, res_depth=1, joint_depth=1, drop_path_rate=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = make_ddpm_scheduler(100)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        index = torch.randperm(256, generator=generator)[:32]
        losses.append(training._train_step(model, _batch(train, index), scheduler, optimizer, generator))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, f"the loss did not fall: {first:.3f} over the first 10 steps, {last:.3f} over the last 10"

    model.eval()
    noise = torch.randn((64, 4, 1, NUM_JOINTS, 3), generator=torch.Generator().manual_seed(5))
    hypotheses = ddim_sample(model, noise, test["keypoints"], test["ref"], test["features"], 10)[:, :, 0]
    predicted = hypotheses.mean(dim=1)
    predicted[:, 0] = 0
    target = test["pose"][:, 0]
    baseline = train["pose"][:, 0].mean(dim=0).expand_as(target)
    ours, theirs = mpjpe(predicted, target).item(), mpjpe(baseline, target).item()
    assert ours < 0.7 * theirs, (f"MPJPE of the mean hypothesis {1000 * ours:.0f} mm is not below 0.7 x the mean "
                                 f"training pose's {1000 * theirs:.0f} mm")

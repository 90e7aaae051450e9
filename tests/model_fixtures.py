"""Helpers of the model tests: tiny models and inputs, and writers of weight
files in the released layouts (each takes a state dict with the names of the
specification's key lists and stores it the way the authors' files do).
"""
import pytest
import torch

from common.core.skeleton import NUM_JOINTS
from common.model.acceleration import autocast
from common.model.denoiser import SnapPoseDenoiser
from common.model.samplers import SamplingConfig, sample

TINY_CHANNELS = (4, 8, 16, 32)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: on a small shared CPU, thread contention costs far more than it gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_denoiser(**kwargs):
    """A SnapPoseDenoiser with token width 16, two blocks of each kind, feature channels TINY_CHANNELS."""
    kwargs = {"feature_channels": TINY_CHANNELS, "embed_dim": 16, "res_depth": 2, "joint_depth": 2, **kwargs}
    return SnapPoseDenoiser(**kwargs)


def tiny_inputs(B=2, H=3, seed=0):
    """keypoints_2d (B, 1, J, 2), ref (B, J, 2), noisy (B, H, 1, J, 3), four small maps, t (B,)."""
    g = torch.Generator().manual_seed(seed)
    keypoints_2d = torch.rand((B, 1, NUM_JOINTS, 2), generator=g) * 2 - 1
    ref = torch.rand((B, NUM_JOINTS, 2), generator=g) * 1.8 - 0.9
    noisy = torch.randn((B, H, 1, NUM_JOINTS, 3), generator=g)
    sizes = [(16, 12), (8, 6), (4, 3), (2, 2)]
    features = [torch.randn((B, c) + s, generator=g) for c, s in zip(TINY_CHANNELS, sizes)]
    t = torch.randint(0, 100, (B,), generator=g)
    return keypoints_2d, ref, noisy, features, t


def random_state_dict(keys, seed=0):
    """Random tensors with the names and shapes of a key list [(name, shape)]."""
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.zeros((), dtype=torch.long) if name.endswith("num_batches_tracked")
                   else torch.randn(shape, generator=g))
            for name, shape in keys}


def write_hrnet(path, state_dict):
    """PoseHRNet: a plain state dict (``final_layer`` included when given)."""
    torch.save(dict(state_dict), path)
    return path


def write_contextpose(path, state_dict, lifter="volume_net"):
    """CA-PF: ``{"model": ...}`` with names as in its key list (``module.backbone.``,
    ``module.volume_net.``); ``lifter`` renames ``volume_net`` (e.g. "pose_estimator")."""
    model = {name.replace("module.volume_net.", f"module.{lifter}.", 1): t for name, t in state_dict.items()}
    torch.save({"model": model}, path)
    return path


def write_snappose(path, state_dict, prefix="", epoch=7, lr=5e-5):
    """SnapPose: ``{"epoch", "lr", "optimizer", "model_pos"}``, names optionally prefixed."""
    torch.save({"epoch": epoch, "lr": lr, "optimizer": {"state": {}, "param_groups": []},
                "model_pos": {prefix + name: t for name, t in state_dict.items()}}, path)
    return path


def assert_same_weights(a, b):
    """The SnapPose checkpoint files ``a`` and ``b`` hold bit-identical denoiser weights."""
    from common.model.checkpoints import read_checkpoint

    wa, wb = read_checkpoint(a)["model_pos"], read_checkpoint(b)["model_pos"]
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=f"tensor {name} differs")


def fail_at_train_step(monkeypatch, step, error):
    """Make ``common.run.training._train_step`` raise ``error`` at its ``step``-th call (1-based) of this test."""
    from common.run import training

    calls = {"n": 0}
    real = training._train_step

    def step_or_fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train_step", step_or_fail)


def sample_from(denoiser, noise, keypoints_2d, ref, features, steps, sampler="ddim", precision="fp32",
                num_train_timesteps=100):
    """``common.model.samplers.sample`` from the networks' inputs: the context once, then the sampler's steps."""
    with autocast(noise.device, precision):
        context = denoiser.encode_context(keypoints_2d, ref, features)
    sampling = SamplingConfig(sampler=sampler, steps=steps, precision=precision,
                              num_train_timesteps=num_train_timesteps)
    return sample(denoiser, context, noise, sampling)


def ddim_sample(denoiser, noise, keypoints_2d, ref, features, num_steps, num_train_timesteps=100):
    """The paper's sampler, DDIM in fp32: the reference the parity tests hold against the original's loop."""
    return sample_from(denoiser, noise, keypoints_2d, ref, features, num_steps,
                       num_train_timesteps=num_train_timesteps)

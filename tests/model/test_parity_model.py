"""Parity with the original implementation: same weights (as released-layout files) and inputs, same outputs.

The reference outputs and the seeded weights/inputs come from the parity
folder (fixtures ``parity_dir`` and ``seeded``); every weight file goes through
this project's loaders. Tolerance: 1e-4 relative error (the original's own
float32 and float64 runs agree to about 1e-6).
"""
import pytest
import torch
from model_fixtures import ddim_sample, single_thread, write_contextpose, write_hrnet, write_snappose  # noqa: F401

from common.model.checkpoints import load_backbone_weights, load_context_weights, load_snappose_weights
from common.model.networks import PoseHRNet, SnapPoseDenoiser

TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reference(parity_dir):
    return torch.load(parity_dir / "denoiser_out.pt", weights_only=True)


@pytest.fixture(scope="module")
def denoiser_and_inputs(seeded, spec_keys, reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "best_h36m.bin"
    write_snappose(path, seeded.seeded_state_dict(spec_keys("denoiser"), reference["seeds"]["denoiser"]),
                   prefix="module.")
    denoiser = SnapPoseDenoiser()
    load_snappose_weights(denoiser, path)
    inputs = seeded.denoiser_inputs(reference["B"], reference["H"], reference["input_seed"])
    return denoiser.eval(), inputs


def test_backbone_matches_original(parity_dir, seeded, spec_keys, tmp_path):
    reference = torch.load(parity_dir / "hrnet_w32_out.pt", weights_only=True)["features"]
    path = write_hrnet(tmp_path / "pose_hrnet_w32_256x192.pth", seeded.seeded_state_dict(spec_keys("hrnet_w32"), 1011))
    backbone = load_backbone_weights(PoseHRNet(32).freeze(), path)
    with torch.no_grad():
        features = backbone(seeded.seeded((1, 3, 256, 192), 1012))
    assert [f.shape for f in features] == [r.shape for r in reference]
    for level, (ours, theirs) in enumerate(zip(features, reference)):
        assert seeded.rel_err(ours, theirs) < TOLERANCE, f"feature map {level}"


def test_denoiser_matches_original(denoiser_and_inputs, reference, seeded):
    denoiser, (keypoints_2d, ref, noisy, features, t) = denoiser_and_inputs
    with torch.no_grad():
        eps5 = denoiser(keypoints_2d, ref, noisy, features, t)
        eps4 = denoiser(keypoints_2d, ref, noisy[:, 0], features, t)
    assert seeded.rel_err(eps5, reference["eps5"]) < TOLERANCE
    assert seeded.rel_err(eps4, reference["eps4"]) < TOLERANCE


@pytest.mark.parametrize("num_steps", [5, 20])
def test_ddim_matches_original(denoiser_and_inputs, reference, seeded, num_steps):
    denoiser, (keypoints_2d, ref, noisy, features, _) = denoiser_and_inputs
    sample = ddim_sample(denoiser, noisy, keypoints_2d, ref, features, num_steps)
    assert seeded.rel_err(sample, reference["ddim"][num_steps]) < TOLERANCE


def test_contextpose_file_matches_original(denoiser_and_inputs, reference, seeded, spec_keys, tmp_path):
    denoiser, (keypoints_2d, ref, noisy, features, t) = denoiser_and_inputs
    denoiser = SnapPoseDenoiser().eval()
    denoiser.load_state_dict(denoiser_and_inputs[0].state_dict())
    path = write_contextpose(tmp_path / "human36m_nips_retrain.bin",
                             seeded.seeded_state_dict(spec_keys("contextpose"), reference["seeds"]["contextpose"]))
    loaded = load_context_weights(denoiser, path)
    assert loaded == sorted(reference["contextpose_loaded_keys"])
    with torch.no_grad():
        eps = denoiser(keypoints_2d, ref, noisy, features, t)
    assert seeded.rel_err(eps, reference["eps_after_contextpose"]) < TOLERANCE

"""Loading the released layouts (built on the fly from the key lists, or from the models' own state
dicts where the lists are not needed) and saving our own checkpoints."""
import warnings

import numpy as np
import pytest
import torch
from model_fixtures import (  # noqa: F401
    random_state_dict,
    single_thread,
    tiny_denoiser,
    tiny_inputs,
    write_contextpose,
    write_hrnet,
    write_snappose,
)

from common.model.checkpoints import (
    CheckpointError,
    load_backbone_weights,
    load_context_weights,
    load_snappose_weights,
    read_checkpoint,
    save_checkpoint,
)
from common.model.denoiser import CONTEXT_PREFIXES
from common.model.networks import ModelConfig, PoseHRNet, SnapPoseDenoiser, build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def assert_arrived(module, state_dict, prefix=""):
    ours = module.state_dict()
    for name, tensor in state_dict.items():
        assert torch.equal(ours[name[len(prefix):]], tensor), name


@pytest.fixture(scope="module")
def denoiser_state(spec_keys):
    return random_state_dict(spec_keys("denoiser"), seed=1)


@pytest.fixture(scope="module")
def contextpose_state(spec_keys):
    return random_state_dict(spec_keys("contextpose"), seed=3)


def _shapes(module, prefix=""):
    return [(prefix + name, tuple(t.shape)) for name, t in module.state_dict().items()]


# The strict-loading tests build their files from the models' own state dicts, so
# they run (and catch a lenient loader) without the released key lists.

@pytest.fixture(scope="module")
def own_denoiser_state():
    return random_state_dict(_shapes(SnapPoseDenoiser()), seed=4)


@pytest.fixture(scope="module")
def own_hrnet_state():
    return random_state_dict(_shapes(PoseHRNet(width=32)), seed=5)


@pytest.fixture(scope="module")
def own_contextpose_state(own_hrnet_state):
    """A CA-PF-layout state: the denoiser's context layers under module.volume_net., the HRNet under module.backbone."""
    context = [(n, s) for n, s in _shapes(SnapPoseDenoiser(), "module.volume_net.")
               if n[len("module.volume_net."):].startswith(CONTEXT_PREFIXES)]
    return {**random_state_dict(context, seed=6),
            **{f"module.backbone.{name}": t for name, t in own_hrnet_state.items()}}


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_snappose_checkpoint_loads_every_tensor(denoiser_state, tmp_path, prefix):
    path = write_snappose(tmp_path / "best_h36m.bin", denoiser_state, prefix=prefix, epoch=12)
    denoiser = SnapPoseDenoiser()
    checkpoint = load_snappose_weights(denoiser, path)
    assert checkpoint["epoch"] == 12 and checkpoint["lr"] == 5e-5 and "optimizer" in checkpoint
    assert_arrived(denoiser, denoiser_state)


def test_hrnet_file_loads_every_tensor_and_ignores_final_layer(spec_keys, tmp_path):
    state = random_state_dict(spec_keys("hrnet_w32"), seed=2)
    assert "final_layer.weight" in state
    backbone = load_backbone_weights(PoseHRNet(32), write_hrnet(tmp_path / "pose_hrnet_w32_256x192.pth", state))
    assert_arrived(backbone, {k: v for k, v in state.items() if not k.startswith("final_layer.")})


@pytest.mark.parametrize("lifter", ["volume_net", "pose_estimator"])
def test_contextpose_file_loads_context_layers_and_freezes_them(contextpose_state, tmp_path, lifter):
    state = contextpose_state
    path = write_contextpose(tmp_path / "human36m_nips_retrain.bin", state, lifter=lifter)
    denoiser = SnapPoseDenoiser()
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    loaded = load_context_weights(denoiser, path)

    context_names = sorted(n for n in before if n.startswith(CONTEXT_PREFIXES))
    assert loaded == context_names
    lifter_state = {k[len("module.volume_net."):]: v for k, v in state.items() if k.startswith("module.volume_net.")}
    assert_arrived(denoiser, {n: lifter_state[n] for n in loaded})
    after = denoiser.state_dict()
    assert all(torch.equal(after[n], before[n]) for n in before if n not in loaded)  # CA-PF's own lifter layers stay out
    assert denoiser.context_frozen
    assert {n for n, p in denoiser.named_parameters() if not p.requires_grad} == {
        n for n in loaded if n in dict(denoiser.named_parameters())}

    # The same file carries the HRNet the context blocks were trained with.
    backbone = load_backbone_weights(PoseHRNet(32), path)
    assert_arrived(backbone, {k: v for k, v in state.items()
                              if k.startswith("module.backbone.") and "final_layer" not in k}, prefix="module.backbone.")


def test_missing_tensor_is_named(own_denoiser_state, tmp_path):
    state = dict(own_denoiser_state)
    del state["joint_blocks.2.attn.qkv.bias"]
    path = write_snappose(tmp_path / "broken.bin", state)
    with pytest.raises(CheckpointError, match=r"broken\.bin.*missing tensors: joint_blocks\.2\.attn\.qkv\.bias"):
        load_snappose_weights(SnapPoseDenoiser(), path)


def test_wrong_shape_is_named(own_denoiser_state, tmp_path):
    state = dict(own_denoiser_state, **{"head.1.weight": torch.zeros(4, 768)})
    path = write_snappose(tmp_path / "wrong.bin", state)
    with pytest.raises(CheckpointError, match=r"wrong\.bin.*head\.1\.weight has shape \(4, 768\).*\(3, 768\)"):
        load_snappose_weights(SnapPoseDenoiser(), path)


def test_unexpected_tensor_is_named(own_denoiser_state, tmp_path):
    path = write_snappose(tmp_path / "extra.bin", dict(own_denoiser_state, **{"head.2.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: head\.2\.weight"):
        load_snappose_weights(SnapPoseDenoiser(), path)


def test_contextpose_with_wrong_shape_is_named(own_contextpose_state, tmp_path):
    state = dict(own_contextpose_state)
    state["module.volume_net.feat_embed.3.weight"] = torch.zeros(128, 384)
    path = write_contextpose(tmp_path / "ca_pf.bin", state)
    with pytest.raises(CheckpointError, match=r"feat_embed\.3\.weight has shape \(128, 384\)"):
        load_context_weights(SnapPoseDenoiser(), path)


def test_own_states_load_every_tensor(own_denoiser_state, own_hrnet_state, own_contextpose_state, tmp_path):
    """The valid counterparts of the files the strict tests break."""
    denoiser = SnapPoseDenoiser()
    load_snappose_weights(denoiser, write_snappose(tmp_path / "best.bin", own_denoiser_state, prefix="module."))
    assert_arrived(denoiser, own_denoiser_state)
    backbone = load_backbone_weights(PoseHRNet(32), write_hrnet(tmp_path / "hrnet.pth", own_hrnet_state))
    assert_arrived(backbone, own_hrnet_state)
    denoiser = SnapPoseDenoiser()
    loaded = load_context_weights(denoiser, write_contextpose(tmp_path / "capf.bin", own_contextpose_state))
    assert loaded == sorted(n for n in denoiser.state_dict() if n.startswith(CONTEXT_PREFIXES))
    assert_arrived(denoiser, {n: own_contextpose_state[f"module.volume_net.{n}"] for n in loaded})


@pytest.mark.parametrize("change, message", [
    ("missing", r"missing tensors: stage4\.2\.fuse_layers\.0\.3\.1\.running_var"),
    ("shape", r"tensor conv1\.weight has shape \(64, 3, 5, 5\), the model expects \(64, 3, 3, 3\)"),
    ("unexpected", r"unexpected tensors: extra\.weight"),
], ids=["missing", "shape", "unexpected"])
def test_hrnet_file_that_does_not_fit_is_named(own_hrnet_state, tmp_path, change, message):
    state = dict(own_hrnet_state)
    if change == "missing":
        del state["stage4.2.fuse_layers.0.3.1.running_var"]
    elif change == "shape":
        state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    else:
        state["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=message):
        load_backbone_weights(PoseHRNet(32), write_hrnet(tmp_path / "hrnet.pth", state))


def test_wrong_width_backbone_says_which_width(tmp_path):
    path = write_hrnet(tmp_path / "w8.pth", PoseHRNet(8).state_dict())
    with pytest.raises(CheckpointError, match=r"W8 network: build PoseHRNet\(width=8\)"):
        load_backbone_weights(PoseHRNet(16), path)


def test_files_of_the_wrong_kind_are_explained(denoiser_state, contextpose_state, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    for load in (load_backbone_weights, load_context_weights, load_snappose_weights):
        with pytest.raises(CheckpointError, match="notes.txt is not a PyTorch checkpoint"):
            load(SnapPoseDenoiser() if load is not load_backbone_weights else PoseHRNet(8), text)
    snappose = write_snappose(tmp_path / "best.bin", denoiser_state)
    with pytest.raises(CheckpointError, match="not a Context-Aware PoseFormer file"):
        load_context_weights(SnapPoseDenoiser(), snappose)
    capf = write_contextpose(tmp_path / "capf.bin", contextpose_state)
    with pytest.raises(CheckpointError, match="load_context_weights"):
        load_snappose_weights(SnapPoseDenoiser(), capf)
    with pytest.raises(FileNotFoundError, match="missing.bin not found"):
        load_snappose_weights(SnapPoseDenoiser(), tmp_path / "missing.bin")


def test_numpy_scalars_and_arrays_load_without_trust(tmp_path):
    path = tmp_path / "numpy_lr.bin"
    torch.save({"lr": np.float64(1e-4), "epoch": np.int64(3), "mean": np.zeros(2, np.float32), "model_pos": {}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = read_checkpoint(path)
    assert loaded["lr"] == 1e-4 and loaded["epoch"] == 3 and loaded["mean"].dtype == np.float32


def test_save_then_load_gives_the_same_model(tmp_path):
    denoiser = tiny_denoiser().eval()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=6e-5)
    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    denoiser(keypoints_2d, ref, noisy, features, t).sum().backward()
    optimizer.step()

    path = save_checkpoint(tmp_path / "run" / "latest_epoch.bin", torch.nn.DataParallel(denoiser), optimizer,
                           epoch=3, lr=6e-5, best_mpjpe=41.5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest_epoch.bin"]  # no temporary file left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our own files load without full unpickling
        restored = tiny_denoiser().eval()
        checkpoint = load_snappose_weights(restored, path)
    assert checkpoint["epoch"] == 3 and checkpoint["lr"] == 6e-5 and checkpoint["best_mpjpe"] == 41.5
    assert not any(k.startswith("module.") for k in checkpoint["model_pos"])
    fresh_optimizer = torch.optim.AdamW(restored.parameters(), lr=6e-5)
    fresh_optimizer.load_state_dict(checkpoint["optimizer"])
    with torch.no_grad():
        torch.testing.assert_close(restored(keypoints_2d, ref, noisy, features, t),
                                   denoiser(keypoints_2d, ref, noisy, features, t), rtol=0, atol=0)


def test_save_refuses_reserved_extra_keys(tmp_path):
    with pytest.raises(ValueError, match="clash"):
        save_checkpoint(tmp_path / "x.bin", tiny_denoiser(), model_pos={})


def test_build_model_follows_the_config():
    backbone, denoiser = build_model(ModelConfig(backbone_width=8, res_depth=1, joint_depth=2, embed_dim=16))
    assert backbone.feature_channels == (8, 16, 32, 64) and denoiser.feature_channels == (8, 16, 32, 64)
    assert len(denoiser.res_blocks) == 1 and len(denoiser.joint_blocks) == 2
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    assert denoiser.training and all(p.requires_grad for p in denoiser.parameters())

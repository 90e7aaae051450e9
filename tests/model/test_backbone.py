"""PoseHRNet: released layout, output shapes, frozen behaviour."""
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.model.backbone import PoseHRNet

pytestmark = pytest.mark.usefixtures("single_thread")


def test_state_dict_matches_released_layout_without_head(spec_keys):
    released = {name: shape for name, shape in spec_keys("hrnet_w32") if not name.startswith("final_layer.")}
    assert {name: tuple(t.shape) for name, t in PoseHRNet(32).state_dict().items()} == released


@pytest.mark.parametrize("width", [8, 48])
def test_feature_maps_have_branch_widths_and_strides(width):
    backbone = PoseHRNet(width).freeze()
    size = (256, 192) if width == 8 else (64, 32)  # W48 at full size is slow on a CPU
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, *size))
    assert [tuple(f.shape) for f in features] == [
        (2, width * 2 ** i, size[0] // 2 ** (i + 2), size[1] // 2 ** (i + 2)) for i in range(4)]
    assert backbone.feature_channels == tuple(width * 2 ** i for i in range(4))


def test_freeze_pins_eval_mode_and_turns_gradients_off():
    backbone = PoseHRNet(8)
    assert backbone.train().training
    backbone.freeze()
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not any(m.training for m in backbone.modules())
    # In eval mode BatchNorm uses running statistics: one image gives the same maps alone or in a batch.
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        alone = backbone(images[:1])
        batched = backbone(images)
    for a, b in zip(alone, batched):
        torch.testing.assert_close(a, b[:1], rtol=1e-4, atol=1e-5)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        PoseHRNet(8)(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="positive"):
        PoseHRNet(0)


def test_stem_width_shrinks_stem_and_layer1_only():
    narrow = PoseHRNet(width=8, stem_width=16)
    state = narrow.state_dict()
    assert state["conv1.weight"].shape == (16, 3, 3, 3)
    assert state["layer1.0.conv3.weight"].shape == (64, 16, 1, 1)
    assert state["transition1.0.0.weight"].shape == (8, 64, 3, 3)
    with torch.no_grad():
        maps = narrow.eval()(torch.randn(1, 3, 256, 192))
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 64, 48), (16, 32, 24), (32, 16, 12), (64, 8, 6)]
    with pytest.raises(ValueError, match="stem_width"):
        PoseHRNet(width=8, stem_width=0)

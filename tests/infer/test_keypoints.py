"""2D keypoints for inference: COCO-17 -> H36M-17, heatmap decoding, and the backbone's heatmap head."""
import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.infer.keypoints import coco_to_h36m, decode_heatmaps, heatmap_to_crop
from common.model.backbone import PoseHRNet
from common.model.checkpoints import CheckpointError, load_backbone_weights
from common.model.networks import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_coco_to_h36m_follows_the_documented_rule():
    coco = np.arange(34, dtype=np.float64).reshape(17, 2) ** 1.5  # distinct, non-linear positions
    h36m = coco_to_h36m(coco)
    mid = lambda a, b: (coco[a] + coco[b]) / 2  # noqa: E731
    np.testing.assert_allclose(h36m[0], mid(11, 12))  # pelvis: mid-hips
    np.testing.assert_allclose(h36m[8], mid(5, 6))  # thorax: mid-shoulders
    np.testing.assert_allclose(h36m[7], (mid(11, 12) + mid(5, 6)) / 2)  # spine
    np.testing.assert_allclose(h36m[9], coco[0])  # neck/nose: nose
    np.testing.assert_allclose(h36m[10], mid(1, 2))  # head: mid-eyes
    # right hip, knee, ankle; left hip, knee, ankle; left shoulder, elbow, wrist; right ones
    for h, c in ((1, 12), (2, 14), (3, 16), (4, 11), (5, 13), (6, 15), (11, 5), (12, 7), (13, 9),
                 (14, 6), (15, 8), (16, 10)):
        np.testing.assert_array_equal(h36m[h], coco[c])
    assert coco_to_h36m(np.stack([coco, coco])).shape == (2, 17, 2)
    with pytest.raises(ValueError, match="expected COCO keypoints"):
        coco_to_h36m(np.zeros((16, 2)))


def _gaussians(centres, h=64, w=48, sigma=2.0):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in centres])[None]


CENTRES = [(20.3, 30.7), (10.6, 40.1), (33.2, 12.9), (5.0, 50.0)]


def test_dark_recovers_sub_pixel_centres_of_gaussians():
    positions, scores = decode_heatmaps(_gaussians(CENTRES), "dark")
    np.testing.assert_allclose(positions[0].numpy(), CENTRES, atol=0.02)
    assert scores.shape == (1, 4) and (scores > 0.9).all()


def test_quarter_offset_moves_towards_the_higher_neighbour():
    positions, _ = decode_heatmaps(_gaussians(CENTRES), "quarter")
    # argmax (20, 31) -> x + 0.25 (21 is higher than 19), y - 0.25 (30 is higher than 32)
    np.testing.assert_allclose(positions[0].numpy(), [(20.25, 30.75), (10.75, 40.25), (33.25, 12.75), (5, 50)])
    # At the border there is no neighbour on one side: the argmax stays.
    border, _ = decode_heatmaps(_gaussians([(0.3, 63.0)]), "quarter")
    np.testing.assert_allclose(border[0, 0].numpy(), [0, 63])
    with pytest.raises(ValueError, match="one of"):
        decode_heatmaps(_gaussians(CENTRES), "soft-argmax")


def test_heatmap_pixels_scale_to_crop_pixels_by_the_stride():
    np.testing.assert_allclose(heatmap_to_crop([[10.0, 20.0]], (48, 64), (192, 256)), [[40.0, 80.0]])


def test_heatmap_head_loads_strictly_and_leaves_other_weights_unchanged(tmp_path):
    torch.manual_seed(0)
    plain = PoseHRNet(4, stem_width=8)
    torch.manual_seed(0)
    headed = PoseHRNet(4, stem_width=8, heatmap_joints=17)
    headed_state = headed.state_dict()
    for name, tensor in plain.state_dict().items():  # the head draws its weights last
        torch.testing.assert_close(headed_state[name], tensor)
    features = headed(torch.randn(1, 3, 128, 96))
    assert headed.heatmaps(features).shape == (1, 17, 32, 24)
    with pytest.raises(RuntimeError, match="no heatmap head"):
        plain.heatmaps(features)

    path = tmp_path / "hrnet.pth"
    torch.save(headed.state_dict(), path)
    fresh = load_backbone_weights(PoseHRNet(4, stem_width=8, heatmap_joints=17), path)
    torch.testing.assert_close(fresh.final_layer.weight, headed.final_layer.weight)
    load_backbone_weights(PoseHRNet(4, stem_width=8), path)  # a backbone without a head ignores it
    torch.save(plain.state_dict(), path)
    with pytest.raises(CheckpointError, match="no heatmap head"):
        load_backbone_weights(PoseHRNet(4, stem_width=8, heatmap_joints=17), path)


def test_build_model_adds_the_head_only_when_asked():
    cfg = ModelConfig(backbone_width=4, backbone_stem_width=8, res_depth=1, joint_depth=1, embed_dim=16)
    assert build_model(cfg)[0].final_layer is None
    assert build_model(cfg, heatmap_joints=17)[0].final_layer.out_channels == 17

"""Evaluation on tiny shards: metrics.json, predictions, figures, flip test and batching independence."""
import json

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401
from reference import (
    KNOWN_AUC14,
    KNOWN_PCK14,
    KNOWN_PCK17,
    MPI_14,
    auc_percent,
    hypothesis_metrics,
    known_error_predictor,
    mirror_points,
    pck_percent,
)

from common.analysis import metrics
from common.data.loader import build_loader
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import output_paths
from common.run.evaluation import evaluate

# Two hypotheses, two DDIM steps, flip test on.
TWO_BY_TWO = SamplingConfig(steps=2, hypotheses=2)

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(tiny_config, tmp_path_factory):
    """An untrained tiny SnapPose checkpoint (evaluation needs no trained weights to be tested)."""
    _, denoiser = build_model(tiny_config("unused").model)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "best_h36m.bin", denoiser, epoch=3)


def test_evaluate_writes_finite_metrics_predictions_and_figures(tiny_config, weights, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", evaluation__save_predictions=str(tmp_path / "out" / "p.npz"),
                      evaluation__visualize=2, evaluation__num_proposals=3)
    summary = evaluate(cfg, weights, device=CPU)
    paths = output_paths(cfg)
    assert summary["num_samples"] == 3 and summary["epoch"] == 3
    predictions = np.load(paths.predictions)
    # Every reported error, re-scored from the saved predictions by the NumPy definitions.
    for name, value in hypothesis_metrics(predictions["hypotheses"], predictions["ground_truth"]).items():
        assert summary[name] == pytest.approx(value, rel=1e-5), name
    assert len(summary["per_action"]["mpjpe_mean_hypothesis"]) == 3  # the tiny split has three actions
    saved = json.loads(paths.metrics.read_text())
    assert saved["metrics"]["mpjpe_mean_hypothesis"] == pytest.approx(summary["mpjpe_mean_hypothesis"])
    assert saved["config"]["evaluation"]["num_proposals"] == 3
    assert "frame average" in capsys.readouterr().out

    assert predictions["hypotheses"].shape == (3, 3, 17, 3)
    assert predictions["ground_truth"].shape == (3, 17, 3) and len(predictions["keys"]) == 3
    assert np.all(predictions["hypotheses"][:, :, 0] == 0), "the root joint is set to exactly 0"
    # The saved predictions are what was scored.
    mean_error = metrics.hypothesis_error(torch.from_numpy(predictions["hypotheses"]).double(),
                                          torch.from_numpy(predictions["ground_truth"]).double())
    assert 1000 * mean_error.item() == pytest.approx(summary["mpjpe_mean_hypothesis"], rel=1e-5)
    figures = sorted(paths.figures.glob("s_*.png")) + [paths.figures / "summary.png"]
    assert len(figures) == 3 and all(f.stat().st_size > 10_000 for f in figures)


def test_evaluate_mpi_reports_pck_and_auc_on_14_and_17_joints(tiny_config, weights, tmp_path):
    cfg = tiny_config(tmp_path / "run", dataset="mpi", evaluation__save_predictions=str(tmp_path / "p.npz"))
    summary = evaluate(cfg, weights, device=CPU)
    saved = np.load(tmp_path / "p.npz")
    mean, target = saved["hypotheses"].mean(1), saved["ground_truth"]
    for joints, label in ((MPI_14, "14"), (range(17), "17")):
        assert summary[f"pck{label}_mean_hypothesis"] == pytest.approx(pck_percent(mean, target, 150, joints))
    assert summary["auc14_mean_hypothesis"] == pytest.approx(auc_percent(mean, target, MPI_14))
    # The root's error is exactly 0: whether it counts at the 0 mm threshold moves AUC-17 by one joint of 17 x 31.
    assert summary["auc17_mean_hypothesis"] == pytest.approx(auc_percent(mean, target, range(17)),
                                                             abs=100 / (17 * 31) + 1e-9)
    assert "per_action" not in summary


def test_mpi_pck_and_auc_of_predictions_a_known_distance_off(tiny_config, weights, tmp_path, monkeypatch):
    monkeypatch.setattr(SnapPosePipeline, "__call__", known_error_predictor)
    summary = evaluate(tiny_config(tmp_path / "run", dataset="mpi"), weights, device=CPU)
    for aggregation in metrics.AGGREGATIONS:
        assert summary[f"pck14_{aggregation}_hypothesis"] == pytest.approx(KNOWN_PCK14)
        assert summary[f"auc14_{aggregation}_hypothesis"] == pytest.approx(KNOWN_AUC14)
        assert summary[f"pck17_{aggregation}_hypothesis"] == pytest.approx(KNOWN_PCK17)


def _test_batch(cfg, batch_size):
    loader = build_loader(cfg.data.root, cfg.dataset, train=False, batch_size=batch_size, uint8_crops=False)
    return list(loader)


def test_hypotheses_do_not_depend_on_batch_size(tiny_config, weights, tmp_path):
    cfg = tiny_config(tmp_path)
    backbone, denoiser = cfg.networks(CPU)
    denoiser.load_state_dict(torch.load(weights)["model_pos"])
    denoiser.eval()
    whole = SnapPosePipeline(backbone, denoiser, TWO_BY_TWO)(_test_batch(cfg, 3)[0])
    pieces = torch.cat([SnapPosePipeline(backbone, denoiser, TWO_BY_TWO)(b) for b in _test_batch(cfg, 1)])
    torch.testing.assert_close(pieces, whole, rtol=1e-4, atol=1e-5)


def test_flip_test_averages_the_unflipped_mirror_view(tiny_config, weights, tmp_path):
    cfg = tiny_config(tmp_path)
    backbone, denoiser = cfg.networks(CPU)
    denoiser.load_state_dict(torch.load(weights)["model_pos"])
    denoiser.eval()
    batch = _test_batch(cfg, 3)[0]
    both = SnapPosePipeline(backbone, denoiser, TWO_BY_TWO)(batch)
    original = SnapPosePipeline(backbone, denoiser, TWO_BY_TWO.replace(flip=False))(batch)
    # Feeding the mirror view as view 0 gives the mirrored prediction of that view.
    swapped = dict(batch, **{k: batch[k].flip(1) for k in ("image", "keypoints_2d", "keypoints_2d_crop", "ref")})
    mirror = SnapPosePipeline(backbone, denoiser, TWO_BY_TWO.replace(flip=False))(swapped)
    expected = (original + torch.from_numpy(mirror_points(mirror)).float()) / 2
    torch.testing.assert_close(both, expected, rtol=1e-4, atol=1e-5)
    assert torch.all(both[..., 0, :] == 0)


def test_missing_backbone_weights_name_the_file_and_the_flag(tiny_config, weights, tmp_path):
    cfg = tiny_config(tmp_path / "run", weights__pretrained_backbone=True,
                      weights__backbone=str(tmp_path / "hrnet.pth"))
    with pytest.raises(FileNotFoundError, match=r"hrnet\.pth not found.*PoseHRNet-W32.*--backbone-weights"):
        evaluate(cfg, weights, device=CPU)


def test_random_backbone_is_the_same_for_training_and_evaluation(tiny_config, tmp_path):
    """Without pretrained weights the backbone is drawn from a fixed seed: every process, run and
    -seed sees the same one, while the denoiser's initial weights follow -seed."""
    torch.manual_seed(1)
    backbone_a, denoiser_a = tiny_config(tmp_path, seed=0).networks(CPU)
    torch.manual_seed(2)
    backbone_b, denoiser_b = tiny_config(tmp_path, seed=5).networks(CPU)
    for a, b in zip(backbone_a.state_dict().values(), backbone_b.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(denoiser_a.state_dict()["head.1.weight"], denoiser_b.state_dict()["head.1.weight"])

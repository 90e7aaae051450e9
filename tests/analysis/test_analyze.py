"""Reliability measures (common.analysis.reliability) and the analysis of saved predictions (common.analysis.report)."""
import json
import re

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.analysis import report as analyze
from common.analysis.reliability import (
    hypothesis_spread,
    nearest_mean,
    rank_correlation,
    reliability_curve,
    reliability_summary,
)
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.run.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")


def test_reliability_curve_keeps_the_lowest_spread_first():
    spread = np.array([3.0, 1.0, 2.0, 4.0])
    errors = np.array([30.0, 10.0, 20.0, 40.0])
    curve = reliability_curve(spread, errors, shares=(0.25, 0.5, 0.75, 1.0))
    assert [p["kept"] for p in curve] == [1, 2, 3, 4]
    assert [p["error"] for p in curve] == [10.0, 15.0, 20.0, 25.0]
    assert [p["threshold"] for p in curve] == [1.0, 2.0, 3.0, 4.0]


def test_rank_correlation_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert rank_correlation(x, x ** 3) == pytest.approx(1.0)
    assert rank_correlation(x, -x) == pytest.approx(-1.0)
    # Ties take their average rank: ranks of y are (0.5, 0.5, 2, 3, 4); Pearson of the ranks by hand.
    y = np.array([1.0, 1.0, 2.0, 3.0, 4.0])
    rx, ry = np.arange(5) - 2.0, np.array([0.5, 0.5, 2, 3, 4]) - 2.0
    assert rank_correlation(x, y) == pytest.approx((rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))
    assert np.isnan(rank_correlation(x, np.ones(5)))


def test_spread_and_nearest_mean_on_known_hypotheses():
    pose = torch.zeros(1, 4, 17, 3, dtype=torch.float64)
    pose[0, 0, :, 0] = 0.1
    pose[0, 1, :, 0] = -0.1
    pose[0, 2:, :, 0] = 0.0
    assert float(hypothesis_spread(pose)) == pytest.approx(0.05)  # distances 0.1, 0.1, 0, 0
    outlier = torch.zeros(1, 4, 17, 3, dtype=torch.float64)
    outlier[0, 3] = 1.0
    torch.testing.assert_close(nearest_mean(outlier, 75), torch.zeros(1, 17, 3, dtype=torch.float64))
    torch.testing.assert_close(nearest_mean(outlier, 100), outlier.mean(dim=1))
    torch.testing.assert_close(nearest_mean(outlier, 1), torch.zeros(1, 17, 3, dtype=torch.float64))


def test_reliability_summary_is_in_millimetres():
    summary = reliability_summary(np.array([0.002, 0.001]), np.array([0.05, 0.03]), shares=(0.5, 1.0))
    assert summary["curve"][0] == {"share_kept": 0.5, "samples_kept": 1, "spread_threshold_mm": 1.0, "mpjpe_mm": 30.0}
    assert summary["rank_correlation_spread_error"] == pytest.approx(1.0)


def _numbers(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _numbers(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def test_analyze_reproduces_the_evaluation_metrics(tiny_config, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", evaluation__save_predictions=str(tmp_path / "p.npz"),
                      evaluation__num_proposals=4, data__eval_batch_size=2)
    _, denoiser = build_model(cfg.model)
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser)
    evaluate(cfg, weights, device=torch.device("cpu"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert "reliability" in metrics and len(metrics["reliability"]["curve"]) == 10
    capsys.readouterr()
    assert analyze.main([str(tmp_path / "p.npz"), "--out", str(tmp_path / "analysis")]) == 0
    printed = capsys.readouterr().out
    assert "P-MPJPE (mm)" in printed and "share kept" in printed and "nearest the mean" in printed
    analysed = json.loads((tmp_path / "analysis" / "analysis.json").read_text())["metrics"]
    expected = {k: v for k, v in _numbers(metrics).items()
                if not k.startswith(("epoch", "sampling.", "skipped_samples", "num_shards"))}
    found = _numbers(analysed)
    assert expected and set(expected) <= set(found)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, abs=1e-6), key
    # k = 100 % is the mean hypothesis.
    assert analysed["nearest_mean"][-1]["mpjpe_mm"] == pytest.approx(metrics["mpjpe_mean_hypothesis"], abs=1e-6)
    assert (tmp_path / "analysis" / "reliability.png").stat().st_size > 1000


def test_analyze_names_a_bad_file(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", keys=np.array(["a"]))
    assert analyze.main([str(tmp_path / "bad.npz")]) == 2
    assert "lacks ['ground_truth', 'hypotheses']" in capsys.readouterr().err


def _predictions(n=3, h=2):
    rng = np.random.default_rng(0)
    return dict(keys=np.array([f"S9_Directions_1.54138969_{i:06d}" for i in range(n)]),
                hypotheses=rng.normal(0, 0.3, (n, h, 17, 3)).astype(np.float32),
                ground_truth=rng.normal(0, 0.3, (n, 17, 3)).astype(np.float32))


@pytest.mark.parametrize("change, message", [
    ("not_npz", "cannot read predictions file .*: not a readable npz archive"),
    ("npy", "cannot read predictions file .*: a single .npy array"),
    ("pickled", "no pickled objects: such files are refused"),
    ("nan", r"'hypotheses' holds NaN or infinite values in 1 samples .first keys \['S9_Directions_1.54138969_000001'\]"),
    ("inf_truth", "'ground_truth' holds NaN or infinite"),
    ("missing", r"lacks \['ground_truth'\]"),
    ("strings", "'hypotheses' must be floats"),
    ("empty", "holds no samples"),
])
def test_analyze_refuses_predictions_that_are_not_ours_or_would_score_wrong(tmp_path, capsys, change, message):
    path = tmp_path / "predictions.npz"
    arrays = _predictions()
    if change == "not_npz":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif change == "npy":
        np.save(path.with_suffix(".npy"), arrays["hypotheses"])
        path.with_suffix(".npy").rename(path)
    else:
        if change == "pickled":
            arrays["keys"] = np.array([{"key": 1}] * 3, dtype=object)
        elif change == "nan":
            arrays["hypotheses"][1, 0, 4, 2] = np.nan
        elif change == "inf_truth":
            arrays["ground_truth"][0, 0, 0] = np.inf
        elif change == "missing":
            del arrays["ground_truth"]
        elif change == "strings":
            arrays["hypotheses"] = np.full((3, 2, 17, 3), "x")
        elif change == "empty":
            arrays = _predictions(n=0)
        np.savez(path, **arrays)
    assert analyze.main([str(path), "--out", str(tmp_path / "analysis")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "analysis").exists()

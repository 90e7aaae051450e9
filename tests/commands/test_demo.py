"""The embedded demo, end to end on a few synthetic samples, and its baseline comparison."""
import json

import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common import demo


def test_comparison_table_scores_baseline_and_model():
    target = torch.randn(5, 17, 3, dtype=torch.float64) * 0.2
    target[:, 0] = 0
    rows = demo.comparison_table(predicted=target.clone(), baseline=target[0], target=target)
    (base_name, *base), (model_name, *model) = rows
    assert "baseline" in base_name and "SnapPose" in model_name
    assert model == pytest.approx([0.0, 0.0, 0.0], abs=1e-6), "exact predictions score 0 mm"
    assert all(value > 10 for value in base), "a constant pose is far from varied targets"


def test_demo_runs_end_to_end_on_a_few_samples(tmp_path, capsys, single_thread):
    out, data = tmp_path / "out", tmp_path / "data"
    code = demo.main(["--data", str(data), "--out", str(out), "--train-samples", "8", "--test-samples", "4",
                      "--epochs", "1", "--device", "cpu", "--lift-images", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean training pose (baseline)" in printed and "SnapPose, mean of hypotheses" in printed
    assert "x the baseline's" in printed
    metrics = json.loads((out / "checkpoint" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 4 and metrics["sampling"]["hypotheses"] == 20
    assert (out / "predictions.npz").is_file()
    # The demo validates after its last epoch, so the best checkpoint the README promises exists.
    assert (out / "checkpoint" / "best_h36m.bin").is_file()
    assert "evaluating best_h36m.bin" in printed
    assert (data / "manifest.json").is_file() and list((data / "train").glob("data-*.tar"))
    # The demo ends by lifting validation images through common.infer and says where the pictures are.
    assert len(list((out / "inference" / "figures").glob("*.png"))) == 2
    assert f"inference:   {out / 'inference' / 'figures'}" in printed

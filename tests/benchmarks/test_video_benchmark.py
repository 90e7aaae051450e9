"""benchmarks.video: its measures on known values, and one tiny run that scores both clips (then again with --reuse)."""
import json

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from benchmarks import video
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import config_to_dict

pytestmark = pytest.mark.usefixtures("single_thread")


def test_acceleration_error_known_values():
    t = np.arange(10, dtype=np.float64)
    truth = np.zeros((10, 17, 3))
    assert video.acceleration_error(truth + 0.5 * t[:, None, None] ** 2, truth) == pytest.approx(np.sqrt(3))
    assert video.acceleration_error(truth + 3.0 * t[:, None, None], truth) == pytest.approx(0.0)  # constant velocity


def test_identity_switches_counts_changes_of_a_persons_track():
    frames = np.array([0, 0, 1, 1, 2, 2])
    identities = np.array([0, 1, 1, 0, 0, 1])
    assert video.identity_switches(np.array([5, 6, 6, 5, 5, 6]), identities, frames) == 0
    assert video.identity_switches(np.array([5, 6, 5, 6, 5, 6]), identities, frames) == 4


def test_tiny_run_scores_both_clips(tiny_config, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", evaluation__num_proposals=2, evaluation__timesteps=1)
    _, denoiser = build_model(cfg.model)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "run" / "best_h36m.bin", denoiser, epoch=1, config=config_to_dict(cfg))
    common = ["--checkpoint", str(weights), "--out", str(tmp_path / "bench"), "--frames", "4", "--seeds", "0"]
    assert video.main(common + ["--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["clip"], r["people"], r["frames"]) for r in rows] == [("one person", 1, 4), ("two crossing", 2, 4)]
    assert all(r["frames_per_second"] > 0 and r["mpjpe_raw"] > 0 and r["bvh_distance_mm"] >= 0 for r in rows)
    assert video.main(common + ["--reuse", "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [r["mpjpe_savgol"] for r in again] == [r["mpjpe_savgol"] for r in rows]
    assert "MPJPE raw" in capsys.readouterr().out

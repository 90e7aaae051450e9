"""Where ``--evaluate`` writes: beside the evaluated checkpoint unless -c says otherwise; -s with --save-predictions.

MPI-INF-3DHP, whose summary figure (the PCK curve) needs per-joint errors gathered during the evaluation."""
import json
import logging

import numpy as np
import pytest
from model_fixtures import single_thread  # noqa: F401

import main_diffusers_mpi
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import save_config

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def trained(tiny_config, tmp_path, monkeypatch):
    """(config file naming a relative checkpoint folder, a checkpoint in another folder); cwd is an empty folder."""
    cfg = tiny_config("checkpoint/mpi", dataset="mpi")
    config = save_config(cfg, tmp_path / "tiny.yaml")
    _, denoiser = build_model(cfg.model)
    weights = save_checkpoint(tmp_path / "runs" / "trained" / "best_mpi.bin", denoiser)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return str(config), weights


def test_evaluate_writes_beside_the_evaluated_checkpoint(trained, tmp_path, caplog):
    config, weights = trained
    with caplog.at_level(logging.WARNING):
        assert main_diffusers_mpi.main(["--config", config, "--evaluate", str(weights), "--max-samples", "1",
                                         "--visualize", "1", "-s", "--save-predictions", "mine.npz"]) == 0
    metrics = json.loads((weights.parent / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 1
    assert list((weights.parent / "figures").glob("TS*.png")) and (weights.parent / "figures" / "summary.png").is_file()
    # -s does not silently lose to --save-predictions: the file it names is written, and the log says why not -s's.
    assert np.load(tmp_path / "cwd" / "mine.npz")["hypotheses"].shape[0] == 1
    assert "-s: predictions go to mine.npz" in caplog.text
    assert sorted(p.name for p in (tmp_path / "cwd").iterdir()) == ["mine.npz"]


def test_evaluate_with_explicit_checkpoint_folder_writes_there(trained, tmp_path):
    config, weights = trained
    out = tmp_path / "chosen"
    assert main_diffusers_mpi.main(["--config", config, "-c", str(out), "--evaluate", str(weights),
                                     "--max-samples", "1", "-s"]) == 0
    assert (out / "metrics.json").is_file() and not (weights.parent / "metrics.json").exists()
    assert np.load(out / "predictions" / "predictions_mpi.npz")["keys"].shape == (1,)

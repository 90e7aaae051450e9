"""Several processes: the helpers as one process, and two CPU processes (gloo) under torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.model.checkpoints import read_checkpoint
from common.pipeline.config import save_config
from common.run import distributed
from common.run.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_single_process_helpers_pass_values_through(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed("cpu") == torch.device("cpu")
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()) == (0, 1, True)
    arrays = {"x": np.arange(3), "keys": ["a", "b", "c"]}
    gathered = distributed.gather_arrays(arrays)
    assert np.array_equal(gathered["x"], arrays["x"]) and gathered["keys"] == arrays["keys"]
    assert distributed.all_reduce_mean(2.5) == 2.5


def test_launcher_environment_without_rendezvous_is_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR.*torchrun --nproc_per_node"):
        distributed.init_distributed("cpu")


def _torchrun(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "main_diffusers_h36m.py", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_two_processes_train_and_evaluate_every_sample_once(tiny_config, tiny_shards, tmp_path):
    cfg = tiny_config(tmp_path / "one", train__epochs=1, train__validate_every=1)
    config = str(save_config(cfg, tmp_path / "tiny.yaml"))
    root = str(tiny_shards["h36m"])
    ck = tmp_path / "two"
    # Two training processes: one shard each, gradients averaged; rank 0 alone writes.
    output = _torchrun(["--config", config, "-c", str(ck), "-w", root, "--device", "cpu"], REPO_ROOT).stderr
    trained = read_checkpoint(ck / "latest_epoch.bin")
    assert trained["epoch"] == 1 and len(trained["rng"]) == 2
    assert (ck / "best_h36m.bin").is_file()
    assert not list(ck.glob(".*.tmp-*"))
    epoch_lines = [line for line in (ck / "training_log.txt").read_text().splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 1
    # Rank 0 alone warns and draws bars; its bars count its own share (2 of the 4 training
    # samples, 2 of the 3 validation samples) and end on the loss the log records for all processes.
    assert output.count("backbone weights: none loaded") == 1
    assert output.count("training h36m for 1 epochs") == 1
    assert "epoch 1/1: 100%" in output and "validate 1: 100%" in output
    assert {bar.split("|")[2].split()[0] for bar in output.replace("\r", "\n").splitlines()
            if "100%|" in bar} == {"2/2"}
    assert f"loss={epoch_lines[0].split('loss ')[1].split()[0]}" in output

    # Evaluation: 3 test samples split 2 + 1 over the processes, gathered once each;
    # the noise is seeded per sample, so the metrics equal a single process's.
    _torchrun(["--config", config, "-c", str(ck), "-w", root, "--device", "cpu",
               "--evaluate", "latest_epoch.bin", "-s"], REPO_ROOT)
    two = json.loads((ck / "metrics.json").read_text())["metrics"]
    one = evaluate(tiny_config(tmp_path / "one"), ck / "latest_epoch.bin", device=torch.device("cpu"))
    assert two["num_samples"] == one["num_samples"] == 3
    for name in ("mpjpe_mean_hypothesis", "p_mpjpe_best_pose_hypothesis", "mpjpe_best_joint_hypothesis"):
        assert two[name] == pytest.approx(one[name], rel=1e-4)
    predictions = np.load(ck / "predictions" / "predictions_h36m.npz")
    assert sorted(predictions["keys"]) == sorted(set(predictions["keys"])) and len(predictions["keys"]) == 3


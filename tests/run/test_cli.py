"""The entry scripts: the original flags, the original README's commands on tiny shards, and clear errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401
from reference import KNOWN_PCK14, known_error_predictor

import main_diffusers_h36m
import main_diffusers_mpi
from common.model.checkpoints import read_checkpoint
from common.pipeline import SnapPosePipeline
from common.pipeline.config import save_config
from common.run.cli import build_parser, overrides_from_args

pytestmark = pytest.mark.usefixtures("single_thread")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_original_readme_command_parses_to_the_right_settings():
    args = build_parser("h36m").parse_args(
        "--config config/human36m_train.yaml -c checkpoint/human36m -w WDS --evaluate best_h36m.bin "
        "-num_proposals 20 -timesteps 20".split())
    assert args.config == "config/human36m_train.yaml" and args.evaluate == "best_h36m.bin"
    assert overrides_from_args(args) == {"checkpoint": "checkpoint/human36m", "data.root": "WDS",
                                         "evaluation.num_proposals": 20, "evaluation.timesteps": 20}


def test_every_original_flag_reaches_the_config():
    args = build_parser("mpi").parse_args(
        "-c ck -cf 3 -l tb -r latest_epoch.bin -e 7 -lr 1e-4 -lrd 0.9 -num_proposals 5 -timesteps 4 "
        "-s -w root -seed 11 --visualize".split())
    assert overrides_from_args(args) == {
        "checkpoint": "ck", "train.checkpoint_frequency": 3, "log": "tb", "train.epochs": 7, "train.lr": 1e-4,
        "train.lr_decay": 0.9, "evaluation.num_proposals": 5, "evaluation.timesteps": 4, "data.root": "root",
        "seed": 11, "evaluation.visualize": 8}
    assert args.resume == "latest_epoch.bin" and args.save


def test_new_flags_reach_the_config():
    args = build_parser("h36m").parse_args(
        "--backbone-weights b.pth --context-weights c.bin --device cpu -b 4 --eval-batch-size 2 -j 0 "
        "--max-samples 10 --validate-every 2 --val-timesteps 3 --val-proposals 4 --save-predictions p.npz "
        "--no-flip-test --skip-bad".split())
    assert overrides_from_args(args) == {
        "weights.backbone": "b.pth", "weights.context": "c.bin", "device": "cpu", "data.batch_size": 4,
        "data.eval_batch_size": 2, "data.num_workers": 0, "data.max_train_samples": 10,
        "data.max_eval_samples": 10, "train.validate_every": 2, "train.val_timesteps": 3,
        "train.val_proposals": 4, "evaluation.save_predictions": "p.npz", "evaluation.flip_test": False,
        "data.skip_bad": True}


def test_importing_the_entry_scripts_runs_nothing():
    result = subprocess.run([sys.executable, "-c", "import main_diffusers_h36m, main_diffusers_mpi"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


@pytest.fixture
def tiny_yaml(tiny_config, tmp_path):
    """A config file of the tiny model (no pretrained weights); flags name the folders."""
    def write(dataset="h36m"):
        cfg = tiny_config("unset", dataset=dataset)
        cfg.data.root = "unset"
        return str(save_config(cfg, tmp_path / f"tiny_{dataset}.yaml"))
    return write


def test_original_commands_train_resume_and_evaluate(tiny_yaml, tiny_shards, tmp_path, capsys):
    config, root, ck = tiny_yaml(), str(tiny_shards["h36m"]), tmp_path / "checkpoint" / "human36m"
    assert main_diffusers_h36m.main(["--config", config, "-c", str(ck), "-w", root, "-e", "1"]) == 0
    assert read_checkpoint(ck / "latest_epoch.bin")["epoch"] == 1 and (ck / "best_h36m.bin").is_file()
    assert main_diffusers_h36m.main(["--config", config, "-c", str(ck), "-w", root, "-e", "2",
                                     "-r", "latest_epoch.bin"]) == 0
    assert read_checkpoint(ck / "latest_epoch.bin")["epoch"] == 2
    capsys.readouterr()
    # The README's evaluation command; the file is looked up inside the -c directory.
    assert main_diffusers_h36m.main(["--config", config, "-c", str(ck), "-w", root, "--evaluate", "best_h36m.bin",
                                     "-num_proposals", "20", "-timesteps", "20", "-s", "--visualize", "1"]) == 0
    assert "MPJPE" in capsys.readouterr().out
    metrics = json.loads((ck / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 3 and (metrics["sampling"]["hypotheses"], metrics["sampling"]["steps"]) == (20, 20)
    assert np.isfinite(metrics["mpjpe_mean_hypothesis"]) and np.isfinite(metrics["p_mpjpe_mean_hypothesis"])
    assert np.load(ck / "predictions" / "predictions_h36m.npz")["hypotheses"].shape == (3, 20, 17, 3)
    assert len(list((ck / "figures").glob("s_*.png"))) == 1 and (ck / "figures" / "summary.png").is_file()
    saved = (ck / "config.yaml").read_text()
    assert f"root: {root}" in saved and "epochs: 2" in saved


def test_mpi_script_evaluates_a_path(tiny_yaml, tiny_shards, tmp_path, tiny_config, monkeypatch):
    from common.model.checkpoints import save_checkpoint
    from common.model.networks import build_model

    _, denoiser = build_model(tiny_config("unset").model)
    weights = save_checkpoint(tmp_path / "elsewhere" / "best_mpi.bin", denoiser)
    ck = tmp_path / "ck"
    monkeypatch.setattr(SnapPosePipeline, "__call__", known_error_predictor)  # known PCK
    assert main_diffusers_mpi.main(["--config", tiny_yaml("mpi"), "-c", str(ck), "-w", str(tiny_shards["mpi"]),
                                    "--evaluate", str(weights), "--no-flip-test"]) == 0
    metrics = json.loads((ck / "metrics.json").read_text())["metrics"]
    assert metrics["pck14_mean_hypothesis"] == pytest.approx(KNOWN_PCK14) and not metrics["sampling"]["flip"]


def test_errors_name_the_problem(tiny_yaml, tiny_shards, tmp_path, capsys, caplog):
    config, root = tiny_yaml(), str(tiny_shards["h36m"])
    with pytest.raises(SystemExit) as exit_info:
        main_diffusers_h36m.main(["--config", config, "-c", str(tmp_path), "--evaluate", "best_h36m.bin"])
    assert exit_info.value.code == 2
    assert f"neither as given nor as {tmp_path / 'best_h36m.bin'}" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {epochs: 1}\n")
    with pytest.raises(SystemExit):
        main_diffusers_h36m.main(["--config", str(bad)])
    assert "unknown config key 'trian'" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main_diffusers_h36m.main(["--config", str(REPO_ROOT / "config" / "mpi_train.yaml")])
    assert "is for dataset 'mpi'" in capsys.readouterr().err

    missing = tmp_path / "nowhere" / "pose_hrnet_w32_256x192.pth"
    with open(tmp_path / "pretrained.yaml", "w") as handle:
        handle.write(Path(config).read_text().replace("pretrained_backbone: false", "pretrained_backbone: true"))
    status = main_diffusers_h36m.main(["--config", str(tmp_path / "pretrained.yaml"), "-c", str(tmp_path / "ck"),
                                       "-w", root, "--backbone-weights", str(missing)])
    assert status == 2
    assert f"weight file {missing} not found" in caplog.text and "--backbone-weights" in caplog.text


@pytest.mark.slow
def test_original_readme_commands_as_subprocesses(tiny_yaml, tiny_shards, tmp_path):
    """``python main_diffusers_h36m.py ...`` as a user types it, training then evaluating."""
    config, root, ck = tiny_yaml(), str(tiny_shards["h36m"]), tmp_path / "checkpoint"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for extra in (["-e", "1"], ["--evaluate", "best_h36m.bin", "-num_proposals", "20", "-timesteps", "20"]):
        result = subprocess.run([sys.executable, "main_diffusers_h36m.py", "--config", config, "-c", str(ck),
                                 "-w", root, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                                env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    assert torch.isfinite(torch.tensor(json.loads((ck / "metrics.json").read_text())["metrics"]
                                       ["mpjpe_mean_hypothesis"]))

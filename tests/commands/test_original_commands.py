"""The original README's four commands, copied verbatim (WDS_PATH replaced), on files where it says to put them.

Each command runs with its working directory set to a folder laid out as the
original README says: ``config/human36m_train.yaml``, the PoseHRNet weights in
``checkpoint/posehrnet/``, the two CA-PF files in ``checkpoint/``, the released
SnapPose files in ``checkpoint/human36m/`` and ``checkpoint/mpi-inf-3dhpe/``; and
tiny shards in the released layout as WDS_PATH.

The fast tests use this repository's ``config/human36m_train.yaml`` with its
model shrunk, no loader workers and the backbone features cached (what a CPU
cannot afford; the schedule, validation and sampling stay as shipped), and
weight files of the same layouts at the shrunk sizes. The slow tests use the
file as shipped and full-size weight files of the released layouts, and run the
commands as a shell would. Of the two 50-epoch training commands, the MPI one
(which this config used to refuse) runs fast; the Human3.6M one is also run by
``tests/run/test_cli.py`` with a short schedule.
"""
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from model_fixtures import random_state_dict, single_thread, write_contextpose, write_hrnet, write_snappose  # noqa: F401

import main_diffusers_h36m
import main_diffusers_mpi
from common.model.checkpoints import CONTEXT_PREFIXES, read_checkpoint, require_weight_file
from common.model.networks import ModelConfig, build_model
from common.pipeline.config import load_config

pytestmark = pytest.mark.usefixtures("single_thread")
REPO_ROOT = Path(__file__).resolve().parents[2]
ORIGINAL_README = REPO_ROOT.parent / "shared" / "original" / "README.md"

# Verbatim from the original README (sections 2 and 3), line breaks and trailing characters included.
TRAIN_H36M = ("python main_diffusers_h36m.py --config config/human36m_train.yaml -w WDS_PATH -e 50 "
              "-c checkpoint/human36m ")
TRAIN_MPI = ("python main_diffusers_mpi.py --config config/human36m_train.yaml -w WDS_PATH -e 50 "
             "-c checkpoint/mpi-inf-3dhpe ")
TEST_H36M = ("python main_diffusers_h36m.py --config config/human36m_train.yaml -c checkpoint/human36m -w WDS_PATH \\\n"
             "                                                        --evaluate best_h36m.bin -num_proposals 20 "
             "-timesteps 20 ")
TEST_MPI = ("python main_diffusers_mpi.py --config config/human36m_train.yaml -c checkpoint/mpi-inf-3dhpe -w WDS_PATH "
            "\\\n                                                       --evaluate best_mpi.bin -num_proposals 20 "
            "-timesteps 20\\")
COMMANDS = {"train_h36m": TRAIN_H36M, "train_mpi": TRAIN_MPI, "test_h36m": TEST_H36M, "test_mpi": TEST_MPI}
DATASET = {"train_h36m": "h36m", "train_mpi": "mpi", "test_h36m": "h36m", "test_mpi": "mpi"}
SCRIPTS = {"main_diffusers_h36m.py": main_diffusers_h36m.main, "main_diffusers_mpi.py": main_diffusers_mpi.main}
RUN_DIRS = {"h36m": "checkpoint/human36m", "mpi": "checkpoint/mpi-inf-3dhpe"}
BEST = {"h36m": "best_h36m.bin", "mpi": "best_mpi.bin"}
CONTEXT_FILES = {"h36m": "human36m_nips_retrain.bin", "mpi": "mpi-inf_nips_retrain.bin"}
TINY_MODEL = {"backbone_width": 8, "backbone_stem_width": 16, "embed_dim": 32, "res_depth": 1, "joint_depth": 1,
              "drop_path_rate": 0.0}


def argv_of(command, wds_path):
    """The argument list a shell gives the script: line continuations joined, WDS_PATH replaced."""
    text = command.replace("\\\n", " ").rstrip("\\").replace("WDS_PATH", shlex.quote(str(wds_path)))
    python, script, *argv = shlex.split(text)
    assert python == "python"
    return script, argv


def context_state(denoiser, backbone, seed):
    """A CA-PF file's tensors: its HRNet under module.backbone., seeded context layers under module.volume_net."""
    state = {f"module.backbone.{k}": v for k, v in backbone.state_dict().items()}
    context = {k: v for k, v in denoiser.state_dict().items() if k.startswith(CONTEXT_PREFIXES)}
    state.update({f"module.volume_net.{k}": v for k, v in
                  random_state_dict([(k, v.shape) for k, v in context.items()], seed=seed).items()})
    return state


def lay_out(root, model):
    """Write config/human36m_train.yaml and the weight files where the original README puts them.

    ``model`` None: the shipped config as is and full-size files; else the
    ModelConfig overrides of a shrunk model.
    Returns the denoiser state dicts written into the two CA-PF files, by dataset.
    """
    (root / "config").mkdir(parents=True)
    shipped = REPO_ROOT / "config" / "human36m_train.yaml"
    if model is None:
        (root / "config" / "human36m_train.yaml").write_text(shipped.read_text())
    else:
        values = yaml.safe_load(shipped.read_text())
        values["model"].update(model)
        values["data"]["num_workers"] = 0
        values["train"]["cache_features"] = True
        (root / "config" / "human36m_train.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    backbone, denoiser = build_model(ModelConfig(**(model or {})))
    (root / "checkpoint" / "posehrnet").mkdir(parents=True)
    write_hrnet(root / "checkpoint" / "posehrnet" / "pose_hrnet_w32_256x192.pth", backbone.state_dict())
    contexts = {}
    for seed, dataset in enumerate(("h36m", "mpi")):
        state = context_state(denoiser, backbone, seed=10 + seed)
        write_contextpose(root / "checkpoint" / CONTEXT_FILES[dataset], state)
        contexts[dataset] = {k[len("module.volume_net."):]: v for k, v in state.items() if "volume_net" in k}
        (root / RUN_DIRS[dataset]).mkdir(parents=True)
        write_snappose(root / RUN_DIRS[dataset] / BEST[dataset], denoiser.state_dict(), epoch=49)
    return contexts


@pytest.fixture
def original_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path, lay_out(tmp_path, TINY_MODEL)


def test_the_commands_are_the_original_readmes():
    if not ORIGINAL_README.is_file():
        pytest.skip(f"the original README is not at {ORIGINAL_README}")
    text = ORIGINAL_README.read_text()
    for name, command in COMMANDS.items():
        assert command in text, f"{name} is not verbatim in the original README"


def test_backbone_weights_are_found_in_either_place_and_a_miss_lists_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO_ROOT / "config" / "human36m_train.yaml", dataset="mpi")
    with pytest.raises(FileNotFoundError) as missing:
        require_weight_file(cfg.backbone_weights, "backbone")
    for place in ("checkpoint/pose_hrnet_w32_256x192.pth", "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth"):
        assert place in str(missing.value)
    original = tmp_path / "checkpoint" / "posehrnet" / "pose_hrnet_w32_256x192.pth"
    original.parent.mkdir(parents=True)
    original.write_bytes(b"")
    assert require_weight_file(cfg.backbone_weights, "backbone") == Path("checkpoint/posehrnet/pose_hrnet_w32_256x192.pth")
    ours = tmp_path / "checkpoint" / "pose_hrnet_w32_256x192.pth"
    ours.write_bytes(b"")
    assert require_weight_file(cfg.backbone_weights, "backbone") == Path("checkpoint/pose_hrnet_w32_256x192.pth")


@pytest.mark.parametrize("name", ["test_h36m", "test_mpi"])
def test_original_evaluation_commands(name, original_layout, tiny_shards, capsys, caplog):
    root, _ = original_layout
    dataset = DATASET[name]
    script, argv = argv_of(COMMANDS[name], tiny_shards[dataset])
    with caplog.at_level(logging.INFO):
        assert SCRIPTS[script](argv) == 0
    printed = capsys.readouterr().out
    assert "MPJPE (mm)" in printed
    if dataset == "mpi":
        assert "PCK14 (%)" in printed and "AUC14 (%)" in printed
    assert "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth" in caplog.text
    split = "validation" if dataset == "h36m" else "test"
    assert f"reads 1 shard(s) of split '{split}'" in caplog.text
    metrics = root / RUN_DIRS[dataset] / f"metrics_{BEST[dataset].replace('.bin', '')}.json"
    assert metrics.is_file() and (root / RUN_DIRS[dataset] / "metrics.json").is_file()


@pytest.mark.parametrize("name", [pytest.param("train_h36m", marks=pytest.mark.slow), "train_mpi"])
def test_original_training_commands(name, original_layout, tiny_shards):
    root, contexts = original_layout
    dataset = DATASET[name]
    script, argv = argv_of(COMMANDS[name], tiny_shards[dataset])
    assert SCRIPTS[script](argv) == 0
    run = root / RUN_DIRS[dataset]
    assert read_checkpoint(run / "latest_epoch.bin")["epoch"] == 50
    best = read_checkpoint(run / BEST[dataset])
    assert best["epoch"] % 5 == 0 and "val_metrics" in best
    # The context weights follow the script: the CA-PF file of this dataset, frozen throughout.
    trained = best["model_pos"]
    for key, value in contexts[dataset].items():
        assert torch.equal(trained[key], value), key
    other = contexts["h36m" if dataset == "mpi" else "mpi"]
    assert not all(torch.equal(trained[k], v) for k, v in other.items())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_original_commands_full_size_in_a_shell(name, tmp_path, tiny_shards):
    """As a user types them, with the shipped config and full-size files of the released layouts."""
    lay_out(tmp_path, None)
    for file in ("main_diffusers_h36m.py", "main_diffusers_mpi.py"):
        (tmp_path / file).write_text((REPO_ROOT / file).read_text())
    command = COMMANDS[name].replace("WDS_PATH", shlex.quote(str(tiny_shards[DATASET[name]])))
    command = command.replace("python ", shlex.quote(sys.executable) + " ", 1)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="2")
    result = subprocess.run(["bash", "-c", command + "\n"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=3600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    if name.startswith("test"):
        assert "MPJPE (mm)" in result.stdout
        if DATASET[name] == "mpi":
            assert "PCK14 (%)" in result.stdout
    else:
        assert (tmp_path / RUN_DIRS[DATASET[name]] / BEST[DATASET[name]]).is_file()

"""Config files in the original repository's format: meaningful keys mapped, the rest ignored once."""
import logging
from pathlib import Path

import pytest
import yaml

from common.core.errors import ConfigError
from common.pipeline.config import DEFAULT_BACKBONE_WEIGHTS, Config, load_config
from common.pipeline.original_config import is_original_format

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

# The sections and key names of the original's config/human36m_train.yaml (Context-Aware
# PoseFormer's loader), with values changed from the defaults so that each mapping shows.
ORIGINAL_FORMAT = """\
title: "human36m_vol_softmax_single"
kind: "human36m"
azureroot: ""
model:
  name: "vol"
  image_shape: [192, 256]
  checkpoint: ""
  backbone:
    name: "resnet152"
    num_joints: 17
    fix_weights: true
    checkpoint: "{backbone}"
  volume_net:
    volume_size: 64
    temperature: 1500
  poseformer:
    embed_dim_ratio: 128
    depth: 4
    levels: 4
    mask_pose: false
    mask_context: true
    shuffle_context: false
loss:
  criterion: "MPJPE"
dataset:
  kind: "human36m"
  root: "datasets/Human3.6M/images/"
train:
  n_epochs: 9999
  batch_size: 96
  optimizer: 'Adam'
  num_workers: 3
val:
  batch_size: 48
  flip_test: false
  num_workers: 6
  retain_every_n_frames_in_test: 1
"""


def write(tmp_path, text, name="human36m_train.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_meaningful_keys_are_mapped_and_the_script_decides_the_dataset(tmp_path, dataset):
    cfg = load_config(write(tmp_path, ORIGINAL_FORMAT.format(backbone="nowhere/hrnet.pth")), dataset=dataset)
    assert cfg.dataset == dataset
    assert (cfg.model.mask_pose, cfg.model.mask_context, cfg.model.shuffle_context) == (False, True, False)
    assert (cfg.model.embed_dim, cfg.model.res_depth, cfg.model.joint_depth) == (128, 4, 4)
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.num_workers) == (96, 48, 3)
    assert cfg.evaluation.flip_test is False
    # Nothing else moves: the training schedule and sampling stay the original's defaults.
    assert cfg.train == Config().train
    assert cfg.evaluation.num_proposals == 20 and cfg.evaluation.timesteps == 20


def test_ignored_keys_are_listed_once_in_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        load_config(write(tmp_path, ORIGINAL_FORMAT.format(backbone="nowhere/hrnet.pth")), dataset="h36m")
    ignored = [r.getMessage() for r in caplog.records if "are ignored" in r.getMessage()]
    assert len(ignored) == 1
    for key in ("title", "loss.criterion", "dataset.root", "train.n_epochs", "model.volume_net.temperature",
                "val.retain_every_n_frames_in_test", "val.num_workers", "model.image_shape"):
        assert key in ignored[0]
    for mapped in ("train.batch_size", "val.flip_test", "model.poseformer.mask_context"):
        assert mapped + "," not in ignored[0] and not ignored[0].endswith(mapped)


def test_backbone_checkpoint_is_used_when_it_exists(tmp_path, caplog):
    weights = tmp_path / "hrnet.pth"
    weights.write_bytes(b"")
    cfg = load_config(write(tmp_path, ORIGINAL_FORMAT.format(backbone=weights)), dataset="h36m")
    assert cfg.backbone_weights == (str(weights),)

    # The original's ablation configs name a path that exists nowhere else; the original code loaded
    # checkpoint/posehrnet/... whatever the key said, so the default places are searched instead.
    with caplog.at_level(logging.WARNING):
        cfg = load_config(write(tmp_path, ORIGINAL_FORMAT.format(backbone="ContextPose/data/x.pth")), dataset="h36m")
    assert cfg.backbone_weights == DEFAULT_BACKBONE_WEIGHTS
    assert "ContextPose/data/x.pth does not exist" in caplog.text


def test_levels_other_than_four_are_refused(tmp_path):
    text = ORIGINAL_FORMAT.format(backbone="x").replace("levels: 4", "levels: 3")
    with pytest.raises(ConfigError, match="levels = 3.*4 context levels"):
        load_config(write(tmp_path, text), dataset="h36m")


def test_our_format_stays_strict(tmp_path):
    for name in ("human36m_train.yaml", "mpi_train.yaml", "synthetic_demo.yaml", "human36m_mask_pose_train.yaml"):
        assert not is_original_format(yaml.safe_load((CONFIG_DIR / name).read_text()))
    with pytest.raises(ConfigError, match="unknown config key 'model.mask_poses'"):
        load_config(write(tmp_path, "model:\n  mask_poses: true\n"), dataset="h36m")


@pytest.mark.parametrize("key, value, expected", [
    ("model.poseformer.embed_dim_ratio", "abc", "integer >= 1"),
    ("model.poseformer.embed_dim_ratio", "-8", "integer >= 1"),
    ("model.poseformer.depth", "0", "integer >= 1"),
    ("model.poseformer.depth", "2.5", "integer >= 1"),
    ("model.poseformer.mask_pose", "'no'", "expected true or false"),
    ("train.batch_size", "'64'", "integer >= 1"),
    ("train.batch_size", "true", "integer >= 1"),
    ("train.num_workers", "-3", "integer >= 0"),
    ("val.flip_test", "1", "expected true or false"),
    ("model.backbone.checkpoint", "123", "expected a file path"),
])
def test_wrong_types_and_out_of_range_values_name_the_original_key(tmp_path, key, value, expected):
    *sections, leaf = key.split(".")
    text = "title: x\n" + "".join(f"{'  ' * depth}{name}:\n" for depth, name in enumerate(sections))
    path = write(tmp_path, text + f"{'  ' * len(sections)}{leaf}: {value}\n")
    with pytest.raises(ConfigError, match=f"{key} = .*{expected}"):
        load_config(path)

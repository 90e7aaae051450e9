"""Careless inputs end in a clear error before any work: crop boxes off the frame, wrong devices and
learning rates, folders where files belong and files where folders belong."""
import logging
import os
import pickle

import numpy as np
import pytest
from data_helpers import FRAME_HEIGHT, FRAME_WIDTH, h36m_key, make_h36m_sample, write_shard
from model_fixtures import single_thread  # noqa: F401

import main_diffusers_h36m
from common.core.errors import ConfigError
from common.data.loader import build_loader
from common.data.samples import ShardDataError, decode_sample
from common.model.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import load_config, save_config

BAD_BOXES = {
    "far away": ([1e7, 1e7], [1.0, 1.3]),
    "huge": ([160.0, 120.0], [1e6, 1.3e6]),
    "almost empty": ([160.0, 120.0], [1e-6, 1e-6]),
    "negative": ([160.0, 120.0], [-1.0, 1.3]),
    # A normal-sized box just beyond the right edge of the 320-pixel frame.
    "beside the frame": ([FRAME_WIDTH + 120.0, 120.0], [1.0, 1.3]),
}


def _sample(index, center=None, scale=None):
    sample = make_h36m_sample(h36m_key(9, 2, index), np.random.default_rng(index))
    if center is not None:
        sample["pyd"] = {**sample["pyd"], "center": np.float32(center), "scale": np.float32(scale)}
    return {**sample, "pyd": pickle.dumps(sample["pyd"]), "__url__": "shard.tar"}


@pytest.mark.parametrize("case", BAD_BOXES)
def test_a_crop_box_off_the_frame_or_of_absurd_size_is_a_bad_sample(case):
    center, scale = BAD_BOXES[case]
    with pytest.raises(ShardDataError, match="crop box") as error:
        decode_sample(_sample(0, center, scale), "h36m", train=False)
    assert error.value.key == h36m_key(9, 2, 0) and "shard.tar" in str(error.value)


def test_boxes_that_overlap_the_frame_are_kept():
    # Half outside on the left and top, and a box as large as the frame: both crop real pixels.
    for center, scale in (([0.0, 0.0], [1.0, 1.3]), ([160.0, 120.0], [FRAME_WIDTH / 200, FRAME_HEIGHT / 200])):
        decoded = decode_sample(_sample(1, center, scale), "h36m", train=False)
        assert decoded["image"].shape == (2, 3, 256, 192)


def test_bad_boxes_are_counted_under_skip_bad(tmp_path):
    samples = [_sample(i, *box) for i, box in enumerate(BAD_BOXES.values())] + [_sample(9)]
    for sample in samples:
        del sample["__url__"]
    write_shard(tmp_path / "validation" / "data-000000.tar", samples)
    loader = build_loader(tmp_path, "h36m", train=False, batch_size=4, skip_bad=True)
    keys = [k for batch in loader for k in batch["key"]]
    assert keys == [h36m_key(9, 2, 9)]
    assert len(loader.skipped) == len(BAD_BOXES) and all("crop box" in r.reason for r in loader.skipped)


@pytest.mark.parametrize("key,value", [("device", "cudaX"), ("device", "cuda:"), ("device", "gpu"),
                                       ("train.lr", float("inf")), ("train.lr", float("nan")),
                                       ("train.grad_clip", float("inf")), ("train.checkpoint_minutes", -1)])
def test_invalid_values_are_rejected_at_validation(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, {key: value})


def test_valid_devices_pass():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_config(None, {"device": device}).device == device


def test_a_folder_where_a_file_belongs_says_so(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(SystemExit):
        main_diffusers_h36m.main(["--config", str(tmp_path)])
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "best_h36m.bin").mkdir()
    with pytest.raises(SystemExit):
        main_diffusers_h36m.main(["-c", str(tmp_path), "--evaluate", "best_h36m.bin"])
    assert "is a folder, expected a checkpoint file" in capsys.readouterr().err


@pytest.fixture
def tiny_yaml(tiny_config, tmp_path):
    return str(save_config(tiny_config("unset"), tmp_path / "tiny.yaml"))


@pytest.mark.usefixtures("single_thread")
def test_a_weight_folder_is_named_as_such(tiny_yaml, tiny_shards, tmp_path, caplog):
    with open(tmp_path / "pretrained.yaml", "w") as handle:
        handle.write(open(tiny_yaml).read().replace("pretrained_backbone: false", "pretrained_backbone: true"))
    with caplog.at_level(logging.ERROR):
        status = main_diffusers_h36m.main(["--config", str(tmp_path / "pretrained.yaml"), "-c", str(tmp_path / "ck"),
                                           "-w", str(tiny_shards["h36m"]), "--backbone-weights", str(tmp_path)])
    assert status == 2 and f"weight file {tmp_path} is a folder" in caplog.text and "--backbone-weights" in caplog.text


@pytest.mark.usefixtures("single_thread")
def test_an_output_folder_that_is_a_file_fails_before_any_work(tiny_yaml, tiny_config, tiny_shards, tmp_path,
                                                               caplog):
    _, denoiser = build_model(tiny_config("unset").model)
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser)
    ck = tmp_path / "ck"
    ck.write_text("a file, not a folder\n")
    for extra in ([], ["--evaluate", str(weights)]):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            status = main_diffusers_h36m.main(["--config", tiny_yaml, "-c", str(ck), "-w", str(tiny_shards["h36m"]),
                                               *extra])
        assert status == 2 and f"{ck} is a file, expected a folder" in caplog.text
        assert "training h36m" not in caplog.text and "evaluating" not in caplog.text  # nothing started
    assert ck.read_text() == "a file, not a folder\n"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = main_diffusers_h36m.main(["--config", tiny_yaml, "-c", str(tmp_path / "out"), "-w",
                                           str(tiny_shards["h36m"]), "--evaluate", str(weights),
                                           "--save-predictions", str(tmp_path)])
    assert status == 2 and "is a folder, expected a file name" in caplog.text and "evaluating" not in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.usefixtures("single_thread")
def test_an_unwritable_output_folder_fails_before_any_work(tiny_yaml, tiny_shards, tmp_path, caplog):
    ck = tmp_path / "ck"
    ck.mkdir()
    ck.chmod(0o500)
    try:
        with caplog.at_level(logging.ERROR):
            status = main_diffusers_h36m.main(["--config", tiny_yaml, "-c", str(ck), "-w", str(tiny_shards["h36m"])])
    finally:
        ck.chmod(0o700)
    assert status == 2 and "not writable" in caplog.text

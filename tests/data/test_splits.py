"""Evaluation says which shards it scores, refuses a training split unless told, and keeps each result."""
import json
import logging

import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

import main_diffusers_mpi
from common.core.errors import ConfigError
from common.data.splits import evaluation_shards, split_name
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import output_paths, save_config
from common.run.evaluation import evaluate, metrics_file
from common.run.training import train

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoints(tiny_config, tmp_path_factory):
    """Two different untrained tiny checkpoints: best_h36m.bin and latest_epoch.bin."""
    folder = tmp_path_factory.mktemp("weights")
    files = []
    for seed, name in ((0, "best_h36m.bin"), (1, "latest_epoch.bin")):
        torch.manual_seed(seed)
        _, denoiser = build_model(tiny_config("unused").model)
        files.append(save_checkpoint(folder / name, denoiser, epoch=seed))
    return files


def test_the_split_folder_and_shard_count_are_logged(tiny_shards, caplog):
    with caplog.at_level(logging.INFO):
        urls, split = evaluation_shards(tiny_shards["h36m"], "h36m")
    assert split == "validation" and len(urls) == 1
    assert f"reads 1 shard(s) of split 'validation' from {tiny_shards['h36m'] / 'validation'}" in caplog.text
    assert split_name(["/a/test", "/b/test/"]) == "test" and split_name(["/a/x", "/a/y"]) == "x+y"


@pytest.mark.parametrize("dataset", ["h36m", "mpi"])
def test_a_training_split_is_refused_unless_allowed(tiny_shards, dataset):
    train_folder = tiny_shards[dataset] / "train"
    with pytest.raises(ConfigError, match=r"would score the training split.*--allow-train-split"):
        evaluation_shards(train_folder, dataset)
    with pytest.raises(ConfigError, match="training split"):
        evaluation_shards(str(train_folder / "data-*.tar"), dataset)
    urls, split = evaluation_shards(train_folder, dataset, allow_train_split=True)
    assert split == "train" and all("/train/" in url for url in urls)


def test_evaluate_cli_refuses_w_naming_the_train_folder(tiny_config, tiny_shards, checkpoints, tmp_path, caplog):
    cfg = tiny_config("unset", dataset="mpi")
    config = str(save_config(cfg, tmp_path / "tiny_mpi.yaml"))
    ck = tmp_path / "ck"
    argv = ["--config", config, "-c", str(ck), "-w", str(tiny_shards["mpi"] / "train"),
            "--evaluate", str(checkpoints[0]), "-num_proposals", "2", "-timesteps", "1"]
    assert main_diffusers_mpi.main(argv) == 2
    assert "would score the training split" in caplog.text and "--allow-train-split" in caplog.text
    assert not (ck / "metrics.json").exists()
    assert main_diffusers_mpi.main(argv + ["--allow-train-split"]) == 0
    saved = json.loads((ck / "metrics_best_h36m_train.json").read_text())["metrics"]
    assert saved["split"] == "train" and saved["num_samples"] == 4 and saved["num_shards"] == 1


def test_validation_refuses_a_training_split_too(tiny_config, tiny_shards, tmp_path):
    cfg = tiny_config(tmp_path / "run", data__root=str(tiny_shards["h36m"] / "train"), train__epochs=1)
    with pytest.raises(ConfigError, match="the validation would score the training split"):
        train(cfg, device=CPU)


def test_each_checkpoint_and_split_keeps_its_own_metrics_file(tiny_config, checkpoints, tmp_path):
    best, latest = checkpoints
    cfg = tiny_config(tmp_path / "run")
    paths = output_paths(cfg)
    first = evaluate(cfg, best, device=CPU)
    second = evaluate(cfg, latest, device=CPU)
    assert first["mpjpe_mean_hypothesis"] != second["mpjpe_mean_hypothesis"]
    kept = json.loads((paths.checkpoint_dir / "metrics_best_h36m.json").read_text())["metrics"]
    assert kept["checkpoint"] == str(best) and kept["mpjpe_mean_hypothesis"] == first["mpjpe_mean_hypothesis"]
    assert kept["split"] == "validation"
    newest = json.loads(paths.metrics.read_text())["metrics"]  # metrics.json: the latest evaluation
    assert newest["checkpoint"] == str(latest)
    assert (paths.checkpoint_dir / "metrics_latest_epoch.json").is_file()
    assert metrics_file(paths.metrics, best, "test", "mpi").name == "metrics_best_h36m.json"
    assert metrics_file(paths.metrics, best, "train", "mpi").name == "metrics_best_h36m_train.json"

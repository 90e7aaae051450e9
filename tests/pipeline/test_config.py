"""Typed configs: defaults, YAML files, overrides, validation and the saved round trip."""
from pathlib import Path

import pytest
import yaml

from common.core.errors import ConfigError
from common.model.networks import ModelConfig
from common.pipeline.config import Config, load_config, output_paths, save_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_defaults_are_the_original_settings():
    cfg = Config()
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.lr_decay) == (6e-5, 0.1, 0.993)
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.train.validate_every, cfg.train.val_timesteps) == (128, 50, 5, 5)
    assert (cfg.evaluation.num_proposals, cfg.evaluation.timesteps, cfg.train.num_train_timesteps) == (20, 20, 100)
    assert cfg.model == ModelConfig()
    assert cfg.context_weights == "checkpoint/human36m_nips_retrain.bin"


@pytest.mark.parametrize("name, dataset", [("human36m_train.yaml", "h36m"), ("human36m_train.yaml", "mpi"),
                                           ("mpi_train.yaml", "mpi"), ("synthetic_demo.yaml", "h36m")])
def test_shipped_configs_load(name, dataset):
    cfg = load_config(CONFIG_DIR / name, dataset=dataset)
    assert cfg.dataset == dataset
    assert isinstance(cfg.model, ModelConfig)


def test_shipped_training_configs_keep_the_defaults():
    """The two dataset configs spell out the original's settings: nothing differs from the defaults
    except the dataset, its folders and its context weights."""
    for name, dataset in (("human36m_train.yaml", "h36m"), ("mpi_train.yaml", "mpi")):
        cfg = load_config(CONFIG_DIR / name, dataset=dataset)
        assert cfg.train == Config().train and cfg.evaluation == Config().evaluation
        assert cfg.model == ModelConfig()
    assert load_config(CONFIG_DIR / "mpi_train.yaml", dataset="mpi").context_weights.endswith("mpi-inf_nips_retrain.bin")


def test_human36m_config_serves_both_scripts_and_the_dataset_parts_follow_the_script():
    """As the original README says, config/human36m_train.yaml "is the same for both datasets"."""
    h36m = load_config(CONFIG_DIR / "human36m_train.yaml", dataset="h36m")
    mpi = load_config(CONFIG_DIR / "human36m_train.yaml", dataset="mpi")
    assert (h36m.context_weights, mpi.context_weights) == ("checkpoint/human36m_nips_retrain.bin",
                                                           "checkpoint/mpi-inf_nips_retrain.bin")
    assert (h36m.checkpoint, mpi.checkpoint) == ("checkpoint/human36m", "checkpoint/mpi-inf-3dhpe")
    assert (h36m.data.root, mpi.data.root) == ("webdataset/Human36m", "webdataset/mpi_inf_3dhp")
    assert output_paths(mpi).best.name == "best_mpi.bin"
    # What the user names explicitly wins over the script's defaults.
    named = load_config(CONFIG_DIR / "human36m_train.yaml", {"weights.context": "mine.bin", "data.root": "w"},
                        dataset="mpi")
    assert (named.context_weights, named.data.root) == ("mine.bin", "w")


def test_backbone_weights_are_searched_where_the_original_put_them_too():
    cfg = load_config(CONFIG_DIR / "human36m_train.yaml", dataset="mpi")
    assert cfg.backbone_weights == ("checkpoint/pose_hrnet_w32_256x192.pth",
                                    "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth")
    assert load_config(None, {"weights.backbone": "b.pth"}).backbone_weights == ("b.pth",)


@pytest.mark.parametrize("name, switch", [("human36m_mask_pose_train.yaml", "mask_pose"),
                                          ("human36m_mask_context_train.yaml", "mask_context"),
                                          ("human36m_shuffle_context_train.yaml", "shuffle_context")])
def test_ablation_configs_turn_on_exactly_their_switch(name, switch):
    for dataset in ("h36m", "mpi"):
        cfg = load_config(CONFIG_DIR / name, dataset=dataset)
        assert cfg.model == ModelConfig(**{switch: True})
        assert cfg.train == Config().train and cfg.evaluation == Config().evaluation


def test_unknown_key_names_it_and_the_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"'train\.epoch'.*valid keys here: epochs, lr"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        load_config(None, {"modle.res_depth": 1})


def test_types_and_ranges_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="'train.epochs': expected int"):
        load_config(None, {"train.epochs": "ten"})
    with pytest.raises(ConfigError, match="'dataset' = 'coco' is invalid; expected one of h36m, mpi"):
        load_config(None, {"dataset": "coco"})
    with pytest.raises(ConfigError, match="evaluation.timesteps"):
        load_config(None, {"evaluation.timesteps": 101})
    # YAML 1.1 reads 6e-5 (no dot) as a string: it is still the number it means.
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 6e-5\n")
    assert load_config(path).train.lr == pytest.approx(6e-5, rel=0, abs=1e-12)


def test_dataset_of_the_file_must_match_the_script():
    with pytest.raises(ConfigError, match="for dataset 'mpi' but this script .* 'h36m'"):
        load_config(CONFIG_DIR / "mpi_train.yaml", dataset="h36m")
    assert load_config(None, dataset="mpi").dataset == "mpi"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_after_the_file():
    cfg = load_config(CONFIG_DIR / "human36m_train.yaml",
                      {"train.epochs": 3, "data.root": "elsewhere", "model.res_depth": 1}, dataset="h36m")
    assert (cfg.train.epochs, cfg.data.root, cfg.model.res_depth) == (3, "elsewhere", 1)
    assert cfg.train.lr == 6e-5


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(CONFIG_DIR / "synthetic_demo.yaml", {"train.epochs": 7, "evaluation.flip_test": False})
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 7


def test_output_paths_follow_checkpoint_and_dataset():
    paths = output_paths(load_config(None, {"checkpoint": "ck", "dataset": "mpi"}))
    assert paths.best == Path("ck/best_mpi.bin") and paths.latest == Path("ck/latest_epoch.bin")
    assert paths.tensorboard == Path("ck/logs") and paths.predictions is None
    paths = output_paths(load_config(None, {"log": "tb", "evaluation.save_predictions": "p.npz"}))
    assert paths.tensorboard == Path("tb") and paths.predictions == Path("p.npz")

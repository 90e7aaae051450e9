"""benchmarks.context_cache on a tiny run: the shared features are the image path's, every way trains and is scored."""
import json

import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from benchmarks import context_cache as bench
from common.data.loader import build_loader
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import load_config, save_config
from common.run.training import _prepare

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture
def demo_files(tiny_config, tmp_path):
    """A 'demo' config and checkpoint of the tiny model (context layers that train, as in the demo)."""
    cfg = tiny_config(tmp_path / "demo", train__val_proposals=2)
    config = save_config(cfg, tmp_path / "demo" / "config.yaml")
    weights = save_checkpoint(tmp_path / "demo" / "best_h36m.bin", build_model(cfg.model)[1], epoch=1)
    return cfg, config, weights


def test_shared_features_give_the_image_paths_training_inputs(demo_files, tmp_path):
    cfg, _, _ = demo_files
    backbone, _ = cfg.networks(CPU)
    shared = bench.SharedFeatures.compute(cfg, backbone, tmp_path / "features.pt")
    shared = bench.SharedFeatures.load(tmp_path / "features.pt")
    assert len(shared) == 4
    by_keypoints = {}
    for batch in shared.batches(4, torch.Generator().manual_seed(0)):
        for i in range(len(batch["pose"])):
            by_keypoints[batch["keypoints"][i].numpy().tobytes()] = (batch["features"][0][i], batch["pose"][i])
    loader = build_loader(cfg.data.root, "h36m", train=True, batch_size=4, shuffle_buffer=0)
    for batch in loader:
        inputs = _prepare(batch, backbone, CPU)
        for i in range(len(inputs["pose"])):
            features, pose = by_keypoints.get(inputs["keypoints"][i].numpy().tobytes(), (None, None))
            if features is None:
                continue  # the other view of this sample was drawn by the shared features' coin
            torch.testing.assert_close(features, inputs["features"][0][i], rtol=0, atol=1e-5)
            torch.testing.assert_close(pose, inputs["pose"][i], rtol=0, atol=0)


def test_quality_trains_every_way_and_seed_and_prints_the_table(demo_files, tiny_shards, tmp_path, capsys):
    _, config, weights = demo_files
    out = tmp_path / "bench"
    bench.main(["quality", "--demo-checkpoint", str(weights), "--demo-config", str(config),
                "-w", str(tiny_shards["h36m"]), "--out", str(out), "--epochs", "1", "--seeds", "1",
                "--draws", "0", "2", "--hypotheses", "2", "--steps", "1", "--parallel", "2", "--threads", "1"])
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == ["0/1", "2/1", "None/1"]
    assert all(r["mpjpe"] > 0 for r in results.values())
    table = capsys.readouterr().out
    for way in ("image path", "eval-mode cache (R = 0)", "cache, R = 2"):
        assert f"| {way} |" in table
    config_r2 = load_config(out / "configs" / "draws2-seed1.yaml")
    assert config_r2.train.context_cache_draws == 2 and config_r2.model.drop_path_rate == 0.2
    assert config_r2.weights.pretrained_context and config_r2.seed == 1
    assert (out / "runs" / "draws2-seed1" / "context_cache" / "part-000001.pt").is_file()


def test_speed_prints_the_step_ratio_and_the_build_cost_per_draw_count(tmp_path, capsys):
    bench.main(["speed", "-w", str(tmp_path / "shards"), "--batch-size", "2", "--rounds", "1", "--draws", "0", "2"])
    out = capsys.readouterr().out
    assert "| one training step, batch 2, median of 1 |" in out
    rows = [line for line in out.splitlines() if line.startswith("| 0 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and "174.1 KB / 87.0 KB" in rows[1]

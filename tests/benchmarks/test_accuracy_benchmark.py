"""benchmarks.accuracy on a tiny run: one row per sampler, K and precision, each scored on every image."""
import json

import pytest
from model_fixtures import single_thread  # noqa: F401

from benchmarks import accuracy
from common.model.checkpoints import save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import save_config

pytestmark = pytest.mark.usefixtures("single_thread")


def test_accuracy_table_has_a_row_per_setting(tiny_config, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", evaluation__num_proposals=2)
    config = save_config(cfg, tmp_path / "run" / "config.yaml")
    weights = save_checkpoint(tmp_path / "run" / "best_h36m.bin", build_model(cfg.model)[1], epoch=1)
    out = tmp_path / "rows.json"
    accuracy.main(["--config", str(config), "--weights", str(weights), "--samplers", "ddim", "dpm++",
                   "--steps", "1", "--precisions", "bf16", "--max-samples", "3", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [(r["sampler"], r["steps"], r["precision"]) for r in rows] == [
        ("ddim", 1, "bf16"), ("dpm++", 1, "bf16")]
    assert all(r["images"] == 3 and r["j_best"] > 0 and r["mpjpe"] > 0 and r["images_per_second"] > 0 for r in rows)
    assert len({r["mpjpe"] for r in rows}) > 1, "the settings give different poses"
    assert "J-Best" in capsys.readouterr().out

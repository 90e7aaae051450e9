"""ONNX graphs of the full-size model (common.pipeline.graphs, python -m common.export): each graph and the
whole pipeline on onnxruntime equal PyTorch to 1e-4 relative."""
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common import export
from common.data.loader import build_loader
from common.model.checkpoints import save_checkpoint
from common.model.networks import ModelConfig, build_model
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import config_to_dict
from common.pipeline.graphs import GRAPHS, MANIFEST, export_graphs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.usefixtures("single_thread")
TOLERANCE = 1e-4  # relative: |onnx - torch| / |torch| over a whole output


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The released model's sizes with seeded random weights, and its graphs."""
    torch.manual_seed(0)
    backbone, denoiser = build_model(ModelConfig())
    backbone.eval(), denoiser.eval()
    folder = tmp_path_factory.mktemp("graphs")
    written = export_graphs(backbone, denoiser, folder, {"backbone_width": 32})
    return backbone, denoiser, folder, written


def test_the_three_graphs_and_a_manifest_are_written(full_size):
    *_, folder, written = full_size
    assert [p.name for p in written] == [f"{name}.onnx" for name in GRAPHS] + [MANIFEST]
    assert all(p.stat().st_size > 0 for p in written)


def test_each_graph_equals_pytorch_at_another_batch_size(full_size):
    backbone, denoiser, folder, _ = full_size
    differences = export.graph_differences(backbone, denoiser, folder, batch=3, hypotheses=5)
    assert set(differences) == set(GRAPHS)
    assert all(0 <= d < TOLERANCE for d in differences.values()), differences


def test_the_onnx_pipeline_gives_pytorchs_hypotheses(full_size, tiny_shards):
    backbone, denoiser, folder, _ = full_size
    batch = next(iter(build_loader(tiny_shards["h36m"], "h36m", train=False, batch_size=3)))
    sampling = SamplingConfig(steps=5, hypotheses=4)
    ours = SnapPosePipeline.from_onnx(folder, sampling)(batch)
    theirs = SnapPosePipeline(backbone, denoiser, sampling)(batch)
    assert ours.shape == theirs.shape == (3, 4, 17, 3)
    assert ((ours - theirs).norm() / theirs.norm()).item() < TOLERANCE


def test_the_onnx_pipeline_refuses_low_precision_and_compile(full_size):
    folder = full_size[2]
    for sampling in (SamplingConfig(precision="bf16"), SamplingConfig(compile=True)):
        with pytest.raises(ValueError, match="fp32 without torch.compile"):
            SnapPosePipeline.from_onnx(folder, sampling)


def test_a_folder_without_graphs_is_an_error_naming_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m common.export"):
        SnapPosePipeline.from_onnx(tmp_path)


def test_the_export_command_reports_a_missing_checkpoint_in_one_line(tmp_path, caplog):
    assert export.main(["--checkpoint", str(tmp_path / "none.bin"), "--out", str(tmp_path / "onnx")]) == 2
    assert "none.bin" in caplog.text and not (tmp_path / "onnx").exists()


def test_the_export_command_writes_a_runs_graphs(tiny_config, tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run")
    _, denoiser = cfg.networks(torch.device("cpu"))
    weights = save_checkpoint(tmp_path / "run" / "best_h36m.bin", denoiser, epoch=1, config=config_to_dict(cfg))
    assert export.main(["--checkpoint", str(weights), "--out", str(tmp_path / "onnx")]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}: largest relative difference" in printed for name in GRAPHS)
    assert all((tmp_path / "onnx" / f"{name}.onnx").is_file() for name in GRAPHS)

"""The pipeline (common.pipeline.pipeline): its stages compose to the whole call, loading from files, preparing once."""
import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.data.loader import build_loader
from common.model.checkpoints import save_checkpoint
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import save_config

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")
TWO_BY_TWO = SamplingConfig(steps=2, hypotheses=2)


@pytest.fixture(scope="module")
def run(tiny_config, tmp_path_factory):
    """A tiny run's config, an untrained checkpoint with that config stored in it, and a test batch."""
    folder = tmp_path_factory.mktemp("pipeline")
    cfg = tiny_config(folder / "run")
    _, denoiser = cfg.networks(CPU)
    weights = save_checkpoint(folder / "best_h36m.bin", denoiser, epoch=2)
    batch = next(iter(build_loader(cfg.data.root, cfg.dataset, train=False, batch_size=3)))
    return cfg, weights, batch


def test_the_stages_called_alone_give_the_whole_call(run):
    cfg, weights, batch = run
    pipeline, checkpoint = SnapPosePipeline.from_config(cfg, weights, CPU, sampling=TWO_BY_TWO)
    assert checkpoint["epoch"] == 2
    images, keypoints, ref = pipeline.views(batch)
    assert images.shape == (6, 3, 256, 192) and keypoints.shape == (6, 1, 17, 2)  # two views, view-major
    context = pipeline.context(keypoints, ref, pipeline.features(images))
    torch.testing.assert_close(context, pipeline.encode(batch), rtol=0, atol=0)
    noise = pipeline.initial_noise(batch["key"])
    assert noise.shape == (6, 2, 1, 17, 3) and torch.equal(noise[:3], noise[3:])  # both views share it
    by_stage = pipeline.merge(pipeline.sample(context, noise))
    whole = pipeline(batch)
    assert whole.shape == (3, 2, 17, 3) and torch.all(whole[..., 0, :] == 0)
    torch.testing.assert_close(by_stage, whole, rtol=0, atol=0)


def test_from_pretrained_reads_the_config_beside_the_checkpoint(run, tmp_path):
    cfg, weights, batch = run
    copy = tmp_path / "best_h36m.bin"
    copy.write_bytes(weights.read_bytes())
    save_config(cfg, tmp_path / "config.yaml")
    pipeline = SnapPosePipeline.from_pretrained(copy, sampling=TWO_BY_TWO, device="cpu")
    assert pipeline.config.model == cfg.model and not pipeline.denoiser.training
    expected = SnapPosePipeline.from_config(cfg, weights, CPU, sampling=TWO_BY_TWO)[0](batch)
    torch.testing.assert_close(pipeline(batch), expected, rtol=0, atol=0)


def test_the_sampling_settings_are_the_configs_unless_given(run):
    cfg, weights, _ = run
    pipeline, _ = SnapPosePipeline.from_config(cfg, weights, CPU)
    assert pipeline.sampling == cfg.sampling()


def test_prepare_sets_precision_and_compilation_once(run):
    cfg, weights, batch = run
    pipeline, _ = SnapPosePipeline.from_config(cfg, weights, CPU, sampling=TWO_BY_TWO)
    assert pipeline.prepare(TWO_BY_TWO) is pipeline
    low = pipeline.prepare(TWO_BY_TWO.replace(precision="bf16"))
    assert low.sampling.precision == "bf16"
    conv = next(m for m in pipeline.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the low-precision layout
    fp32 = SnapPosePipeline.from_config(cfg, weights, CPU, sampling=TWO_BY_TWO)[0](batch)
    assert (low(batch) - fp32).abs().max() < 0.05  # metres: autocast stays close


def test_a_pipeline_needs_no_process_group(run, monkeypatch):
    cfg, weights, batch = run
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    SnapPosePipeline.from_config(cfg, weights, sampling=TWO_BY_TWO)[0](batch)
    assert not torch.distributed.is_initialized()

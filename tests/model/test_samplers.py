"""Samplers, autocast precision and torch.compile (common.model.samplers, common.model.acceleration) and their options."""
import json

import pytest
import torch
from diffusers import DDIMScheduler
from model_fixtures import ddim_sample, sample_from, single_thread, tiny_denoiser, tiny_inputs  # noqa: F401
from test_diffusion import OracleDenoiser, loop_of_full_forwards

from common.core.errors import ConfigError
from common.core.skeleton import NUM_JOINTS
from common.model.acceleration import PRECISIONS, CompiledDenoiser, autocast, compile_denoiser, run_backbone
from common.model.checkpoints import save_checkpoint
from common.model.diffusion import make_ddpm_scheduler
from common.model.networks import ModelConfig, build_model
from common.model.samplers import SAMPLERS, make_sampling_scheduler
from common.pipeline.config import output_paths
from common.run.cli import build_parser, overrides_from_args
from common.run.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


def test_every_sampler_runs_on_the_training_schedule():
    betas = make_ddpm_scheduler().betas
    for name in SAMPLERS:
        scheduler = make_sampling_scheduler(name)
        torch.testing.assert_close(scheduler.betas, betas, rtol=0, atol=0)
        assert scheduler.config.prediction_type == "epsilon" and scheduler.config.num_train_timesteps == 100
    def settings(scheduler):
        return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}

    assert settings(make_sampling_scheduler("ddim")) == settings(DDIMScheduler(num_train_timesteps=100))
    trailing = make_sampling_scheduler("ddim-trailing")
    trailing.set_timesteps(5)
    assert trailing.timesteps.tolist() == [99, 79, 59, 39, 19]  # starts at the last training step
    with pytest.raises(ValueError, match="valid samplers: ddim, ddim-trailing"):
        make_sampling_scheduler("euler")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_give_poses_of_the_noise_shape_and_repeat_per_seed(sampler, precision):
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=3, seed=1)
    first = sample_from(denoiser, noise, keypoints_2d, ref, features, 3, sampler=sampler, precision=precision)
    again = sample_from(denoiser, noise, keypoints_2d, ref, features, 3, sampler=sampler, precision=precision)
    other = sample_from(denoiser, torch.randn_like(noise), keypoints_2d, ref, features, 3, sampler=sampler,
                   precision=precision)
    assert first.shape == noise.shape and first.dtype == torch.float32
    assert torch.isfinite(first).all() and first.abs().max() <= 1.0  # every sampler clamps x_0 to [-1, 1] m
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_sample_ddim_is_ddim_sample_and_a_loop_of_full_forwards():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=4, seed=3)
    ours = sample_from(denoiser, noise, keypoints_2d, ref, features, 10, sampler="ddim")
    assert torch.equal(ours, ddim_sample(denoiser, noise, keypoints_2d, ref, features, 10))
    reference = loop_of_full_forwards(denoiser, noise, keypoints_2d, ref, features, 10)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_recovers_the_pose_from_exact_noise(sampler):
    # An oracle that knows x_0 predicts the exact noise on the training schedule, so any
    # sampler on that schedule must land on x_0; a wrong schedule or spacing would not.
    x0 = torch.rand(3, 1, NUM_JOINTS, 3) * 1.6 - 0.8
    noise = torch.randn(3, 4, 1, NUM_JOINTS, 3)
    result = sample_from(OracleDenoiser(x0), noise, None, None, None, 5, sampler=sampler)
    torch.testing.assert_close(result, x0[:, None].expand_as(result), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_clamps_the_predicted_pose_to_one_metre(sampler):
    x0 = torch.full((2, 1, NUM_JOINTS, 3), 1.5)
    result = sample_from(OracleDenoiser(x0), torch.randn(2, 3, 1, NUM_JOINTS, 3), None, None, None, 5, sampler=sampler)
    torch.testing.assert_close(result, torch.ones_like(result), rtol=0, atol=1e-4)


def test_fewer_steps_of_the_fast_samplers_call_the_denoiser_once_per_step():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=1, H=2)
    calls = []
    original = denoiser.denoise
    denoiser.denoise = lambda c, x, t: calls.append(int(t[0])) or original(c, x, t)
    for name in SAMPLERS:
        calls.clear()
        sample_from(denoiser, noise, keypoints_2d, ref, features, 4, sampler=name)
        assert len(calls) == 4, name


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_runs_the_network_in_that_precision_and_stays_close(precision, dtype):
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=3, seed=4)
    seen = []
    denoiser.head[1].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    full = sample_from(denoiser, noise, keypoints_2d, ref, features, 5, sampler="dpm++")
    assert set(seen) == {torch.float32}
    seen.clear()
    low = sample_from(denoiser, noise, keypoints_2d, ref, features, 5, sampler="dpm++", precision=precision)
    assert set(seen) == {dtype}
    relative = ((low - full).norm() / full.norm()).item()
    assert 0 < relative < 0.05


def test_backbone_in_bf16_returns_float32_maps_close_to_fp32():
    backbone, _ = build_model(ModelConfig(backbone_width=4, backbone_stem_width=8))
    images = torch.randn(2, 3, 256, 192)
    full = run_backbone(backbone, images)
    low = run_backbone(backbone.to(memory_format=torch.channels_last), images, "bf16")
    for a, b in zip(full, low):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert 0 < ((a - b).norm() / a.norm()).item() < 0.05


def test_unknown_precision_is_an_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match="valid precisions: fp32, bf16, fp16"):
        autocast(CPU, "fp8")


def test_compiled_denoiser_shares_the_weights_and_is_off_by_default():
    denoiser = tiny_denoiser().eval()
    assert compile_denoiser(denoiser, enabled=False) is denoiser
    wrapped = compile_denoiser(denoiser)
    assert isinstance(wrapped, CompiledDenoiser)
    assert [p.data_ptr() for p in wrapped.parameters()] == [p.data_ptr() for p in denoiser.parameters()]


@pytest.mark.slow
def test_compiled_denoiser_samples_like_the_eager_one():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=3, seed=5)
    eager = sample_from(denoiser, noise, keypoints_2d, ref, features, 3, sampler="unipc")
    compiled = sample_from(compile_denoiser(denoiser), noise, keypoints_2d, ref, features, 3, sampler="unipc")
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_flags_reach_the_config_and_bad_values_are_refused(tiny_config, tmp_path, capsys):
    args = build_parser("h36m").parse_args("--sampler dpm++ --precision bf16 --compile --val-sampler unipc".split())
    assert overrides_from_args(args) == {"evaluation.sampler": "dpm++", "evaluation.precision": "bf16",
                                         "evaluation.compile": True, "train.val_sampler": "unipc"}
    assert overrides_from_args(build_parser("mpi").parse_args([])) == {}
    with pytest.raises(SystemExit):
        build_parser("mpi").parse_args(["--sampler", "euler"])
    assert "invalid choice: 'euler'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="evaluation.precision"):
        tiny_config(tmp_path, evaluation__precision="int8")
    with pytest.raises(ConfigError, match="train.val_sampler"):
        tiny_config(tmp_path, train__val_sampler="ddpm")


def test_defaults_are_the_papers_and_metrics_json_records_the_settings(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "default")
    assert (cfg.evaluation.sampler, cfg.evaluation.precision, cfg.evaluation.compile) == ("ddim", "fp32", False)
    assert cfg.train.val_sampler == "ddim"
    _, denoiser = build_model(cfg.model)
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser, epoch=1)
    fast = tiny_config(tmp_path / "fast", evaluation__sampler="ddim-trailing", evaluation__precision="bf16",
                       evaluation__timesteps=2)
    summary = evaluate(fast, weights, device=CPU)
    saved = json.loads(output_paths(fast).metrics.read_text())
    for record in (summary, saved["metrics"]):
        used = record["sampling"]
        assert (used["sampler"], used["precision"], used["compile"], used["steps"]) == ("ddim-trailing", "bf16", False, 2)
    assert saved["config"]["evaluation"]["sampler"] == "ddim-trailing"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_samplers_on_cuda_agree_with_the_cpu(precision):
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noise, features, _ = tiny_inputs(B=2, H=3, seed=6)
    cpu = sample_from(denoiser, noise, keypoints_2d, ref, features, 5, sampler="dpm++")
    cuda = torch.device("cuda")
    on_gpu = sample_from(denoiser.to(cuda), noise.to(cuda), keypoints_2d.to(cuda), ref.to(cuda),
                    [f.to(cuda) for f in features], 5, sampler="dpm++", precision=precision)
    assert ((on_gpu.cpu() - cpu).norm() / cpu.norm()).item() < (1e-4 if precision == "fp32" else 0.05)

"""Choosing the precision for the device (common.model.acceleration.resolve_precision) and where the choice shows."""
import json
import logging

import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

from common.model import acceleration
from common.model.acceleration import PRECISION_OPTIONS, PRECISIONS, native_precision, resolve_precision
from common.model.checkpoints import save_checkpoint
from common.model.networks import ModelConfig, build_model
from common.model.samplers import SamplingConfig
from common.pipeline import SnapPosePipeline
from common.pipeline.config import output_paths
from common.run.cli import build_parser, overrides_from_args
from common.run.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")
# Flags of two real x86 CPUs, as torch.cpu.get_capabilities reports them (the parts that matter here).
AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}
AVX512_BF16 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
AMX = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": True,
       "amx_fp16": True}


@pytest.fixture
def cpu_flags(monkeypatch):
    """Play a CPU with the given capabilities: ``cpu_flags(AVX2_ONLY)``."""
    def play(capabilities):
        monkeypatch.setattr(acceleration, "cpu_capabilities", lambda: dict(capabilities))
    return play


@pytest.mark.parametrize("capabilities, expected", [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16"), (AMX, "bf16"),
                                                    ({}, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(cpu_flags, capabilities, expected, caplog):
    cpu_flags(capabilities)
    with caplog.at_level(logging.INFO, logger=acceleration.__name__):
        assert resolve_precision("auto", CPU) == expected
    assert f"precision auto: {expected} on cpu" in caplog.text


def test_explicit_bf16_on_a_cpu_that_emulates_it_runs_with_a_warning_naming_the_cost(cpu_flags, caplog):
    cpu_flags(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger=acceleration.__name__):
        assert resolve_precision("bf16", CPU) == "bf16"
    assert "without AVX512-BF16 or AMX-BF16" in caplog.text and "8x the time of fp32" in caplog.text
    caplog.clear()
    cpu_flags(AVX512_BF16)
    with caplog.at_level(logging.WARNING, logger=acceleration.__name__):
        assert resolve_precision("bf16", CPU) == "bf16"
        assert resolve_precision("fp32", CPU) == "fp32"
    assert caplog.text == ""


def test_fp16_is_native_only_with_its_own_instructions(cpu_flags):
    cpu_flags(AVX512_BF16)
    assert native_precision("bf16", CPU) and not native_precision("fp16", CPU)
    cpu_flags(AMX)
    assert native_precision("fp16", CPU)
    assert native_precision("fp32", CPU)


def test_the_real_detection_reads_this_cpu():
    capabilities = acceleration.cpu_capabilities()
    assert isinstance(capabilities, dict)
    assert resolve_precision("auto", CPU) in PRECISIONS
    assert native_precision("bf16", "cpu") == any(capabilities.get(f) for f in ("avx512_bf16", "amx_bf16"))


def test_unknown_precisions_are_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match="valid precisions: fp32, bf16, fp16, auto"):
        resolve_precision("int8", CPU)
    with pytest.raises(ValueError, match="valid precisions"):
        acceleration.autocast(CPU, "auto")  # "auto" must be resolved before it reaches autocast


def test_auto_reaches_the_config_from_the_command_line():
    assert "auto" in PRECISION_OPTIONS
    args = build_parser("h36m").parse_args(["--precision", "auto"])
    assert overrides_from_args(args)["evaluation.precision"] == "auto"


@pytest.mark.parametrize("capabilities, expected", [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")])
def test_metrics_json_records_the_precision_that_ran_and_the_one_asked_for(tiny_config, tmp_path, cpu_flags,
                                                                          capabilities, expected):
    cpu_flags(capabilities)
    cfg = tiny_config(tmp_path / "auto", evaluation__precision="auto", evaluation__timesteps=2)
    _, denoiser = build_model(cfg.model)
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser, epoch=1)
    summary = evaluate(cfg, weights, device=CPU)
    saved = json.loads(output_paths(cfg).metrics.read_text())
    for record in (summary, saved["metrics"]):
        assert (record["sampling"]["precision"], record["precision_requested"]) == (expected, "auto")
    assert saved["config"]["evaluation"]["precision"] == "auto"


@pytest.mark.parametrize("capabilities, expected", [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")])
def test_the_pipeline_resolves_auto_for_its_device(cpu_flags, capabilities, expected):
    cpu_flags(capabilities)
    backbone, denoiser = build_model(ModelConfig(backbone_width=8, backbone_stem_width=16, embed_dim=32,
                                                 res_depth=1, joint_depth=1))
    pipeline = SnapPosePipeline(backbone.eval(), denoiser.eval(), SamplingConfig(precision="auto"), device="cpu")
    assert pipeline.sampling.precision == expected


def test_the_papers_evaluation_stays_fp32(tiny_config, tmp_path):
    assert tiny_config(tmp_path).evaluation.precision == "fp32"


def test_inference_defaults_to_auto_while_evaluation_keeps_the_papers_fp32():
    from common.infer.cli import build_parser as inference_parser

    assert inference_parser().parse_args(["photo.jpg"]).precision == "auto"
    assert "evaluation.precision" not in overrides_from_args(build_parser("h36m").parse_args([]))

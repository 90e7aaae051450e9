"""benchmarks.pipeline: its options, the --device cuda path as far as a CPU allows, and a smoke run (slow)."""
import argparse
import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import pipeline
from benchmarks.pipeline import Setting, training_rate

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fast_settings_parse_and_bad_ones_say_what_is_expected():
    assert Setting.parse("dpm++:5:bf16:compile") == Setting("dpm++:5:bf16:compile", "dpm++", 5, "bf16", "compile")
    assert Setting.parse("unipc:3:fp32").compile == ""
    for bad in ("dpm++:5", "euler:5:bf16", "ddim:five:fp32", "ddim:5:int8", "ddim:5:bf16:jit"):
        with pytest.raises(argparse.ArgumentTypeError, match="SAMPLER:K:PRECISION"):
            Setting.parse(bad)


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_an_auto_setting_runs_as_the_precision_it_picks_and_says_so(monkeypatch, native, expected):
    from common.model import acceleration

    monkeypatch.setattr(acceleration, "cpu_capabilities", lambda: {"avx512_bf16": native})
    setting = pipeline.resolve_setting(Setting.parse("dpm++:3:auto"), torch.device("cpu"))
    assert (setting.name, setting.precision) == (f"dpm++:3:auto ({expected})", expected)
    assert pipeline.resolve_setting(Setting.parse("dpm++:3:fp32"), torch.device("cpu")) == Setting.parse("dpm++:3:fp32")


def test_arguments_of_a_gpu_run_parse():
    args = pipeline.build_parser().parse_args(
        "--device cuda --images 512 --batch-size 64 --workers 8 --fast dpm++:5:bf16:reduce-overhead "
        "--skip original training".split())
    assert args.device == "cuda" and args.batch_size == 64 and args.skip == ["original", "training"]
    assert args.fast == [Setting("dpm++:5:bf16:reduce-overhead", "dpm++", 5, "bf16", "reduce-overhead")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no CUDA device is present")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="sees no CUDA device; use --device cpu"):
        pipeline.main(["--device", "cuda", "--shards", str(tmp_path)])
    assert not any(tmp_path.iterdir()), "nothing is generated before the device is checked"


def test_a_cache_this_code_lacks_is_reported_as_missing_without_training(tmp_path):
    assert training_rate("no_such_cache", tmp_path, argparse.Namespace(), torch.device("cpu")) is None


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def _smoke(tmp_path, device):
    out = tmp_path / "r.json"
    pipeline.main(["--device", device, "--images", "2", "--batch-size", "2", "--hypotheses", "2", "--steps", "2",
                   "--fast", "ddim-trailing:1:bf16", "--train-samples", "2", "--train-batch-size", "2",
                   "--shards", str(tmp_path / "shards"), "--json", str(out)])
    results = json.loads(out.read_text())
    names = [r["setting"] for r in results["evaluation"]]
    assert names == ["original", "today", "ddim-trailing:1:bf16"]
    original, today = results["evaluation"][:2]
    # The same sampler on the same noise: the two ways score the same.
    assert original["mpjpe_mean_hypothesis"] == pytest.approx(today["mpjpe_mean_hypothesis"], rel=1e-4)
    for r in results["evaluation"]:
        assert r["images"] == 2 and sum(r["stages"].values()) == pytest.approx(r["seconds"])
    rates = [results["training"][name] for name in ("no cache", "feature cache")]
    if device == "cpu":
        assert all(rate > 0 for rate in rates)
    else:  # two samples a GPU trains in under the log's 0.1 s: too short to time, reported as n/a
        assert all(rate is None or rate > 0 for rate in rates)
    return results


@pytest.mark.slow
def test_pipeline_runs_end_to_end_on_the_cpu(tmp_path):
    _smoke(tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pipeline_runs_end_to_end_on_cuda(tmp_path):
    results = _smoke(tmp_path, "cuda")
    assert all(r["peak_memory_bytes"] > 0 for r in results["evaluation"])

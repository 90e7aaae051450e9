"""The CUDA paths: random states, ``--device cuda:N``, train-resume-evaluate against the CPU, DDP.

Marked ``gpu``: skipped where CUDA is not available (tests/conftest.py). Run
them with ``python -m pytest -m gpu``; on one GPU they take well under a minute
(tiny model, tiny shards).
"""
import json
import socket

import pytest
import torch
import torch.distributed as dist

import main_diffusers_h36m
from common.model.checkpoints import read_checkpoint
from common.pipeline.config import save_config
from common.run import distributed, seeding, training

pytestmark = pytest.mark.gpu

# Evaluation on CUDA and on the CPU differs only by float rounding (TF32 is
# turned off for the test), not by the draws: the initial noise of a sample is
# drawn on the CPU from its key. 10 DDIM steps, so that the model's output matters.
EVAL_FLAGS = ("-timesteps", "10", "-num_proposals", "3")
METRICS = ("mpjpe_mean_hypothesis", "p_mpjpe_mean_hypothesis", "mpjpe_best_pose_hypothesis")


def _last_cuda_device():
    """``cuda:N`` with N the highest index, so that a machine with several GPUs tests N > 0."""
    return f"cuda:{torch.cuda.device_count() - 1}"


def test_cuda_random_state_is_saved_and_restored():
    state = seeding.rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    drawn = torch.randn(8, device="cuda")
    torch.randn(8, device="cuda")  # move on
    seeding.set_rng_state(state)
    assert torch.equal(torch.randn(8, device="cuda"), drawn)


@pytest.fixture
def yaml_config(tiny_config, tiny_shards, tmp_path):
    cfg = tiny_config(tmp_path / "unset", train__validate_every=0)
    return str(save_config(cfg, tmp_path / "tiny.yaml")), str(tiny_shards["h36m"])


def _run(yaml_config, checkpoint, *flags):
    config, root = yaml_config
    assert main_diffusers_h36m.main(["--config", config, "-w", root, "-c", str(checkpoint), *flags]) == 0


def _metrics(checkpoint):
    return json.loads((checkpoint / "metrics.json").read_text())["metrics"]


def _fraction_equal(a, b, atol=1e-6):
    """Fraction of the elements of two state dicts that agree within ``atol``."""
    close = total = 0
    for name, tensor in a.items():
        close += torch.isclose(tensor.cpu().double(), b[name].cpu().double(), rtol=0, atol=atol).sum().item()
        total += tensor.numel()
    return close / total


def test_train_resume_evaluate_on_cuda_matches_the_cpu(yaml_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    device = _last_cuda_device()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(yaml_config, straight, "-e", "2", "--device", device)
    _run(yaml_config, resumed, "-e", "1", "--device", device)
    _run(yaml_config, resumed, "-e", "2", "-r", "latest_epoch.bin", "--device", device)
    assert f"device {device}" in (resumed / "training_log.txt").read_text()

    latest = read_checkpoint(resumed / "latest_epoch.bin")
    assert latest["epoch"] == 2
    assert len(latest["rng"][0]["rng"]["cuda"]) == torch.cuda.device_count(), "the CUDA random states are saved"
    # Resuming on CUDA continues the straight run. Some CUDA kernels sum in a varying order,
    # and AdamW's first steps move a weight by about lr (6e-5) whatever its gradient's size,
    # so a few weights with near-zero gradients may differ; with other random draws nearly all do.
    reference = read_checkpoint(straight / "latest_epoch.bin")["model_pos"]
    assert _fraction_equal(latest["model_pos"], reference) > 0.99

    # The same weights evaluated on CUDA and on the CPU.
    weights = str(resumed / "latest_epoch.bin")
    _run(yaml_config, tmp_path / "eval_cuda", "--evaluate", weights, "--device", device, *EVAL_FLAGS)
    _run(yaml_config, tmp_path / "eval_cpu", "--evaluate", weights, "--device", "cpu", *EVAL_FLAGS)
    on_cuda, on_cpu = _metrics(tmp_path / "eval_cuda"), _metrics(tmp_path / "eval_cpu")
    for name in METRICS:
        assert on_cuda[name] == pytest.approx(on_cpu[name], rel=1e-3), name

    # The whole run on the CPU: training draws its noise on the training device, so the
    # weights differ. Its 4 AdamW steps move MPJPE by about 10 % from the initial weights'
    # (measured on the CPU), and two runs differing only in their draws land within that.
    cpu_run = tmp_path / "cpu_run"
    _run(yaml_config, cpu_run, "-e", "2", "--device", "cpu")
    _run(yaml_config, cpu_run, "--evaluate", "latest_epoch.bin", "--device", "cpu", *EVAL_FLAGS)
    for name in METRICS:
        assert on_cuda[name] == pytest.approx(_metrics(cpu_run)[name], rel=0.25), name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_wraps_the_denoiser_on_its_cuda_device(tiny_config, tmp_path, monkeypatch):
    """DistributedDataParallel with device_ids=[N] on cuda:N, in a real one-process NCCL group.

    ``distributed.is_distributed`` is True only for several processes, which one GPU cannot
    host under NCCL; it is forced here so that train() takes the DDP path.
    """
    device = torch.device(_last_cuda_device())
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    wrapped = []

    class RecordingDDP(training.DistributedDataParallel):
        def __init__(self, module, **kwargs):
            wrapped.append(kwargs.get("device_ids"))
            super().__init__(module, **kwargs)

    try:
        monkeypatch.setattr(distributed, "is_distributed", lambda: True)
        monkeypatch.setattr(training, "DistributedDataParallel", RecordingDDP)
        cfg = tiny_config(tmp_path / "run", device=str(device), train__epochs=1)
        best = training.train(cfg, device=device)
    finally:
        dist.destroy_process_group()
    assert wrapped == [[device.index]]
    checkpoint = read_checkpoint(best)
    assert checkpoint["epoch"] == 1 and len(checkpoint["rng"]) == 1
    assert not any(name.startswith("module.") for name in checkpoint["model_pos"]), "saved unwrapped"

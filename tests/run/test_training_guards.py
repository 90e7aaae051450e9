"""Training cannot corrupt itself: non-finite steps stop it (or are skipped with grad_clip) and are never
saved, a finished run says so instead of training nothing silently, and kill -9 at any moment loses at
most ``train.checkpoint_minutes`` of work, never a readable checkpoint, and changes no final weight."""
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from model_fixtures import single_thread  # noqa: F401

import common.run.training as training
import main_diffusers_h36m
from common.model.checkpoints import CheckpointError, load_snappose_weights, read_checkpoint, save_checkpoint
from common.model.networks import build_model
from common.pipeline.config import output_paths, save_config

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _poison_step(monkeypatch, step):
    """Make the loss of the ``step``-th training step (1-based) NaN, as a diverging run would."""
    calls = {"n": 0}
    real = training.diffusion_loss

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == step else value

    monkeypatch.setattr(training, "diffusion_loss", loss)


def test_a_nan_loss_stops_training_and_keeps_the_good_checkpoints(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "run", train__epochs=2, train__validate_every=1)
    paths = output_paths(cfg)
    _poison_step(monkeypatch, 3)  # 2 steps per epoch: the first step of epoch 2
    with pytest.raises(training.TrainingDivergedError, match=r"epoch 2, batch 1.*train\.grad_clip"):
        training.train(cfg, device=CPU)
    latest = read_checkpoint(paths.latest)
    assert latest["epoch"] == 1 and read_checkpoint(paths.best)["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in latest["model_pos"].values())


def test_with_grad_clip_a_nan_step_is_skipped_and_counted(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=0, train__grad_clip=1.0)
    _poison_step(monkeypatch, 2)
    latest = read_checkpoint(training.train(cfg, device=CPU))
    assert latest["epoch"] == 1 and all(torch.isfinite(t).all() for t in latest["model_pos"].values())
    assert "1 non-finite steps skipped" in output_paths(cfg).training_log.read_text()
    # The skipped step took no optimizer step: AdamW counted one step per parameter, not two.
    assert {int(s["step"]) for s in latest["optimizer"]["state"].values()} == {1}


def test_a_learning_rate_that_blows_up_the_weights_stops_the_cli_with_exit_1(tiny_config, tiny_shards, tmp_path,
                                                                             caplog):
    config = save_config(tiny_config("unset"), tmp_path / "tiny.yaml")
    ck = tmp_path / "ck"
    with caplog.at_level(logging.ERROR):
        status = main_diffusers_h36m.main(["--config", str(config), "-c", str(ck), "-w", str(tiny_shards["h36m"]),
                                           "-lr", "1e30"])
    assert status == 1 and "training diverged" in caplog.text and "Lower the learning rate" in caplog.text
    assert not (ck / "latest_epoch.bin").exists() and not (ck / "best_h36m.bin").exists()


def test_non_finite_weights_are_never_saved_and_never_loaded(tiny_config, tmp_path):
    _, denoiser = build_model(tiny_config("unset").model)
    path = save_checkpoint(tmp_path / "latest_epoch.bin", denoiser, epoch=1)
    good = path.read_bytes()
    with torch.no_grad():
        denoiser.head[1].weight[0, 0] = float("nan")
        denoiser.coord_3d_embed.bias[0] = float("inf")
    with pytest.raises(CheckpointError, match=r"refusing to write .*2 of \d+ tensors .*coord_3d_embed\.bias"):
        save_checkpoint(path, denoiser, epoch=2)
    assert path.read_bytes() == good
    state = read_checkpoint(path)
    state["model_pos"] = denoiser.state_dict()
    torch.save(state, tmp_path / "diverged.bin")  # as a diverged run of older code wrote it
    with pytest.raises(CheckpointError, match=r"diverged\.bin: 2 of \d+ tensors hold NaN.*coord_3d_embed\.bias.*head\.1\.weight"):
        load_snappose_weights(build_model(tiny_config("unset").model)[1], tmp_path / "diverged.bin")


def test_resuming_a_finished_run_says_what_to_do(tiny_config, tmp_path, caplog):
    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=0)
    training.train(cfg, device=CPU)
    paths = output_paths(cfg)
    before = (paths.latest.read_bytes(), paths.training_log.read_text())
    with caplog.at_level(logging.WARNING):
        assert training.train(cfg, resume=paths.latest, device=CPU) == paths.latest
    assert "has finished 1 epochs and -e (train.epochs) is 1: nothing to train" in caplog.text
    assert "e.g. -e 11" in caplog.text
    assert (paths.latest.read_bytes(), paths.training_log.read_text()) == before


# --- kill -9 at random moments -------------------------------------------------------------------------

KILL_CONFIG = dict(train__epochs=2, train__validate_every=0, data__batch_size=1,  # 4 steps per epoch
                   train__checkpoint_minutes=1e-5)  # a save after (almost) every step


@pytest.fixture(scope="module")
def reference_weights(tiny_config, tmp_path_factory):
    """Final weights of an uninterrupted run with the kill tests' settings."""
    cfg = tiny_config(tmp_path_factory.mktemp("reference"), **KILL_CONFIG)
    return read_checkpoint(training.train(cfg, device=CPU))["model_pos"]


def _check_readable(path):
    """Every checkpoint on disk loads and holds finite weights (the training never leaves a torn file)."""
    if path.exists():
        checkpoint = read_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in checkpoint["model_pos"].values())
        return checkpoint
    return None


def _kill_at_random(start, latest, delay, ready, timeout=300):
    """Start a run (``start()`` returns its pid) and SIGKILL it ``delay`` seconds after ``ready()`` first holds.

    Meanwhile every checkpoint on disk must load. Returns True when the run finished before the kill.
    """
    pid, deadline, give_up = start(), None, time.monotonic() + timeout
    while time.monotonic() < give_up:
        _check_readable(latest)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the run failed before it was killed"
            return True
        if deadline is None and ready():
            deadline = time.monotonic() + delay
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    _check_readable(latest)
    return False


def _mid_epoch_checkpoint(latest):
    """True once ``latest`` is a time-based save from inside an epoch."""
    checkpoint = _check_readable(latest)
    return checkpoint is not None and checkpoint["step_in_epoch"] > 0


def _fork_training(cfg, latest):
    """A child process (forked, so nothing is imported again) that trains or resumes ``cfg``."""
    def start():
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            status = 1
            try:
                training.train(cfg, resume=latest if latest.exists() else None, device=CPU)
                status = 0
            finally:
                os._exit(status)
        return pid
    return start


def _assert_same(weights, reference):
    assert weights.keys() == reference.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], reference[name], rtol=0, atol=0, msg=f"tensor {name} differs")


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tiny_config, tmp_path, reference_weights):
    cfg = tiny_config(tmp_path / "run", **KILL_CONFIG)
    latest = output_paths(cfg).latest
    # Killed at a random moment after its first mid-epoch save, so the resume starts inside an epoch.
    finished = _kill_at_random(_fork_training(cfg, latest), latest, random.Random(1).uniform(0, 0.3),
                               lambda: _mid_epoch_checkpoint(latest))
    assert not finished, "the run ended before the kill: lengthen it"
    resumed_from = read_checkpoint(latest)
    training.train(cfg, resume=latest, device=CPU)
    final = read_checkpoint(latest)
    assert (final["epoch"], final["step_in_epoch"]) == (2, 0)
    assert (resumed_from["epoch"], resumed_from["step_in_epoch"]) < (2, 0)
    _assert_same(final["model_pos"], reference_weights)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_kill_9_several_times_through_the_command_line(tiny_config, tiny_shards, tmp_path, reference_weights, seed):
    """As a user would: ``main_diffusers_h36m.py`` killed several times, each time resumed with -r."""
    config = save_config(tiny_config("unset", **KILL_CONFIG), tmp_path / "tiny.yaml")
    ck = tmp_path / "ck"
    latest, log = ck / "latest_epoch.bin", ck / "training_log.txt"
    command = [sys.executable, "main_diffusers_h36m.py", "--config", str(config), "-c", str(ck),
               "-w", str(tiny_shards["h36m"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    starts = {"seen": 0}

    def start():
        starts["seen"] = log.read_text().count("\n# ") + log.read_text().startswith("# ") if log.exists() else 0
        resume = ["-r", "latest_epoch.bin"] if latest.exists() else []
        return subprocess.Popen(command + resume, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).pid

    def training_began():  # each start imports torch first: count from the run's own "# started" line
        text = log.read_text() if log.exists() else ""
        return text.count("\n# ") + text.startswith("# ") > starts["seen"]

    rng, kills = random.Random(seed), 0
    for _ in range(3):
        if _kill_at_random(start, latest, rng.uniform(0, 1.5), training_began):
            break
        kills += 1
    assert kills >= 1, "no run was killed: the training ended too soon"
    result = subprocess.run(command + ["-r", "latest_epoch.bin"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    final = read_checkpoint(latest)
    assert (final["epoch"], final["step_in_epoch"]) == (2, 0)
    _assert_same(final["model_pos"], reference_weights)
    assert not list(ck.glob(".*.tmp-*")) and not (ck / "training.lock").exists()

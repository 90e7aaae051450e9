"""Training on tiny shards with a tiny model: checkpoints, logs, frozen parts, resume and interruptions."""
import os
import signal

import pytest
import torch
from model_fixtures import assert_same_weights, fail_at_train_step, single_thread  # noqa: F401

import common.run.training as training
from common.model.checkpoints import CONTEXT_PREFIXES, read_checkpoint
from common.model.networks import build_model
from common.pipeline.config import output_paths
from common.run.feature_cache import FeatureCache

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def straight_run(tiny_config, tmp_path_factory):
    """Two uninterrupted epochs, validating after each: the reference for the resume tests."""
    cfg = tiny_config(tmp_path_factory.mktemp("straight"), train__validate_every=1)
    best = training.train(cfg, device=CPU)
    return cfg, best


def test_two_epochs_write_checkpoints_logs_and_config(straight_run):
    cfg, best = straight_run
    paths = output_paths(cfg)
    assert best == paths.best and best.name == "best_h36m.bin"
    latest = read_checkpoint(paths.latest)
    assert latest["epoch"] == 2 and latest["step_in_epoch"] == 0
    assert latest["lr"] == pytest.approx(6e-5 * 0.993 ** 2, rel=1e-12)
    assert latest["optimizer"]["state"], "the optimizer state is saved for resuming"
    best_checkpoint = read_checkpoint(paths.best)
    assert best_checkpoint["best_mpjpe"] == pytest.approx(best_checkpoint["val_metrics"]["mpjpe_mean_hypothesis"])
    assert latest["best_mpjpe"] == pytest.approx(best_checkpoint["best_mpjpe"])
    lines = [line for line in paths.training_log.read_text().splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and all("val MPJPE" in line for line in lines)
    assert paths.config.is_file()
    assert list(paths.tensorboard.glob("events.out.tfevents.*"))
    assert not list(paths.checkpoint_dir.glob(".*.tmp-*")), "no temporary checkpoint files are left"


# The runs below skip validation (it changes no weights) to stay fast. Each
# compares its final weights with the straight run's: equal weights need both
# an exact resume and a run that is reproducible for its seed.

def test_resume_continues_at_the_right_epoch_as_if_never_stopped(straight_run, tiny_config, tmp_path):
    cfg, _ = straight_run
    first = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=0)
    training.train(first, device=CPU)
    assert read_checkpoint(output_paths(first).latest)["epoch"] == 1
    second = tiny_config(tmp_path / "run", train__epochs=2, train__validate_every=0)
    training.train(second, resume=output_paths(second).latest, device=CPU)
    latest = read_checkpoint(output_paths(second).latest)
    assert latest["epoch"] == 2
    assert latest["lr"] == read_checkpoint(output_paths(cfg).latest)["lr"]
    assert_same_weights(output_paths(second).latest, output_paths(cfg).latest)


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(straight_run, tiny_config, tmp_path, monkeypatch):
    cfg, _ = straight_run
    run = tiny_config(tmp_path / "run", train__validate_every=0)
    # 2 batches per epoch: the 4th step is the second batch of epoch 2.
    fail_at_train_step(monkeypatch, 4, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        training.train(run, device=CPU)
    saved = read_checkpoint(output_paths(run).latest)
    assert (saved["epoch"], saved["step_in_epoch"], saved["interrupted"]) == (1, 1, True)
    monkeypatch.undo()
    training.train(run, resume=output_paths(run).latest, device=CPU)
    assert_same_weights(output_paths(run).latest, output_paths(cfg).latest)


def test_crash_mid_epoch_keeps_the_last_saved_checkpoint(straight_run, tiny_config, tmp_path, monkeypatch):
    cfg, _ = straight_run
    run = tiny_config(tmp_path / "run", train__validate_every=0, train__checkpoint_frequency=1)
    fail_at_train_step(monkeypatch, 4, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.train(run, device=CPU)
    saved = read_checkpoint(output_paths(run).latest)
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 0)
    monkeypatch.undo()
    training.train(run, resume=output_paths(run).latest, device=CPU)
    assert_same_weights(output_paths(run).latest, output_paths(cfg).latest)


def test_run_shorter_than_the_validation_interval_validates_at_the_end(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=5)
    assert training.train(cfg, device=CPU) == output_paths(cfg).best
    assert "val MPJPE" in output_paths(cfg).training_log.read_text()


def test_context_weights_stay_frozen_and_the_rest_trains(tiny_config, tmp_path):
    _, donor = build_model(tiny_config(tmp_path).model)
    context = {f"module.volume_net.{name}": t for name, t in donor.state_dict().items()
               if name.startswith(CONTEXT_PREFIXES)}
    torch.save({"model": context}, tmp_path / "capf.bin")
    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=0, weights__pretrained_context=True,
                      weights__context=str(tmp_path / "capf.bin"))
    trained = read_checkpoint(training.train(cfg, device=CPU))["model_pos"]  # latest_epoch.bin: no validation, no best
    for name, tensor in donor.state_dict().items():
        if name.startswith(CONTEXT_PREFIXES):
            assert torch.equal(trained[name], tensor), f"frozen {name} changed"
    assert not torch.equal(trained["head.1.weight"], donor.state_dict()["head.1.weight"])


def test_missing_context_file_names_the_path_and_the_flag(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "run", weights__pretrained_context=True, weights__context=str(tmp_path / "no.bin"))
    with pytest.raises(FileNotFoundError, match=r"no\.bin not found.*Context-Aware PoseFormer.*--context-weights"):
        training.train(cfg, device=CPU)


def test_sigterm_becomes_keyboard_interrupt_and_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with training.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_resume_from_a_file_with_a_foreign_optimizer_state_warns_and_continues(tiny_config, tmp_path, caplog):
    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=0)
    training.train(cfg, device=CPU)
    checkpoint = read_checkpoint(output_paths(cfg).latest)
    checkpoint["optimizer"] = {"state": {}, "param_groups": []}  # e.g. a file saved by other code
    torch.save(checkpoint, tmp_path / "foreign.bin")
    resumed = tiny_config(tmp_path / "run", train__epochs=2, train__validate_every=0)
    training.train(resumed, resume=tmp_path / "foreign.bin", device=CPU)
    assert "AdamW starts afresh" in caplog.text
    assert read_checkpoint(output_paths(resumed).latest)["epoch"] == 2


def test_feature_cache_trains_later_epochs_from_memory(tiny_config, tmp_path, monkeypatch):
    """With train.cache_features, only the first epoch reads shards and runs the backbone."""
    cfg = tiny_config(tmp_path, train__epochs=3, train__validate_every=0, train__cache_features=True)
    calls = {"backbone_images": 0, "steps": 0}
    original_prepare, original_step = training._prepare, training._train_step

    def counting_prepare(batch, backbone, device):
        calls["backbone_images"] += len(batch["key"])
        return original_prepare(batch, backbone, device)

    def counting_step(*args, **kwargs):
        calls["steps"] += 1
        return original_step(*args, **kwargs)

    monkeypatch.setattr(training, "_prepare", counting_prepare)
    monkeypatch.setattr(training, "_train_step", counting_step)
    latest = training.train(cfg, device=CPU)
    # tiny_shards: 4 h36m training samples in batches of 2 -> 2 steps per epoch.
    assert calls["backbone_images"] == 4, "the backbone runs on each training image once"
    assert calls["steps"] == 3 * 2, "cached epochs visit every sample once"
    checkpoint = read_checkpoint(latest)
    assert checkpoint["epoch"] == 3 and checkpoint["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in checkpoint["model_pos"].values())


def test_feature_cache_batches_cover_every_sample_once():
    cache = FeatureCache()
    for start in (0, 3):
        n = 3
        ids = torch.arange(start, start + n, dtype=torch.float32)
        cache.add(features=[ids.view(n, 1, 1, 1).expand(n, 2, 4, 4)], keypoints=ids.view(n, 1, 1, 1),
                  ref=ids.view(n, 1, 1), pose=ids.view(n, 1, 1, 1))
    cache.finish()
    assert len(cache) == 6 and len(list(cache.batches(4, torch.Generator()))) == 2
    seen = []
    for batch in cache.batches(4, torch.Generator().manual_seed(0)):
        # Every field of a cached batch belongs to the same samples.
        torch.testing.assert_close(batch["features"][0][:, 0, 0, 0], batch["pose"].flatten())
        torch.testing.assert_close(batch["ref"].flatten(), batch["keypoints"].flatten())
        seen += batch["pose"].flatten().tolist()
    assert sorted(seen) == list(range(6))


def test_warmup_and_clipping(tiny_config, tmp_path, monkeypatch):
    """The learning rate ramps up linearly over train.warmup_steps; train.grad_clip reaches every step
    (that clipping bounds the gradient is tested in tests/run/test_learning.py)."""
    cfg = tiny_config(tmp_path, train__epochs=1, train__validate_every=0, train__warmup_steps=4,
                      train__grad_clip=1e-3, train__lr=1e-3)
    seen = []
    original_step = training._train_step

    def recording_step(model, inputs, scheduler, optimizer, generator, grad_clip=None):
        seen.append((optimizer.param_groups[0]["lr"], grad_clip))
        return original_step(model, inputs, scheduler, optimizer, generator, grad_clip)

    monkeypatch.setattr(training, "_train_step", recording_step)
    training.train(cfg, device=CPU)
    assert [lr for lr, _ in seen] == pytest.approx([1e-3 * 1 / 4, 1e-3 * 2 / 4])
    assert all(clip == 1e-3 for _, clip in seen)

"""The context cache: same loss as the image path, exact resume, refusals, safe disk files."""
import errno
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from model_fixtures import assert_same_weights, fail_at_train_step, single_thread  # noqa: F401

import common.run.context_cache as context_cache
import common.run.training as training
from common.core.errors import ConfigError
from common.core.files import DiskFullError
from common.data.loader import build_loader
from common.model.checkpoints import CONTEXT_PREFIXES, load_context_weights, read_checkpoint
from common.model.diffusion import diffusion_loss, make_ddpm_scheduler
from common.model.networks import build_model
from common.pipeline.config import output_paths
from common.run.cli import build_parser, overrides_from_args
from common.run.seeding import epoch_generator

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def capf_file(tiny_config, tmp_path_factory):
    """A CA-PF-layout file holding a tiny denoiser's (random) context layers."""
    folder = tmp_path_factory.mktemp("capf")
    _, donor = build_model(tiny_config(folder).model)
    context = {f"module.volume_net.{name}": t for name, t in donor.state_dict().items()
               if name.startswith(CONTEXT_PREFIXES)}
    torch.save({"model": context}, folder / "capf.bin")
    return folder / "capf.bin"


@pytest.fixture
def cached_config(tiny_config, capf_file):
    """``tiny_config`` with frozen CA-PF context layers and the context cache on."""
    def make(checkpoint, **overrides):
        values = {"weights__pretrained_context": True, "weights__context": str(capf_file),
                  "train__context_cache": "memory", "train__validate_every": 0, **overrides}
        return tiny_config(checkpoint, **values)
    return make


def _networks(cfg):
    backbone, denoiser = cfg.networks(CPU)
    load_context_weights(denoiser, cfg.context_weights)
    return backbone, denoiser


def test_cached_loss_equals_the_image_path_without_stochastic_depth(cached_config, tmp_path):
    """Per training batch of the image path (random flips), the cached rows of the same samples
    and views give the same loss for the same noise and timesteps."""
    cfg = cached_config(tmp_path, model__drop_path_rate=0.0)
    backbone, denoiser = _networks(cfg)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert cache.context.shape == (4, 2, 5, 17, 32) and cache.context.dtype == torch.float32
    # Which view a training sample is: compare its 2D input with the test-mode decoding of both views.
    test_views = {}
    for batch in build_loader(cfg.data.root, "h36m", train=False, batch_size=4, split="train"):
        test_views.update(zip(batch["key"], batch["keypoints_2d"]))
    denoiser.train()
    scheduler = make_ddpm_scheduler(cfg.train.num_train_timesteps)
    cached_model = context_cache.CachedContextDenoiser(denoiser)
    seen_views = set()
    loader = build_loader(cfg.data.root, "h36m", train=True, batch_size=2, shuffle_buffer=4, seed=3)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            index = torch.tensor([cache.keys.index(key) for key in batch["key"]])
            view = torch.tensor([0 if torch.equal(kp, test_views[key][0]) else 1
                                 for key, kp in zip(batch["key"], batch["keypoints_2d"])])
            for key, kp, v in zip(batch["key"], batch["keypoints_2d"], view):
                assert torch.equal(kp, test_views[key][v]), "a training view is one of the two test views"
            seen_views.update(view.tolist())
            inputs = training._prepare(batch, backbone, CPU)
            expected = diffusion_loss(denoiser, inputs["pose"], inputs["keypoints"], inputs["ref"],
                                      inputs["features"], scheduler, generator=torch.Generator().manual_seed(epoch))
            torch.testing.assert_close(cache.pose[index, view], inputs["pose"], rtol=0, atol=0)
            cached = context_cache.context_diffusion_loss(cached_model, cache.pose[index, view],
                                                          cache.context[index, view], scheduler,
                                                          generator=torch.Generator().manual_seed(epoch))
            torch.testing.assert_close(cached, expected, rtol=0, atol=1e-6)
    assert seen_views == {0, 1}, "both the original and the mirrored view were compared"


def test_stochastic_depth_of_the_context_blocks_is_what_the_cache_leaves_out(cached_config, tmp_path):
    """With drop_path_rate > 0 the context in training mode varies from call to call; the cache holds the eval one."""
    cfg = cached_config(tmp_path, model__drop_path_rate=0.2)
    backbone, denoiser = _networks(cfg)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    batch = next(iter(build_loader(cfg.data.root, "h36m", train=False, batch_size=4, split="train")))
    features = backbone(batch["image"][:, 0])
    args = (batch["keypoints_2d"][:, :1], batch["ref"][:, 0], features)
    with torch.no_grad():
        denoiser.eval()
        torch.testing.assert_close(denoiser.encode_context(*args), cache.context[:, 0], rtol=0, atol=1e-6)
        denoiser.train()
        assert not torch.allclose(denoiser.encode_context(*args), cache.context[:, 0], atol=1e-3)


def test_epoch_plan_is_a_function_of_seed_rank_and_epoch():
    cache = context_cache.ContextCache(torch.zeros(50, 2, 5, 17, 8), torch.zeros(50, 2, 1, 17, 3),
                                       [str(i) for i in range(50)])
    order, view = cache.plan(epoch_generator(seed=1, epoch=3))
    again_order, again_view = cache.plan(epoch_generator(seed=1, epoch=3))
    assert torch.equal(order, again_order) and torch.equal(view, again_view)
    assert sorted(order.tolist()) == list(range(50))
    assert set(view.tolist()) == {0, 1}
    next_order, next_view = cache.plan(epoch_generator(seed=1, epoch=4))
    assert not torch.equal(order, next_order) and not torch.equal(view, next_view)
    other_rank, _ = cache.plan(epoch_generator(seed=1, epoch=3, rank=1))
    assert not torch.equal(order, other_rank)


def test_batches_pair_each_context_with_the_target_of_its_view():
    N = 7
    ids = torch.arange(N, dtype=torch.float32)
    context = torch.stack([ids, ids + 100], dim=1).view(N, 2, 1, 1, 1).expand(N, 2, 5, 17, 4)
    pose = torch.stack([ids, ids + 100], dim=1).view(N, 2, 1, 1, 1).expand(N, 2, 1, 17, 3)
    cache = context_cache.ContextCache(context.to(torch.bfloat16), pose, [str(i) for i in range(N)])
    seen = []
    for batch in cache.batches(3, epoch_generator(0, 0)):
        assert batch["context"].dtype == torch.float32 and batch["context"].shape[1:] == (5, 17, 4)
        torch.testing.assert_close(batch["context"][:, 0, 0, 0], batch["pose"][:, 0, 0, 0])
        seen += [int(v) % 100 for v in batch["pose"][:, 0, 0, 0]]
    assert sorted(seen) == list(range(N))


def test_training_from_the_cache_never_runs_the_backbone_after_building_it(cached_config, tmp_path, monkeypatch):
    cfg = cached_config(tmp_path, train__epochs=2)

    def no_images(*args, **kwargs):
        raise AssertionError("an image batch was prepared although the context cache is on")

    monkeypatch.setattr(training, "_prepare", no_images)
    checkpoint = read_checkpoint(training.train(cfg, device=CPU))
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 4  # 4 samples, batches of 2
    assert checkpoint["config"]["train"]["context_cache"] == "memory"


@pytest.fixture(scope="module")
def straight_cached_run(tiny_config, capf_file, tmp_path_factory):
    """Two uninterrupted epochs from the disk cache: the reference of the resume tests."""
    cfg = tiny_config(tmp_path_factory.mktemp("straight"), weights__pretrained_context=True,
                      weights__context=str(capf_file), train__context_cache="disk", train__validate_every=0,
                      train__epochs=2)
    training.train(cfg, device=CPU)
    return cfg


def test_resume_at_an_epoch_boundary_reuses_the_disk_cache_and_repeats_the_run(
        straight_cached_run, cached_config, tmp_path, monkeypatch):
    first = cached_config(tmp_path, train__context_cache="disk", train__epochs=1)
    training.train(first, device=CPU)
    assert context_cache.cache_path(tmp_path).is_file()
    computed = []
    real = context_cache.compute_context_cache
    monkeypatch.setattr(context_cache, "compute_context_cache", lambda *a, **k: computed.append(1) or real(*a, **k))
    resumed = cached_config(tmp_path, train__context_cache="disk", train__epochs=2)
    training.train(resumed, resume=output_paths(resumed).latest, device=CPU)
    assert not computed, "the resumed run read the cache from disk"
    assert_same_weights(output_paths(resumed).latest, output_paths(straight_cached_run).latest)


def test_ctrl_c_mid_epoch_resumes_exactly_with_a_memory_cache(straight_cached_run, cached_config, tmp_path,
                                                              monkeypatch):
    run = cached_config(tmp_path, train__epochs=2)  # memory: the resumed run computes the cache again
    fail_at_train_step(monkeypatch, 4, KeyboardInterrupt())  # the second (last) batch of epoch 2
    with pytest.raises(KeyboardInterrupt):
        training.train(run, device=CPU)
    saved = read_checkpoint(output_paths(run).latest)
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)
    monkeypatch.undo()
    training.train(run, resume=output_paths(run).latest, device=CPU)
    assert_same_weights(output_paths(run).latest, output_paths(straight_cached_run).latest)


@pytest.mark.parametrize("overrides, message", [
    ({"weights__pretrained_context": False}, "pretrained_context is false"),
    ({"model__shuffle_context": True}, "shuffle_context"),
    ({"train__cache_features": True}, "cache_features"),
])
def test_refuses_configurations_a_cache_would_change(cached_config, tmp_path, overrides, message):
    cfg = cached_config(tmp_path, **overrides)
    with pytest.raises(ConfigError, match=message):
        training.train(cfg, device=CPU)
    assert not output_paths(cfg).latest.exists()


def test_refuses_a_denoiser_whose_context_still_trains(cached_config, tmp_path):
    cfg = cached_config(tmp_path)
    backbone, denoiser = cfg.networks(CPU)  # context weights not loaded, so not frozen
    with pytest.raises(ConfigError, match="still take gradients"):
        context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)


def test_masking_ablations_are_cached_as_applied(cached_config, tmp_path):
    cfg = cached_config(tmp_path, model__mask_pose=True)
    backbone, denoiser = _networks(cfg)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert not cache.context[:, :, 0].any() and cache.context[:, :, 1:].any()


def test_config_and_flag_values(cached_config, tmp_path):
    with pytest.raises(ConfigError, match="train.context_cache"):
        cached_config(tmp_path, train__context_cache="yes")
    with pytest.raises(ConfigError, match="train.context_cache_dtype"):
        cached_config(tmp_path, train__context_cache_dtype="float16")
    args = build_parser("h36m").parse_args(["--context-cache", "disk"])
    assert overrides_from_args(args)["train.context_cache"] == "disk"
    assert "train.context_cache" not in overrides_from_args(build_parser("h36m").parse_args([]))


class _Bomb:
    """Unpickling this calls ``open(path, "w")``: proof that a loader executed code from the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_disk_cache_is_read_without_running_code_and_rebuilt_when_foreign(cached_config, tmp_path, caplog):
    cfg = cached_config(tmp_path, train__context_cache="disk")
    backbone, denoiser = _networks(cfg)
    path = context_cache.cache_path(tmp_path)
    marker = tmp_path / "code-ran"
    with open(path, "wb") as handle:
        pickle.dump({"format_version": 1, "payload": _Bomb(marker)}, handle)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert not marker.exists(), "loading the cache file ran code from it"
    assert "not used" in caplog.text and len(cache) == 4
    saved = torch.load(path, weights_only=True)  # what was written back holds tensors, strings and numbers only
    torch.testing.assert_close(saved["context"], cache.context, rtol=0, atol=0)


def test_a_disk_cache_of_other_weights_or_samples_is_rebuilt(cached_config, tmp_path, caplog):
    cfg = cached_config(tmp_path, train__context_cache="disk")
    backbone, denoiser = _networks(cfg)
    first = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    with torch.no_grad():
        denoiser.context_blocks[0].norm2.weight.add_(1.0)  # norm1 feeds zero-initialised layers only
    changed = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "differs in: weights" in caplog.text
    assert not torch.equal(first.context, changed.context)
    fewer = cached_config(tmp_path, train__context_cache="disk", data__max_train_samples=3)
    assert len(context_cache.prepare_context_cache(fewer, backbone, denoiser, CPU, tmp_path, progress=False)) == 3


def test_bfloat16_storage_halves_the_size_and_stays_close(cached_config, tmp_path):
    cfg = cached_config(tmp_path, train__context_cache_dtype="bfloat16")
    backbone, denoiser = _networks(cfg)
    half = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    full = context_cache.prepare_context_cache(cached_config(tmp_path), backbone, denoiser, CPU, tmp_path,
                                               progress=False)
    assert half.context.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits: a relative rounding error of at most 2^-8.
    torch.testing.assert_close(half.context.float(), full.context, rtol=2 ** -8, atol=1e-6)


@pytest.mark.slow
def test_two_processes_train_from_their_own_disk_caches(cached_config, tiny_shards, tmp_path):
    """Under torchrun each process caches its share of the samples in its own file; DDP trains from them."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    from common.pipeline.config import save_config

    cfg = cached_config(tmp_path / "unused", train__context_cache="disk", train__epochs=2)
    config = str(save_config(cfg, tmp_path / "tiny.yaml"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "main_diffusers_h36m.py", "--config", config, "-c", str(tmp_path / "two"), "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    files = [context_cache.cache_path(tmp_path / "two", rank, 2) for rank in range(2)]
    sizes = [len(torch.load(f, weights_only=True)["keys"]) for f in files]
    assert sizes == [2, 2], "the four training samples are split between the processes"
    assert read_checkpoint(tmp_path / "two" / "latest_epoch.bin")["epoch"] == 2


def _disk_cache(cached_config, tmp_path, **overrides):
    cfg = cached_config(tmp_path, train__context_cache="disk", **overrides)
    backbone, denoiser = _networks(cfg)
    return cfg, backbone, denoiser, context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path,
                                                                        progress=False)


def test_a_truncated_disk_cache_is_rebuilt(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = context_cache.cache_path(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "not used: it does not load" in caplog.text
    torch.testing.assert_close(again.context, first.context, rtol=0, atol=0)


def test_one_changed_byte_of_the_contexts_is_caught_by_the_digest(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = context_cache.cache_path(tmp_path)
    raw = bytearray(path.read_bytes())
    where = raw.find(first.context[1].contiguous().numpy().tobytes()[:64])  # inside the stored tensor data
    assert where > 0
    raw[where + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "does not match its digest" in caplog.text
    torch.testing.assert_close(again.context, first.context, rtol=0, atol=0)


def test_a_disk_cache_of_another_precision_or_shard_set_is_rebuilt(cached_config, tiny_shards, tmp_path, caplog):
    _disk_cache(cached_config, tmp_path)
    _, _, _, half = _disk_cache(cached_config, tmp_path, train__context_cache_dtype="bfloat16")
    assert "differs in: dtype" in caplog.text and half.context.dtype == torch.bfloat16
    caplog.clear()
    other = tmp_path / "other-shards"
    shutil.copytree(tiny_shards["h36m"], other)
    _disk_cache(cached_config, tmp_path, train__context_cache_dtype="bfloat16", data__root=str(other))
    assert "differs in: shards" in caplog.text


def test_a_full_disk_while_saving_keeps_the_previous_cache(cached_config, tmp_path, monkeypatch):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = context_cache.cache_path(tmp_path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(context_cache.torch, "save", full)
    with pytest.raises(DiskFullError, match="disk is full"):
        first.save(path, {"another": "fingerprint"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "context_cache" in p.name] == [path.name]  # no partial left


def test_a_build_killed_while_saving_leaves_no_file_taken_as_complete(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = context_cache.cache_path(tmp_path)
    path.unlink()
    # What kill -9 in the middle of torch.save leaves: half a temporary, of a process that is gone.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = path.with_name(f".{path.name}.tmp-{int(dead.stdout)}")
    orphan.write_bytes(b"PK\x03\x04 half a cache")
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "read from" not in caplog.text  # computed afresh, not read from the leftover
    torch.testing.assert_close(again.context, first.context, rtol=0, atol=0)
    assert not orphan.exists() and path.is_file()

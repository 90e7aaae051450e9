"""The context cache: same loss as the image path, exact resume, refusals, safe disk files."""
import errno
import logging
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from model_fixtures import assert_same_weights, fail_at_train_step, single_thread  # noqa: F401

import common.run.context_cache as context_cache
import common.run.context_draws as context_draws
import common.run.training as training
from common.core.errors import ConfigError
from common.core.files import DiskFullError
from common.data.loader import build_loader, find_shards
from common.data.samples import device_images
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


def _all(cache, name="context"):
    """A cache's stored tensors over its parts: context (N, 2, D, 5, J, c) or pose (N, 2, 1, J, 3)."""
    return torch.cat([getattr(part, name) for part in cache.parts])


def _cache(N, draws=0, parts=1, dtype=torch.float32, width=4):
    """A ContextCache whose rows say what they are: context value 1000 * draw + 100 * view + sample."""
    ids = torch.arange(N, dtype=torch.float32)
    D = max(draws, 1)
    value = ids.view(N, 1, 1) + 100 * torch.arange(2).view(1, 2, 1) + 1000 * torch.arange(D).view(1, 1, D)
    context = value.view(N, 2, D, 1, 1, 1).expand(N, 2, D, 5, 17, width).to(dtype)
    pose = (ids.view(N, 1) + 100 * torch.arange(2).view(1, 2)).view(N, 2, 1, 1, 1).expand(N, 2, 1, 17, 3)
    keys = [f"s_09_act_02_subact_01_ca_01_{i:06d}" for i in range(N)]
    bounds = torch.linspace(0, N, parts + 1).long().tolist()
    return context_cache.ContextCache([context_cache.CachePart(context[a:b], pose[a:b], keys[a:b])
                                       for a, b in zip(bounds, bounds[1:])], draws, seed=0)


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
    contexts, poses = _all(cache), _all(cache, "pose")
    assert contexts.shape == (4, 2, 1, 5, 17, 32) and contexts.dtype == torch.float32
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
            torch.testing.assert_close(poses[index, view], inputs["pose"], rtol=0, atol=0)
            cached = context_cache.context_diffusion_loss(cached_model, poses[index, view],
                                                          contexts[index, view, 0], scheduler,
                                                          generator=torch.Generator().manual_seed(epoch))
            torch.testing.assert_close(cached, expected, rtol=0, atol=1e-6)
    assert seen_views == {0, 1}, "both the original and the mirrored view were compared"


def _build_features(cfg, backbone):
    """The backbone features of the training samples in the batches the build uses (``feature_batches`` of each
    shard's loader), so that comparisons with the cache see the same batched convolutions."""
    specs = context_cache.part_specs(find_shards(cfg.data.root, "train"), 0, 1)
    for spec in specs:
        yield from context_cache.feature_batches(context_cache._build_loader(cfg, spec, None), backbone, CPU)


@pytest.mark.parametrize("draws", [1, 3])
def test_without_stochastic_depth_every_draw_is_the_image_paths_context(cached_config, tmp_path, draws):
    """drop_path_rate 0: each of the R stored contexts equals the training-mode forward to 1e-6."""
    cfg = cached_config(tmp_path, model__drop_path_rate=0.0, train__context_cache_draws=draws)
    backbone, denoiser = _networks(cfg)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    contexts = _all(cache)
    assert contexts.shape[:3] == (4, 2, draws)
    denoiser.train()
    with torch.no_grad():
        for batch in _build_features(cfg, backbone):
            expected = denoiser.encode_context(batch["keypoints"], batch["ref"], batch["features"])  # (2B, 5, J, c)
            rows = contexts[[cache.keys.index(key) for key in batch["keys"]]]  # (B, 2, R, 5, J, c)
            for r in range(draws):
                torch.testing.assert_close(rows[:, :, r].flatten(0, 1), expected, rtol=0, atol=1e-6)


def _training_mode_draws(rates, batch_size, seed):
    """The keep decisions ``DropPath`` draws from the global generator in a training-mode ``encode_context``
    seeded with ``seed``: in block order, the deformable branch then the MLP branch, none where the rate is 0."""
    torch.manual_seed(seed)
    keep = torch.ones(batch_size, len(rates), 2, dtype=torch.bool)
    for block, rate in enumerate(rates):
        if rate > 0:
            for branch in range(2):
                keep[:, block, branch] = torch.empty(batch_size).bernoulli_(1.0 - rate).bool()
    return keep


def test_a_given_keep_pattern_gives_the_training_mode_forward_under_that_pattern(cached_config, tmp_path):
    """Explicit decisions (in eval mode, as the cache builds) equal training mode's own draws, 1 / (1 - rate) included."""
    cfg = cached_config(tmp_path, model__drop_path_rate=0.6)
    backbone, denoiser = _networks(cfg)
    rates = denoiser.context_drop_rates
    assert rates == pytest.approx((0.0, 0.2, 0.4, 0.6))
    batch = next(iter(build_loader(cfg.data.root, "h36m", train=False, batch_size=4, split="train")))
    args = (batch["keypoints_2d"][:, :1], batch["ref"][:, 0], backbone(device_images(batch, CPU, test=True)[:, 0]))
    with torch.no_grad():
        for seed in range(5):
            keep = _training_mode_draws(rates, 4, seed)
            torch.manual_seed(seed)
            denoiser.train()
            drawn = denoiser.encode_context(*args)
            denoiser.eval()
            torch.testing.assert_close(denoiser.encode_context(*args, keep=keep), drawn, rtol=0, atol=1e-6)
        all_kept = denoiser.encode_context(*args, keep=torch.ones(4, 4, 2, dtype=torch.bool))
        assert not torch.allclose(all_kept, denoiser.encode_context(*args), atol=1e-4), "kept branches are rescaled"
        # And a cached draw is exactly the context under its stored pattern.
        cfg = cached_config(tmp_path, model__drop_path_rate=0.6, train__context_cache_draws=3)
        cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
        for built in _build_features(cfg, backbone):
            keep = context_draws.batch_keep_decisions(cfg.seed, built["keys"], 3, rates)  # (2B, 3, 4, 2)
            rows = _all(cache)[[cache.keys.index(key) for key in built["keys"]]].flatten(0, 1)  # (2B, 3, 5, J, c)
            for r in range(3):
                expected = denoiser.encode_context(built["keypoints"], built["ref"], built["features"], keep=keep[:, r])
                torch.testing.assert_close(rows[:, r], expected, rtol=0, atol=1e-6)


def test_the_drawn_decisions_follow_each_blocks_and_branchs_rate():
    """Over 20,000 draws each block's keep frequency is 1 - rate, for both branches, independent of the key."""
    rates = (0.0, 0.2 / 3, 0.4 / 3, 0.2)
    keys = [f"s_01_act_{i % 15 + 2:02d}_subact_01_ca_01_{i:06d}" for i in range(1000)]
    decisions = torch.cat([context_draws.sample_keep_decisions(7, key, 10, rates) for key in keys])  # (2000, 10, 4, 2)
    kept = decisions.double().mean(dim=(0, 1))  # (4 blocks, 2 branches)
    expected = 1.0 - torch.tensor(rates, dtype=torch.float64)[:, None].expand(4, 2)
    # 20,000 Bernoulli draws: the standard error is at most 0.0035; the nearest wrong rate is 0.067 away.
    torch.testing.assert_close(kept, expected, rtol=0, atol=0.015)
    assert (decisions[:, :, 0] == 1).all(), "a rate of 0 never drops"
    again = context_draws.sample_keep_decisions(7, keys[3], 10, rates)
    assert torch.equal(again, decisions[6:8]), "the draws are a function of the seed and the key"
    assert not torch.equal(context_draws.sample_keep_decisions(8, keys[3], 10, rates), again)


def test_each_epoch_reads_every_draw_once_per_cycle_and_uniformly():
    hashes = context_draws.key_hashes([str(i) for i in range(4000)])
    epochs = torch.stack([context_draws.epoch_draws(hashes, 4, seed=3, epoch=e) for e in range(8)])  # (8, N)
    for cycle in (epochs[:4], epochs[4:]):
        assert (cycle.sort(dim=0).values == torch.arange(4)[:, None]).all(), "each draw once in R epochs"
    counts = torch.bincount(epochs[0], minlength=4).double() / 4000
    torch.testing.assert_close(counts, torch.full((4,), 0.25, dtype=torch.float64), rtol=0, atol=0.03)
    assert not torch.equal(epochs[:4], epochs[4:]), "a new order every cycle"
    assert torch.equal(context_draws.epoch_draws(hashes[10:20], 4, 3, 5), epochs[5, 10:20]), "per key, not per row"


def test_epoch_plan_is_a_function_of_seed_rank_and_epoch():
    cache = _cache(50)
    order, view = cache.plan(epoch_generator(seed=1, epoch=3))
    again_order, again_view = cache.plan(epoch_generator(seed=1, epoch=3))
    assert torch.equal(order, again_order) and torch.equal(view, again_view)
    assert sorted(order.tolist()) == list(range(50))
    assert set(view.tolist()) == {0, 1}
    next_order, next_view = cache.plan(epoch_generator(seed=1, epoch=4))
    assert not torch.equal(order, next_order) and not torch.equal(view, next_view)
    other_rank, _ = cache.plan(epoch_generator(seed=1, epoch=3, rank=1))
    assert not torch.equal(order, other_rank)


@pytest.mark.parametrize("draws, parts, dtype", [(0, 1, torch.bfloat16), (3, 3, torch.float32)])
def test_batches_pair_each_context_with_the_target_of_its_view_and_the_epochs_draw(draws, parts, dtype):
    N = 7
    cache = _cache(N, draws, parts, dtype=dtype)  # bfloat16 holds integers up to 256 exactly
    for epoch in range(3):
        seen = []
        expected_draws = cache.epoch_draws(epoch)
        for batch in cache.batches(3, epoch_generator(0, epoch), epoch=epoch):
            assert batch["context"].dtype == torch.float32 and batch["context"].shape[1:] == (5, 17, 4)
            value = batch["context"][:, 0, 0, 0]
            torch.testing.assert_close(value % 1000, batch["pose"][:, 0, 0, 0])
            sample = (batch["pose"][:, 0, 0, 0] % 100).long()
            assert torch.equal((value // 1000).long(), expected_draws[sample])
            seen += sample.tolist()
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
    assert context_cache.part_path(context_cache.cache_dir(tmp_path), 1).is_file()
    computed = []
    real = context_cache.compute_part
    monkeypatch.setattr(context_cache, "compute_part", lambda *a, **k: computed.append(1) or real(*a, **k))
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


def test_ctrl_c_mid_epoch_resumes_exactly_with_drawn_contexts(tiny_config, capf_file, cached_config, tmp_path,
                                                              monkeypatch):
    """R = 2 draws and the released stochastic depth: stopped in the middle of epoch 2, resumed from the disk cache,
    the run ends with the weights of an uninterrupted one."""
    drawn = {"train__context_cache": "disk", "train__context_cache_draws": 2, "model__drop_path_rate": 0.2,
             "train__epochs": 3}
    straight = cached_config(tmp_path / "straight", **drawn)
    training.train(straight, device=CPU)
    run = cached_config(tmp_path / "stopped", **drawn)
    fail_at_train_step(monkeypatch, 4, KeyboardInterrupt())  # the second (last) batch of epoch 2
    with pytest.raises(KeyboardInterrupt):
        training.train(run, device=CPU)
    monkeypatch.undo()
    computed = []
    real = context_cache.compute_part
    monkeypatch.setattr(context_cache, "compute_part", lambda *a, **k: computed.append(1) or real(*a, **k))
    training.train(run, resume=output_paths(run).latest, device=CPU)
    assert not computed, "the resumed run read its parts from disk"
    assert_same_weights(output_paths(run).latest, output_paths(straight).latest)


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
    contexts = _all(context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False))
    assert not contexts[:, :, :, 0].any() and contexts[:, :, :, 1:].any()


def test_config_and_flag_values(cached_config, tmp_path):
    with pytest.raises(ConfigError, match="train.context_cache"):
        cached_config(tmp_path, train__context_cache="yes")
    with pytest.raises(ConfigError, match="train.context_cache_dtype"):
        cached_config(tmp_path, train__context_cache_dtype="float16")
    with pytest.raises(ConfigError, match="train.context_cache_draws"):
        cached_config(tmp_path, train__context_cache_draws=-1)
    args = build_parser("h36m").parse_args(["--context-cache", "disk", "--context-cache-draws", "4"])
    assert overrides_from_args(args)["train.context_cache"] == "disk"
    assert overrides_from_args(args)["train.context_cache_draws"] == 4
    assert "train.context_cache" not in overrides_from_args(build_parser("h36m").parse_args([]))


class _Bomb:
    """Unpickling this calls ``open(path, "w")``: proof that a loader executed code from the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _part(folder, index=0):
    return context_cache.part_path(context_cache.cache_dir(folder), index)


def test_a_disk_cache_is_read_without_running_code_and_rebuilt_when_foreign(cached_config, tmp_path, caplog):
    cfg = cached_config(tmp_path, train__context_cache="disk")
    backbone, denoiser = _networks(cfg)
    path = _part(tmp_path)
    path.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    with open(path, "wb") as handle:
        pickle.dump({"format_version": 3, "payload": _Bomb(marker)}, handle)
    cache = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert not marker.exists(), "loading the cache file ran code from it"
    assert "not used" in caplog.text and len(cache) == 4
    saved = torch.load(path, weights_only=True)  # what was written back holds tensors, strings and numbers only
    torch.testing.assert_close(saved["context"], cache.parts[0].context, rtol=0, atol=0)


def test_a_disk_cache_of_other_weights_or_samples_is_rebuilt(cached_config, tmp_path, caplog):
    cfg = cached_config(tmp_path, train__context_cache="disk")
    backbone, denoiser = _networks(cfg)
    first = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    with torch.no_grad():
        denoiser.context_blocks[0].norm2.weight.add_(1.0)  # norm1 feeds zero-initialised layers only
    changed = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "differs in: weights" in caplog.text
    assert not torch.equal(_all(first), _all(changed))
    fewer = cached_config(tmp_path, train__context_cache="disk", data__max_train_samples=3)
    assert len(context_cache.prepare_context_cache(fewer, backbone, denoiser, CPU, tmp_path, progress=False)) == 3


@pytest.mark.parametrize("change, differs", [
    ({"train__context_cache_draws": 3}, "draws"),
    ({"model__drop_path_rate": 0.4}, "drop_rates"),
    ({"seed": 5}, "draw_seed"),
])
def test_a_changed_number_of_draws_rate_or_seed_rebuilds(cached_config, tmp_path, caplog, change, differs):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path, model__drop_path_rate=0.2,
                                                 train__context_cache_draws=2)
    changed = cached_config(tmp_path, train__context_cache="disk", **{"model__drop_path_rate": 0.2,
                                                                      "train__context_cache_draws": 2, **change})
    backbone, denoiser = _networks(changed)
    again = context_cache.prepare_context_cache(changed, backbone, denoiser, CPU, tmp_path, progress=False)
    assert f"differs in: {differs}" in caplog.text
    assert not torch.equal(_all(again)[:, :, :1], _all(first)[:, :, :1]) or again.draws != first.draws


def test_bfloat16_storage_halves_the_size_and_stays_close(cached_config, tmp_path):
    cfg = cached_config(tmp_path, train__context_cache_dtype="bfloat16")
    backbone, denoiser = _networks(cfg)
    half = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    full = context_cache.prepare_context_cache(cached_config(tmp_path), backbone, denoiser, CPU, tmp_path,
                                               progress=False)
    assert half.dtype == torch.bfloat16 and half.nbytes() * 2 == full.nbytes()
    # bfloat16 keeps 8 significant bits: a relative rounding error of at most 2^-8.
    torch.testing.assert_close(_all(half).float(), _all(full), rtol=2 ** -8, atol=1e-6)


@pytest.mark.slow
def test_two_processes_train_from_their_own_disk_caches(cached_config, tiny_shards, tmp_path):
    """Under torchrun each process caches its share of the samples in its own folder; DDP trains from them."""
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
    folders = [context_cache.cache_dir(tmp_path / "two", rank, 2) for rank in range(2)]
    sizes = [sum(len(torch.load(f, weights_only=True)["keys"]) for f in folder.glob("part-*.pt"))
             for folder in folders]
    assert sizes == [2, 2], "the four training samples are split between the processes"
    assert read_checkpoint(tmp_path / "two" / "latest_epoch.bin")["epoch"] == 2


def _disk_cache(cached_config, tmp_path, **overrides):
    cfg = cached_config(tmp_path, train__context_cache="disk", **overrides)
    backbone, denoiser = _networks(cfg)
    return cfg, backbone, denoiser, context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path,
                                                                        progress=False)


def test_a_build_interrupted_after_a_shard_resumes_at_the_next_one(cached_config, tmp_path, monkeypatch):
    """Ctrl-C in the second shard's part keeps the first; the next build computes only the second, and the
    result equals an uninterrupted build."""
    cfg, backbone, denoiser, straight = _disk_cache(cached_config, tmp_path / "straight", model__drop_path_rate=0.2,
                                                    train__context_cache_draws=2)
    real, calls = context_cache.compute_part, []

    def interrupted(batches, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(batches, *args, **kwargs)

    monkeypatch.setattr(context_cache, "compute_part", interrupted)
    cfg = cached_config(tmp_path, train__context_cache="disk", model__drop_path_rate=0.2, train__context_cache_draws=2)
    with pytest.raises(KeyboardInterrupt):
        context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert _part(tmp_path, 0).is_file() and not _part(tmp_path, 1).exists()
    calls.clear()
    resumed = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert len(calls) == 1, "only the unfinished shard was computed again"
    assert resumed.keys == straight.keys
    torch.testing.assert_close(_all(resumed), _all(straight), rtol=0, atol=0)


def test_a_truncated_part_is_rebuilt(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = _part(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "not used: it does not load" in caplog.text
    torch.testing.assert_close(_all(again), _all(first), rtol=0, atol=0)


def test_one_changed_byte_of_the_contexts_is_caught_by_the_digest(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = _part(tmp_path)
    raw = bytearray(path.read_bytes())
    where = raw.find(first.parts[0].context[1].contiguous().numpy().tobytes()[:64])  # inside the stored tensor data
    assert where > 0
    raw[where + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "does not match its digest" in caplog.text
    torch.testing.assert_close(_all(again), _all(first), rtol=0, atol=0)


def test_a_disk_cache_of_another_precision_or_shard_set_is_rebuilt(cached_config, tiny_shards, tmp_path, caplog):
    _disk_cache(cached_config, tmp_path)
    _, _, _, half = _disk_cache(cached_config, tmp_path, train__context_cache_dtype="bfloat16")
    assert "differs in: dtype" in caplog.text and half.dtype == torch.bfloat16
    caplog.clear()
    other = tmp_path / "other-shards"
    shutil.copytree(tiny_shards["h36m"], other)
    _disk_cache(cached_config, tmp_path, train__context_cache_dtype="bfloat16", data__root=str(other))
    assert "shards" in caplog.text and "differs in" in caplog.text


def test_a_full_disk_while_saving_keeps_the_previous_part(cached_config, tmp_path, monkeypatch):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = _part(tmp_path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(context_cache.torch, "save", full)
    with pytest.raises(DiskFullError, match="disk is full"):
        first.parts[0].save(path, {"another": "fingerprint"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-000000.pt", "part-000001.pt"]  # no partial left


def test_a_build_killed_while_saving_leaves_no_file_taken_as_complete(cached_config, tmp_path, caplog):
    cfg, backbone, denoiser, first = _disk_cache(cached_config, tmp_path)
    path = _part(tmp_path)
    path.unlink()
    # What kill -9 in the middle of torch.save leaves: half a temporary, of a process that is gone.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = path.with_name(f".{path.name}.tmp-{int(dead.stdout)}")
    orphan.write_bytes(b"PK\x03\x04 half a cache")
    caplog.set_level(logging.INFO, logger=context_cache.__name__)
    again = context_cache.prepare_context_cache(cfg, backbone, denoiser, CPU, tmp_path, progress=False)
    assert "1 shard part(s) computed, 1 read" in caplog.text  # the leftover was not taken for the part
    torch.testing.assert_close(_all(again), _all(first), rtol=0, atol=0)
    assert not orphan.exists() and path.is_file()

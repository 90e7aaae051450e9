"""Context cache: training epochs from the frozen context instead of images and the backbone.

Once the Context-Aware PoseFormer layers are loaded (and frozen), nothing in
``SnapPoseDenoiser.encode_context`` trains: for a given image view and a given
stochastic-depth pattern of the context blocks, its output, the context
(5, J, c), is fixed. This module computes it once per training sample for both
views (the original and its mirror image), keeps it in memory or in
``<checkpoint>/context_cache/`` (one part file per shard), and serves shuffled
batches of it, so that an epoch runs only ``denoise`` and the optimizer.

``train.context_cache_draws`` (R) says which contexts are kept:

- R = 0, the eval-mode context: the frozen blocks' stochastic depth (rates
  linspace(0, drop_path_rate, 4)) is not applied. With ``model.drop_path_rate: 0``
  the loss of a batch is that of the image path; otherwise it is not the paper's recipe.
- R >= 1: R contexts per sample and view, each under its own keep pattern
  (Bernoulli(1 - rate) per block and branch, ``DropPath``'s law), drawn from the
  seed and the sample's key (``common.run.context_draws``); each epoch reads one
  of them, chosen from the seed, the epoch and the key, so that each epoch's
  context has the law of the image path's.

Each epoch chooses its sample order and, per sample, which view to train on
from the seed, the process rank and the epoch alone, so a resumed run repeats
an uninterrupted one exactly. The image path's shuffle buffer and flip draws
are not reproduced: the two paths see the samples in other orders.
``data.max_train_samples`` caps the cache at the first samples in shard order,
the same ones every epoch.

Building is one pass over the process's training shards (loader workers,
batches of ``data.batch_size``, the backbone once per view, the context blocks
R times), shard by shard; in disk mode each shard's part is saved as soon as it
is done, so Ctrl-C or kill -9 during the build loses at most the shard in progress.

It refuses configurations it would change silently (``check_config``): context
layers that train (``weights.pretrained_context: false``), ``model.shuffle_context``
(a new token order at every forward pass), and ``train.cache_features`` at the
same time. ``mask_pose`` and ``mask_context`` are fixed functions of the
context and are cached as applied.

Part files are read with ``torch.load(weights_only=True)`` (tensors, strings
and numbers only, never code) and memory-mapped; a part is used only when its
fingerprint (weights of the backbone and the context layers, shard files,
sample cap, model switches, precision, draws and drop rates, seed, process
layout, the part's own shard) matches the run and its content matches the
SHA-256 digest stored with it (a truncated, damaged or edited file is rebuilt,
never used); hashing reads each file once per run, about a second per GB. Parts
are written atomically: a full disk or a killed build leaves the previous
file, never a partial one under a part's name.
"""
import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from common.core.errors import ConfigError
from common.core.files import atomic_write, remove_orphaned_temporaries
from common.core.skeleton import flip_pose_3d
from common.data.counts import count_samples, process_share
from common.data.loader import ShardPlan, build_loader, find_shards, sample_quota
from common.data.samples import device_images
from common.model.denoiser import CONTEXT_PREFIXES
from common.model.diffusion import epsilon_loss
from common.run.context_draws import batch_keep_decisions, epoch_draws, key_hashes

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: one file per shard, R stochastic-depth draws per sample and view
# Rows of the cache hashed at a time.
_DIGEST_ROWS = 4096
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_config(cfg):
    """Raise ConfigError when ``cfg.train.context_cache`` is on but a cached context would be wrong."""
    if cfg.train.context_cache == "off":
        return
    problems = []
    if not cfg.weights.pretrained_context:
        problems.append("weights.pretrained_context is false, so the context layers start random and train: "
                        "their output changes at every step. Load the Context-Aware PoseFormer weights "
                        "(weights.pretrained_context: true), which freezes them")
    if cfg.model.shuffle_context:
        problems.append("model.shuffle_context draws a new order of the level tokens at every forward pass; "
                        "a cache would fix one order for the whole run")
    if cfg.train.cache_features:
        problems.append("train.cache_features is true as well; the context cache already skips the images and "
                        "the backbone and keeps 17x less per sample, so set train.cache_features: false")
    if cfg.train.context_cache_draws > 1 and cfg.model.drop_path_rate == 0:
        log.warning("train.context_cache_draws is %d but model.drop_path_rate is 0: every draw is the same "
                    "context; train.context_cache_draws: 1 keeps one", cfg.train.context_cache_draws)
    if problems:
        raise ConfigError(f"train.context_cache: {cfg.train.context_cache} cannot be used: "
                          + "; ".join(problems) + ". Otherwise set train.context_cache: off.")


class CachedContextDenoiser(nn.Module):
    """The denoiser's second half as a module of its own.

    Training from cached contexts calls ``denoise`` only; wrapping it in a
    module whose ``forward`` is that call lets DistributedDataParallel, which
    hooks ``forward``, synchronise the gradients as usual.
    """

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, context, noisy_3d, t):
        return self.denoiser.denoise(context, noisy_3d, t)


def context_diffusion_loss(model, pose_3d, context, scheduler, generator=None):
    """``diffusion.diffusion_loss`` on a cached context: the same draws, ``denoise`` only.

    Args:
        model: a ``CachedContextDenoiser`` (possibly in DDP).
        pose_3d: (B, 1, J, 3) target of the view the context is of.
        context: (B, 5, J, c) float32.
    """
    return epsilon_loss(lambda noisy, t: model(context, noisy, t), pose_3d, scheduler, generator)


class CachePart:
    """The cached contexts of one shard (of this process's share of it), both views, R draws each.

    Attributes:
        context: (n, 2, D, 5, J, c) float32 or bfloat16 on the CPU; view 0 is the original
            image, view 1 its mirror image; D = R draws of the blocks' stochastic depth
            (D = 1 for the eval-mode context, R = 0).
        pose: (n, 2, 1, J, 3) float32, metres, root-relative; view 1 flipped.
        keys: the n sample keys, in shard order.
    """

    def __init__(self, context, pose, keys):
        n = len(keys)
        if context.dim() != 6 or context.shape[:2] != (n, 2) or pose.shape[:2] != (n, 2) or pose.shape[-1] != 3:
            raise ValueError(f"expected context (n={n}, 2, D, 5, J, c) and pose (n, 2, 1, J, 3), "
                             f"got {tuple(context.shape)} and {tuple(pose.shape)}")
        self.context, self.pose, self.keys = context, pose, list(keys)

    def __len__(self):
        return len(self.keys)

    def digest(self):
        """SHA-256 of the contexts, targets and keys: what a damaged or edited file fails."""
        digest = hashlib.sha256()
        for tensor in (self.context, self.pose):
            flat = tensor.reshape(len(tensor), -1)
            for start in range(0, len(flat), _DIGEST_ROWS):  # in slices, so a memory-mapped part stays on disk
                digest.update(flat[start:start + _DIGEST_ROWS].contiguous().view(torch.uint8).numpy())
        digest.update("\n".join(self.keys).encode())
        return digest.hexdigest()

    def save(self, path, fingerprint):
        """Write the part, its fingerprint and its digest atomically (a temporary file renamed into place).

        Raises:
            DiskFullError: the disk filled up; a previous file there is kept.
        """
        remove_orphaned_temporaries(path)  # what a killed build left
        with atomic_write(path) as stream:
            torch.save({"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "digest": self.digest(),
                        "context": self.context, "pose": self.pose, "keys": self.keys}, stream)

    @classmethod
    def load(cls, path, fingerprint):
        """The part in ``path`` if it is well formed and its fingerprint equals ``fingerprint``.

        Returns (part or None, reason it is not usable or None). Only tensors,
        strings and numbers are unpickled (``weights_only=True``), memory-mapped.
        """
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # torch.load raises many types for foreign or damaged files
            return None, f"it does not load as a tensor file ({type(error).__name__}: {error})"
        if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
            return None, f"it is not a version-{FORMAT_VERSION} context cache part"
        if obj.get("fingerprint") != fingerprint:
            saved = obj.get("fingerprint") if isinstance(obj.get("fingerprint"), dict) else {}
            changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            return None, f"it was made for another run (differs in: {', '.join(changed)})"
        context, pose, keys = obj.get("context"), obj.get("pose"), obj.get("keys")
        if not (isinstance(context, torch.Tensor) and isinstance(pose, torch.Tensor) and isinstance(keys, list)
                and all(isinstance(key, str) for key in keys)):
            return None, "it lacks the context, pose or keys entries"
        try:
            part = cls(context, pose, keys)
        except ValueError as error:
            return None, str(error)
        if obj.get("digest") != part.digest():
            return None, "its content does not match its digest (the file is damaged or was edited)"
        return part, None


class ContextCache:
    """Contexts and 3D targets of N training samples, both views, R draws each, in parts.

    ``batches`` serves an epoch: the sample order and each sample's view from
    the epoch's generator (seed, rank, epoch), the draw from ``context_draws.epoch_draws``
    (seed, epoch, key).
    """

    def __init__(self, parts, draws=0, seed=0):
        self.parts = [part for part in parts if len(part)]
        if not self.parts:
            raise ValueError("a context cache needs at least one sample")
        stored = {part.context.shape[2] for part in self.parts}
        if stored != {max(draws, 1)}:
            raise ValueError(f"expected {max(draws, 1)} stored draws per sample and view, found {sorted(stored)}")
        self.draws, self.seed = draws, seed
        self.offsets = torch.tensor([0] + [len(part) for part in self.parts]).cumsum(0)  # (P + 1,)
        self.keys = [key for part in self.parts for key in part.keys]
        self._hashes = key_hashes(self.keys) if draws > 1 else None

    def __len__(self):
        return len(self.keys)

    @property
    def dtype(self):
        return self.parts[0].context.dtype

    def nbytes(self):
        """Bytes of the stored contexts."""
        return sum(part.context.numel() * part.context.element_size() for part in self.parts)

    def plan(self, generator):
        """(order (N,), view (N,) in {0, 1}): a random permutation and a fair coin per sample."""
        order = torch.randperm(len(self), generator=generator)
        view = torch.randint(0, 2, (len(self),), generator=generator)
        return order, view

    def epoch_draws(self, epoch):
        """(N,) the stored draw each sample reads in ``epoch`` (all 0 with one stored context)."""
        if self.draws <= 1:
            return torch.zeros(len(self), dtype=torch.int64)
        return epoch_draws(self._hashes, self.draws, self.seed, epoch)

    def rows(self, index, view, draw, name="context"):
        """Stored rows ``name`` ("context" or "pose") of samples ``index`` (B,), views and draws (B,)."""
        part = torch.bucketize(index, self.offsets[1:], right=True)  # (B,) which part holds each sample
        first = self.parts[0].context if name == "context" else self.parts[0].pose
        out = torch.empty((len(index),) + first.shape[3:], dtype=first.dtype)
        for p in part.unique().tolist():
            chosen = (part == p).nonzero().squeeze(1)
            local = index[chosen] - self.offsets[p]
            if name == "context":
                out[chosen] = self.parts[p].context[local, view[chosen], draw[chosen]]
            else:
                out[chosen] = self.parts[p].pose[local, view[chosen], 0]
        return out

    def batches(self, batch_size, generator, device=None, epoch=0):
        """Yield dicts ``context`` (B, 5, J, c) float32 and ``pose`` (B, 1, J, 3) in the order of ``plan``."""
        order, view = self.plan(generator)
        draw = self.epoch_draws(epoch)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield {"context": self.rows(index, view[index], draw[index]).to(device=device, dtype=torch.float32),
                   "pose": self.rows(index, view[index], draw[index], "pose")[:, None].to(device)}


def feature_batches(loader, backbone, device):
    """The backbone's features of both views of each batch of an evaluation-mode loader.

    Yields dicts: ``features`` four maps (2B, C_l, h_l, w_l), views side by side
    (sample-major); ``keypoints`` (2B, 1, J, 2); ``ref`` (2B, J, 2); ``pose`` (B, 1, J, 3)
    of the original view; ``keys`` (B names).
    """
    for batch in loader:
        with torch.no_grad():
            features = backbone(device_images(batch, device, test=True).flatten(0, 1))
        yield {"features": features, "keypoints": batch["keypoints_2d"].to(device).flatten(0, 1)[:, None],
               "ref": batch["ref"].to(device).flatten(0, 1), "pose": batch["keypoints_3d"], "keys": batch["key"]}


@torch.no_grad()
def compute_part(batches, denoiser, draws=0, seed=0, dtype=torch.float32, progress=None):
    """Run the context layers over ``feature_batches``: once in eval mode (R = 0), or R times under drawn patterns.

    Args:
        batches: iterable of ``feature_batches`` dicts.
        denoiser: the network (its mode is restored afterwards).
        draws: R; pattern r of a sample and view is ``context_draws.sample_keep_decisions(seed, key, R)[view, r]``.
        dtype: storage precision of the contexts.
        progress: a tqdm bar to advance by samples, or None.
    Returns:
        CachePart on the CPU (possibly empty).
    """
    was_training = denoiser.training
    denoiser.eval()
    contexts, poses, keys = [], [], []
    try:
        for batch in batches:
            B = len(batch["keys"])
            args = (batch["keypoints"], batch["ref"], batch["features"])
            if draws == 0:
                context = denoiser.encode_context(*args)[:, None]  # (2B, 1, 5, J, c)
            else:
                keep = batch_keep_decisions(seed, batch["keys"], draws, denoiser.context_drop_rates)
                keep = keep.to(batch["ref"].device)  # (2B, R, blocks, 2)
                context = torch.stack([denoiser.encode_context(*args, keep=keep[:, r]) for r in range(draws)], 1)
            contexts.append(context.reshape(B, 2, *context.shape[1:]).to("cpu", dtype))  # (B, 2, D, 5, J, c)
            pose = batch["pose"].cpu()  # (B, 1, J, 3), the original view's
            poses.append(torch.stack([pose, flip_pose_3d(pose)], dim=1))  # (B, 2, 1, J, 3)
            keys += batch["keys"]
            if progress is not None:
                progress.update(B)
    finally:
        denoiser.train(was_training)
    if not keys:
        J, c = denoiser.Spatial_pos_embed.shape[2:]
        return CachePart(torch.empty(0, 2, max(draws, 1), 5, J, c, dtype=dtype), torch.empty(0, 2, 1, J, 3), [])
    return CachePart(torch.cat(contexts), torch.cat(poses), keys)


def cache_dir(checkpoint_dir, rank=0, world_size=1):
    """``<checkpoint>/context_cache/``, one folder per process when there are several."""
    suffix = "" if world_size == 1 else f".rank{rank}-of-{world_size}"
    return Path(checkpoint_dir) / f"context_cache{suffix}"


def part_path(folder, index):
    return Path(folder) / f"part-{index:06d}.pt"


def _weights_digest(*state_dicts):
    digest = hashlib.sha256()
    for state in state_dicts:
        for name, tensor in state.items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(cfg, backbone, denoiser, rank=0, world_size=1):
    """What the cache's content depends on, as a dict of strings and numbers (each part adds its shard)."""
    shards = find_shards(cfg.data.root, "train")
    context_state = {name: t for name, t in denoiser.state_dict().items() if name.startswith(CONTEXT_PREFIXES)}
    draws = cfg.train.context_cache_draws
    return {
        "dataset": cfg.dataset,
        "shards": "\n".join(f"{url} {os.path.getsize(url) if os.path.isfile(url) else ''}" for url in shards),
        "max_train_samples": -1 if cfg.data.max_train_samples is None else cfg.data.max_train_samples,
        "skip_bad": int(cfg.data.skip_bad),
        "weights": _weights_digest(backbone.state_dict(), context_state),
        "mask_pose": int(cfg.model.mask_pose),
        "mask_context": int(cfg.model.mask_context),
        "dtype": cfg.train.context_cache_dtype,
        "draws": draws,
        "drop_rates": ",".join(f"{rate:.9g}" for rate in denoiser.context_drop_rates) if draws else "",
        "draw_seed": cfg.seed if draws else -1,
        "rank": rank,
        "world_size": world_size,
    }


def describe_mode(context_cache, draws):
    """The context a run trains from, in words (logs, ``training_log.txt``, ``metrics.json``).

    Args:
        context_cache: ``train.context_cache`` ("off", "memory", "disk").
        draws: ``train.context_cache_draws``.
    """
    if context_cache == "off":
        return "from images: the frozen context blocks' stochastic depth drawn at every step"
    if draws == 0:
        return f"context cache ({context_cache}), eval-mode context: no stochastic depth in the frozen context blocks"
    return f"context cache ({context_cache}), {draws} draw(s) of the frozen context blocks' stochastic depth"


def describe_checkpoint(checkpoint):
    """``describe_mode`` of the run that wrote a checkpoint (its saved config), or None when it does not say."""
    train = checkpoint.get("config", {}).get("train") if isinstance(checkpoint.get("config"), dict) else None
    if not isinstance(train, dict) or not isinstance(train.get("context_cache"), str):
        return None
    draws = train.get("context_cache_draws", 0)
    return describe_mode(train["context_cache"], draws if isinstance(draws, int) else 0)


class _PartSpec:
    """One shard of this process's share: which loader reads it, and where its part is kept."""

    def __init__(self, index, url, rank, world_size):
        self.index, self.url, self.rank, self.world_size = index, url, rank, world_size

    def fingerprint(self, base):
        size = os.path.getsize(self.url) if os.path.isfile(self.url) else ""
        return {**base, "part": self.index, "shard": f"{self.url} {size}"}


def part_specs(shards, rank, world_size):
    """This process's parts: its own shards (every world_size-th), or all shards divided by sample when fewer."""
    plan = ShardPlan(len(shards), rank, world_size)
    if plan.by_shard(world_size):
        return [_PartSpec(i, url, 0, 1) for i, url in enumerate(shards[rank::world_size])]
    return [_PartSpec(i, url, rank, world_size) for i, url in enumerate(shards)]


class _Budget:
    """``data.max_train_samples``: this process's quota of its own shards, or the first N overall when
    the processes divide each shard by sample."""

    def __init__(self, cfg, specs, shards, rank, world_size):
        limit = cfg.data.max_train_samples
        self.by_sample = bool(specs) and specs[0].world_size > 1
        self.left = limit if self.by_sample else sample_quota(limit, rank, world_size)
        self.counts = count_samples(shards) if self.by_sample and limit is not None else None
        if self.by_sample and limit is not None and self.counts is None:
            raise ConfigError("data.max_train_samples with the context cache needs local shards whose samples "
                              "can be counted when there are fewer shards than processes")

    def loader_limit(self):
        return self.left

    def spend(self, spec, part):
        if self.left is not None:
            self.left -= self.counts[spec.index] if self.by_sample else len(part)
            self.left = max(self.left, 0)

    def exhausted(self):
        return self.left == 0


def _build_loader(cfg, spec, limit):
    return build_loader([spec.url], cfg.dataset, train=False, batch_size=cfg.data.batch_size,
                        num_workers=cfg.data.num_workers, max_samples=limit, skip_bad=cfg.data.skip_bad,
                        seed=cfg.seed, rank=spec.rank, world_size=spec.world_size)


def _progress_bar(cfg, shards, rank, world_size, progress):
    counts = count_samples(shards)
    total = None
    if counts is not None:
        total = process_share(counts, rank, world_size, max_samples=cfg.data.max_train_samples)
    return tqdm(desc="context cache", unit="sample", total=total, disable=not progress, dynamic_ncols=True)


def prepare_context_cache(cfg, backbone, denoiser, device, checkpoint_dir, rank=0, world_size=1, progress=True):
    """The context cache of this run and process: parts read from disk when valid, the others computed.

    One pass over this process's training shards, shard by shard: each shard's
    part is read back when a valid file of it exists (disk mode), else computed
    (backbone once per view, the context blocks once per draw) and, in disk mode,
    saved before the next shard starts, so an interrupted build resumes at the
    first shard without a valid part. Call after the context weights are loaded.

    Raises:
        ConfigError: for the configurations ``check_config`` refuses, and when a
            context parameter still takes gradients.
    """
    check_config(cfg)
    if not denoiser.context_frozen:
        raise ConfigError("train.context_cache is on but some context parameters still take gradients; "
                          "the cache needs them frozen (load the CA-PF weights) or train.context_cache: off")
    shards = find_shards(cfg.data.root, "train")
    specs = part_specs(shards, rank, world_size)
    folder = cache_dir(checkpoint_dir, rank, world_size) if cfg.train.context_cache == "disk" else None
    base = fingerprint(cfg, backbone, denoiser, rank, world_size)
    log.info("training %s", describe_mode(cfg.train.context_cache, cfg.train.context_cache_draws))
    budget = _Budget(cfg, specs, shards, rank, world_size)
    bar = _progress_bar(cfg, shards, rank, world_size, progress)
    parts, built, read = [], 0, 0
    # Building draws no random numbers from the global generators; forking keeps it so, whatever the loader does.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), bar:
        for spec in specs:
            if budget.exhausted():
                break
            part = _read_part(folder, spec, base) if folder is not None else None
            if part is None:
                part = _compute_and_keep(cfg, spec, budget.loader_limit(), backbone, denoiser, device, folder,
                                         base, bar)
                built += 1
            else:
                bar.update(len(part))
                read += 1
            budget.spend(spec, part)
            parts.append(part)
    if not any(len(part) for part in parts):
        raise RuntimeError("the context cache is empty: the training shards gave no samples")
    cache = ContextCache(parts, cfg.train.context_cache_draws, cfg.seed)
    log.info("context cache: %d samples x 2 views x %d context(s), %.1f MiB (%s); %d shard part(s) computed, "
             "%d read%s", len(cache), max(cache.draws, 1), cache.nbytes() / 2**20, cfg.train.context_cache_dtype,
             built, read, f" from {folder}" if folder is not None else "")
    return cache


def _read_part(folder, spec, base):
    path = part_path(folder, spec.index)
    if not path.is_file():
        return None
    part, reason = CachePart.load(path, spec.fingerprint(base))
    if part is None:
        log.warning("context cache part %s not used: %s; computing it again", path, reason)
    return part


def _compute_and_keep(cfg, spec, limit, backbone, denoiser, device, folder, base, bar):
    loader = _build_loader(cfg, spec, limit)
    part = compute_part(feature_batches(loader, backbone, device), denoiser, cfg.train.context_cache_draws,
                        cfg.seed, DTYPES[cfg.train.context_cache_dtype], bar)
    if folder is not None:
        part.save(part_path(folder, spec.index), spec.fingerprint(base))
    return part

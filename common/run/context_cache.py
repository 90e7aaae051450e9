"""Context cache: training epochs from the frozen context instead of images and the backbone.

Once the Context-Aware PoseFormer layers are loaded (and frozen), nothing in
``SnapPoseDenoiser.encode_context`` trains: for a given image view its output,
the context (5, J, c), is fixed. This module computes it once per training
sample for both views (the original and its mirror image), keeps it in memory
or in ``<checkpoint>/context_cache.pt``, and serves shuffled batches of it, so
that an epoch runs only ``denoise`` and the optimizer.

What it changes, against training from images (``train.context_cache: off``):

- The context is computed in eval mode, so the stochastic depth of the frozen
  context blocks (rates linspace(0, drop_path_rate, 4)) is not applied; the
  denoiser's own blocks keep theirs. With ``model.drop_path_rate: 0`` the loss
  of a batch is that of the image path (up to float rounding of batched
  convolutions); otherwise it is the loss of the deterministic context.
- Each epoch chooses its sample order and, per sample, which view to train on
  from the seed, the process rank and the epoch alone, so a resumed run repeats
  an uninterrupted one exactly. The image path's shuffle buffer and flip draws
  are not reproduced: the two paths see the samples in other orders.
- ``data.max_train_samples`` caps the cache at the first samples in shard
  order, the same ones every epoch.

It refuses configurations it would change silently (``check_config``): context
layers that train (``weights.pretrained_context: false``), ``model.shuffle_context``
(a new token order at every forward pass), and ``train.cache_features`` at the
same time. ``mask_pose`` and ``mask_context`` are fixed functions of the
context and are cached as applied.

A disk cache is read with ``torch.load(weights_only=True)`` (tensors, strings
and numbers only, never code) and memory-mapped; it is used only when its
fingerprint (weights of the backbone and the context layers, shard files,
sample cap, model switches, precision, process layout) matches the run and
its content matches the SHA-256 digest stored with it (a truncated, damaged or
edited file is rebuilt, never used); hashing reads the file once per run, about
a second per GB. It is written atomically: a full disk or a killed build
leaves the previous file, never a partial one under the cache's name.
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
from common.data.loader import build_loader, find_shards
from common.data.samples import device_images
from common.model.denoiser import CONTEXT_PREFIXES
from common.model.diffusion import epsilon_loss

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: a SHA-256 digest of the content, checked on reading
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


class ContextCache:
    """Contexts and 3D targets of N training samples, both views each.

    Attributes:
        context: (N, 2, 5, J, c) float32 or bfloat16 on the CPU; view 0 is the
            original image, view 1 its mirror image.
        pose: (N, 2, 1, J, 3) float32, metres, root-relative; view 1 flipped.
        keys: the N sample keys, in shard order.
    """

    def __init__(self, context, pose, keys):
        N = len(keys)
        if context.dim() != 5 or context.shape[:2] != (N, 2) or pose.shape[:2] != (N, 2) or pose.shape[-1] != 3:
            raise ValueError(f"expected context (N={N}, 2, 5, J, c) and pose (N, 2, 1, J, 3), "
                             f"got {tuple(context.shape)} and {tuple(pose.shape)}")
        self.context, self.pose, self.keys = context, pose, list(keys)

    def __len__(self):
        return len(self.keys)

    def plan(self, generator):
        """(order (N,), view (N,) in {0, 1}): a random permutation and a fair coin per sample."""
        order = torch.randperm(len(self), generator=generator)
        view = torch.randint(0, 2, (len(self),), generator=generator)
        return order, view

    def batches(self, batch_size, generator, device=None):
        """Yield dicts ``context`` (B, 5, J, c) float32 and ``pose`` (B, 1, J, 3) in the order of ``plan``."""
        order, view = self.plan(generator)
        for start in range(0, len(order), batch_size):
            index, chosen = order[start:start + batch_size], view[order[start:start + batch_size]]
            yield {"context": self.context[index, chosen].to(device=device, dtype=torch.float32),
                   "pose": self.pose[index, chosen].to(device)}

    def digest(self):
        """SHA-256 of the cached contexts, targets and keys: what a damaged or edited file fails."""
        digest = hashlib.sha256()
        for tensor in (self.context, self.pose):
            flat = tensor.reshape(len(tensor), -1)
            for start in range(0, len(flat), _DIGEST_ROWS):  # in slices, so a memory-mapped cache stays on disk
                digest.update(flat[start:start + _DIGEST_ROWS].contiguous().view(torch.uint8).numpy())
        digest.update("\n".join(self.keys).encode())
        return digest.hexdigest()

    def save(self, path, fingerprint):
        """Write the cache, its fingerprint and its digest atomically (a temporary file renamed into place).

        Raises:
            DiskFullError: the disk filled up; a previous cache file there is kept.
        """
        remove_orphaned_temporaries(path)  # what a killed build left
        with atomic_write(path) as stream:
            torch.save({"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "digest": self.digest(),
                        "context": self.context, "pose": self.pose, "keys": self.keys}, stream)

    @classmethod
    def load(cls, path, fingerprint):
        """The cache in ``path`` if it is well formed and its fingerprint equals ``fingerprint``.

        Returns (cache or None, reason it is not usable or None). Only tensors,
        strings and numbers are unpickled (``weights_only=True``), memory-mapped.
        """
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # torch.load raises many types for foreign or damaged files
            return None, f"it does not load as a tensor file ({type(error).__name__}: {error})"
        if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
            return None, f"it is not a version-{FORMAT_VERSION} context cache"
        if obj.get("fingerprint") != fingerprint:
            saved = obj.get("fingerprint") if isinstance(obj.get("fingerprint"), dict) else {}
            changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            return None, f"it was made for another run (differs in: {', '.join(changed)})"
        context, pose, keys = obj.get("context"), obj.get("pose"), obj.get("keys")
        if not (isinstance(context, torch.Tensor) and isinstance(pose, torch.Tensor) and isinstance(keys, list)):
            return None, "it lacks the context, pose or keys entries"
        try:
            cache = cls(context, pose, keys)
        except ValueError as error:
            return None, str(error)
        if obj.get("digest") != cache.digest():
            return None, "its content does not match its digest (the file is damaged or was edited)"
        return cache, None


@torch.no_grad()
def compute_context_cache(backbone, denoiser, loader, device, dtype=torch.float32, progress=True):
    """Run the backbone and ``encode_context`` (eval mode) over both views of every sample of ``loader``.

    Args:
        backbone, denoiser: the networks (the denoiser's mode is restored afterwards).
        loader: an evaluation-mode loader (``build_loader(train=False)``): image
            (B, 2, 3, 256, 192), keypoints_2d and ref (B, 2, J, 2), keypoints_3d (B, 1, J, 3).
        dtype: storage precision of the contexts.
    Returns:
        ContextCache on the CPU.
    """
    was_training = denoiser.training
    denoiser.eval()
    contexts, poses, keys = [], [], []
    try:
        for batch in tqdm(loader, desc="context cache", unit="batch", disable=not progress, leave=False):
            B = len(batch["key"])
            features = backbone(device_images(batch, device, test=True).flatten(0, 1))  # views side by side: (2B, C_l, h_l, w_l)
            keypoints = batch["keypoints_2d"].to(device).flatten(0, 1)[:, None]  # (2B, 1, J, 2)
            context = denoiser.encode_context(keypoints, batch["ref"].to(device).flatten(0, 1), features)
            contexts.append(context.reshape(B, 2, *context.shape[1:]).to("cpu", dtype))  # (B, 2, 5, J, c)
            pose = batch["keypoints_3d"]  # (B, 1, J, 3), the original view's
            poses.append(torch.stack([pose, flip_pose_3d(pose)], dim=1))  # (B, 2, 1, J, 3)
            keys += batch["key"]
    finally:
        denoiser.train(was_training)
    if not keys:
        raise RuntimeError("the context cache is empty: the training shards gave no samples")
    return ContextCache(torch.cat(contexts), torch.cat(poses), keys)


def cache_path(checkpoint_dir, rank=0, world_size=1):
    """``<checkpoint>/context_cache.pt``, one file per process when there are several."""
    suffix = "" if world_size == 1 else f".rank{rank}-of-{world_size}"
    return Path(checkpoint_dir) / f"context_cache{suffix}.pt"


def _weights_digest(*state_dicts):
    digest = hashlib.sha256()
    for state in state_dicts:
        for name, tensor in state.items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(cfg, backbone, denoiser, rank=0, world_size=1):
    """What a cache's content depends on, as a dict of strings and numbers."""
    shards = find_shards(cfg.data.root, "train")
    context_state = {name: t for name, t in denoiser.state_dict().items() if name.startswith(CONTEXT_PREFIXES)}
    return {
        "dataset": cfg.dataset,
        "shards": "\n".join(f"{url} {os.path.getsize(url) if os.path.isfile(url) else ''}" for url in shards),
        "max_train_samples": -1 if cfg.data.max_train_samples is None else cfg.data.max_train_samples,
        "skip_bad": int(cfg.data.skip_bad),
        "weights": _weights_digest(backbone.state_dict(), context_state),
        "mask_pose": int(cfg.model.mask_pose),
        "mask_context": int(cfg.model.mask_context),
        "dtype": cfg.train.context_cache_dtype,
        "rank": rank,
        "world_size": world_size,
    }


def prepare_context_cache(cfg, backbone, denoiser, device, checkpoint_dir, rank=0, world_size=1, progress=True):
    """The context cache of this run and process: loaded from disk when valid, else computed (and saved).

    Call after the context weights are loaded. Raises ConfigError for the
    configurations ``check_config`` refuses and when a context parameter
    still takes gradients.
    """
    check_config(cfg)
    if not denoiser.context_frozen:
        raise ConfigError("train.context_cache is on but some context parameters still take gradients; "
                          "the cache needs them frozen (load the CA-PF weights) or train.context_cache: off")
    path = cache_path(checkpoint_dir, rank, world_size)
    expected = None
    if cfg.train.context_cache == "disk":
        expected = fingerprint(cfg, backbone, denoiser, rank, world_size)
        if path.is_file():
            cache, reason = ContextCache.load(path, expected)
            if cache is not None:
                log.info("context cache: %d samples x 2 views read from %s", len(cache), path)
                return cache
            log.warning("context cache %s not used: %s; computing it again", path, reason)
    if cfg.model.drop_path_rate > 0:
        log.info("context cache: computed in eval mode, so the frozen context blocks train without their "
                 "stochastic depth (drop_path_rate %.3g); the denoiser's other blocks keep it",
                 cfg.model.drop_path_rate)
    loader = build_loader(cfg.data.root, cfg.dataset, train=False, batch_size=cfg.data.eval_batch_size,
                          num_workers=cfg.data.num_workers, max_samples=cfg.data.max_train_samples,
                          skip_bad=cfg.data.skip_bad, seed=cfg.seed, split="train",
                          rank=rank, world_size=world_size, uint8_crops=True)
    # Building draws no random numbers today; forking keeps it so, whatever the loader does later.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        cache = compute_context_cache(backbone, denoiser, loader, device, DTYPES[cfg.train.context_cache_dtype],
                                      progress)
    size = cache.context.numel() * cache.context.element_size() / 2**20
    log.info("context cache: %d samples x 2 views, %.1f MiB (%s)%s", len(cache), size,
             cfg.train.context_cache_dtype, f", saved to {path}" if expected is not None else " in memory")
    if expected is not None:
        cache.save(path, expected)
    return cache

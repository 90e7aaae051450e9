"""Stochastic-depth draws of a cached context: which patterns a sample has, and which one an epoch reads.

Training from images draws, for every forward pass of a sample, one keep
decision per context block and branch (Bernoulli(1 - rate), ``DropPath``). A
context cache with ``train.context_cache_draws: R`` stores R contexts per
sample and view, each under its own pattern, and every epoch reads one of them:

- ``sample_keep_decisions``: the R patterns of a sample and view come from a
  generator seeded by the run's seed, the sample's key and the view, so they do
  not depend on which process or loader worker built the sample, nor on the
  batch it was built in.
- ``epoch_draws``: in epochs kR .. kR + R - 1 a sample reads each of its R
  draws once, in an order drawn from the seed, k and its key. Each epoch's
  draw is therefore uniform over the R stored ones, independent of the other
  samples and of the view, and each stored pattern is a Bernoulli(1 - rate) draw
  per block and branch: what one epoch of a sample sees has exactly the law of
  the image path's draw. Within R epochs no pattern repeats; with R = 1 every
  epoch reads the same one.
"""
import hashlib

import numpy as np
import torch

from common.model.context import draw_keep_decisions

_MASK64 = (1 << 64) - 1


def _key_seed(*parts):
    """A 63-bit integer from the SHA-256 of the parts (a seed for ``torch.Generator``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_keep_decisions(seed, key, draws, rates):
    """The ``draws`` keep patterns of each view of one sample.

    Args:
        seed: the run's seed.
        key: the sample's key.
        draws: R >= 1.
        rates: the context blocks' drop rates.
    Returns:
        (2, R, len(rates), 2) bool: view (original, mirror), draw, block, branch.
    """
    views = []
    for view in range(2):
        generator = torch.Generator().manual_seed(_key_seed("context-draws", seed, key, view))
        views.append(draw_keep_decisions(rates, draws, generator))
    return torch.stack(views)


def batch_keep_decisions(seed, keys, draws, rates):
    """``sample_keep_decisions`` of a batch, views side by side: (2B, R, blocks, 2), sample-major."""
    return torch.cat([sample_keep_decisions(seed, key, draws, rates) for key in keys])


def key_hashes(keys):
    """(N,) uint64: a hash of each key, the part of ``epoch_draws`` that is the sample's own."""
    return np.array([_key_seed("key", key) for key in keys], dtype=np.uint64)


def _splitmix64(values):
    """SplitMix64's finaliser on a uint64 array: a cheap, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def epoch_draws(hashes, draws, seed, epoch):
    """Which stored draw each sample reads in ``epoch`` (see the module docstring).

    Args:
        hashes: (N,) from ``key_hashes``.
        draws: R >= 1.
    Returns:
        (N,) int64 tensor in [0, R).
    """
    if draws == 1:
        return torch.zeros(len(hashes), dtype=torch.int64)
    cycle, position = divmod(epoch, draws)
    salt = np.uint64(_key_seed("epoch-draws", seed, cycle) & _MASK64)
    columns = _splitmix64(np.arange(draws, dtype=np.uint64) + salt)  # (R,)
    scores = _splitmix64(hashes[:, None] ^ columns[None, :])  # (N, R): a random order per sample
    return torch.from_numpy(np.argsort(scores, axis=1, kind="stable")[:, position].astype(np.int64))

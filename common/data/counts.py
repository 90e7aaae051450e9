"""How many samples a pass over the shards will yield, for progress bars with a total and an ETA.

The counts of a folder's shards live in ``.sample_counts.json`` beside them, each
keyed by the shard's size and modification time, so that a shard changed since
is counted again. Whoever writes shards records their counts there
(``record_counts``: the converter and the synthetic generator do); any other
shard is counted once from its tar headers (no image is decoded) and cached. A
read-only shard folder is counted again in each run instead.

Remote shards (``pipe:``, ``http://``, ...) are not counted: their bars have no total.
"""
import json
import logging
import os
import tarfile

from common.core.files import write_text
from common.data.loader import ShardPlan, is_remote, sample_quota

log = logging.getLogger(__name__)

CACHE_NAME = ".sample_counts.json"


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def count_tar_samples(path):
    """Samples in one shard from its tar headers: runs of members with the same key (the name up to its first dot)."""
    samples, previous = 0, None
    with tarfile.open(path, mode="r:") as archive:
        for member in archive:
            if not member.isreg():
                continue
            folder, name = os.path.split(member.name)
            key = os.path.join(folder, name.split(".", 1)[0])
            if key != previous:
                samples += 1
                previous = key
    return samples


def _signature(path):
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def _write_cache(folder, cache):
    try:
        write_text(os.path.join(folder, CACHE_NAME), json.dumps(cache, indent=1))
    except OSError as error:  # a read-only dataset or a full disk: count again next time
        log.debug("sample counts not cached in %s: %s", folder, error)


def _read_cache(folder):
    cache = _read_json(os.path.join(folder, CACHE_NAME))
    return cache if isinstance(cache, dict) else {}


def record_counts(folder, counts):
    """Record ``counts`` ({shard file name: samples}) of shards just written into ``folder``.

    For writers of shards, which know how many samples each holds: counting them
    later reads no tar header. Each entry is keyed by the shard's current size and
    modification time, so a shard rewritten afterwards is counted again.
    """
    cache = _read_cache(folder)
    for name, samples in counts.items():
        cache[name] = {"signature": _signature(os.path.join(folder, name)), "samples": int(samples)}
    _write_cache(folder, cache)


def _from_headers(folder, names):
    """{shard file name: samples} of ``names``: recorded ones from the cache, others from their tar headers."""
    cache = _read_cache(folder)
    counts, changed = {}, False
    for name in names:
        signature = _signature(os.path.join(folder, name))
        entry = cache.get(name)
        if not (isinstance(entry, dict) and entry.get("signature") == signature):
            entry = {"signature": signature, "samples": count_tar_samples(os.path.join(folder, name))}
            cache[name] = entry
            changed = True
        counts[name] = int(entry["samples"])
    if changed:
        _write_cache(folder, cache)
    return counts


def count_samples(urls):
    """Samples of each shard, in the order of ``urls``; None if any shard is remote or unreadable.

    Args:
        urls: local shard paths, as ``common.data.loader.find_shards`` lists them.
    Returns:
        list of ints (one per shard) or None.
    """
    urls = [os.fspath(url) for url in urls]
    if any(is_remote(url) for url in urls):
        return None
    by_folder = {}
    for url in urls:
        by_folder.setdefault(os.path.dirname(url), []).append(os.path.basename(url))
    known = {}
    try:
        for folder, names in by_folder.items():
            counts = _from_headers(folder, names)
            known.update({os.path.join(folder, name): counts[name] for name in names})
    except (OSError, tarfile.TarError, KeyError, TypeError, ValueError) as error:
        log.warning("could not count the samples of the shards (%s); progress bars show no total", error)
        return None
    return [known[url] for url in urls]


def process_share(shard_counts, rank=0, world_size=1, num_workers=0, max_samples=None, first=None):
    """Samples one process reads in one pass of ``common.data.loader.ShardLoader``.

    ``shard_counts`` are in the order of the pass (``ShardLoader.shard_order``);
    the division of work is the loader's own (``ShardPlan``), and ``max_samples``
    over all processes gives each process its share (``sample_quota``), unless
    the pass reads its ``first`` N samples only (``ShardLoader.first_samples``).
    """
    share = ShardPlan(len(shard_counts), rank, world_size, first).process_share(shard_counts, num_workers)
    quota = None if first is not None else sample_quota(max_samples, rank, world_size)
    return share if quota is None else min(share, quota)


def samples_per_pass(loader):
    """Samples ``loader`` yields to this process in its next pass, or None if unknown.

    Known for a ``common.data.loader.ShardLoader``; any other iterable of batches (a
    list of batches read once, say) gets a bar without a total.
    """
    if not hasattr(loader, "shard_order"):
        return None
    urls = loader.shard_order()  # training shuffles the shards per epoch, and so which process reads which
    counts = count_samples(urls)
    if counts is None:
        return None
    return process_share(counts, loader.rank, loader.world_size, loader.num_workers, loader.max_samples,
                         loader.first_samples())

"""How many samples a pass over the shards will yield, for progress bars with a total and an ETA.

The count of each shard comes from the cheapest source that can be trusted:

1. ``conversion_report.json`` beside the shards (``common.data.convert``), when it is
   complete and the shard still has the size the report recorded;
2. ``manifest.json`` in the folder above (``common.synthetic.world``), when the shard
   is listed there and was not modified after the manifest was written;
3. the tar headers of the shard (no image is decoded), counted once and cached
   in ``.sample_counts.json`` beside the shards, keyed by size and modification
   time. A read-only shard folder is counted again in each run instead.

Remote shards (``pipe:``, ``http://``, ...) are not counted: their bars have no total.
"""
import json
import logging
import os
import tarfile

from common.core.files import write_text
from common.data.convert import REPORT_NAME, SHARD_PATTERN
from common.data.loader import ShardPlan, is_remote, sample_quota

log = logging.getLogger(__name__)

CACHE_NAME = ".sample_counts.json"
# The synthetic generator's record of a folder (common.synthetic.world writes it).
MANIFEST_NAME = "manifest.json"


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _from_report(folder):
    """{shard file name: samples} from a complete conversion report, for shards of the recorded size."""
    report = _read_json(os.path.join(folder, REPORT_NAME))
    if not isinstance(report, dict) or not report.get("complete"):
        return {}
    counts = {}
    for index, stats in report.get("shards", {}).items():
        name = SHARD_PATTERN.format(int(index))
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.path.getsize(path) == stats.get("bytes"):
            counts[name] = int(stats["written"])
    return counts


def _from_manifest(folder):
    """{shard file name: samples} from the synthetic generator's manifest one folder up."""
    root = os.path.dirname(os.path.abspath(folder))
    path = os.path.join(root, MANIFEST_NAME)
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or "settings" not in manifest:
        return {}
    settings = manifest["settings"]
    per_shard = int(settings["samples_per_shard"])
    written = os.path.getmtime(path)
    split = os.path.basename(os.path.abspath(folder))
    total = settings["num_train"] if split == "train" else settings["num_test"]
    counts = {}
    for number, relative in enumerate(manifest.get("shards", {}).get(split, [])):
        shard = os.path.join(root, relative)
        if os.path.isfile(shard) and os.path.getmtime(shard) <= written:
            counts[os.path.basename(relative)] = min(per_shard, total - number * per_shard)
    return counts


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


def _from_headers(folder, names):
    """{shard file name: samples} from the tar headers, through the cache file of ``folder``."""
    cache_path = os.path.join(folder, CACHE_NAME)
    cache = _read_json(cache_path)
    cache = cache if isinstance(cache, dict) else {}
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
        try:
            write_text(cache_path, json.dumps(cache, indent=1))
        except OSError as error:  # a read-only dataset or a full disk: count again next time
            log.debug("sample counts not cached in %s: %s", folder, error)
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
            counts = {**_from_manifest(folder), **_from_report(folder)}
            missing = [name for name in names if name not in counts]
            if missing:
                counts.update(_from_headers(folder, missing))
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

"""Streaming batches of decoded samples from WebDataset shards.

``find_shards`` lists the shards of a source; ``build_loader`` streams batches of
``common.data.samples.decode_sample`` through a WebDataset pipeline (shard list ->
split by process and worker (``ShardPlan``) -> tar reading -> shuffle -> decode
-> batch), optionally in DataLoader worker processes.

Bad data (unreadable tar, or any sample ``decode_sample`` refuses) raises
``ShardDataError`` naming the shard and the key; with ``skip_bad=True`` the
loader skips such samples, counts them and logs a summary at the end of each
pass (``ShardLoader.skipped``).
"""
import logging
import os
import random
from collections import namedtuple
from glob import escape, glob

import numpy as np
import torch

import webdataset as wds
from common.data.samples import ShardDataError, bad_sample, check_dataset, collate_samples, decode_sample

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {("h36m", True): "train", ("h36m", False): "validation",
                  ("mpi", True): "train", ("mpi", False): "test"}

SkipRecord = namedtuple("SkipRecord", "shard key reason")
SkipRecord.__doc__ = "One skipped sample or unreadable shard part: shard URL, sample key (or None), reason."


def is_remote(url):
    """True for a ``pipe:`` command or a URL with a scheme (``http://``, ``s3://``, ...): not a local file."""
    return url.startswith("pipe:") or "://" in url


def find_shards(source, split=None):
    """List the shard URLs of a source, in a fixed order.

    Args:
        source: a directory (its ``split`` subfolder if present, else its own
            ``*.tar`` files), a brace pattern (``data-{000000..000155}.tar``), a
            glob, one tar file, a ``pipe:``/``http(s)://``/... URL (brace-expanded,
            not checked), or a list of any of these.
        split: ``"train"``, ``"validation"`` or ``"test"``; used for directories only.
    Returns:
        list of str, never empty.
    Raises:
        FileNotFoundError: when nothing is found, saying what was looked for.
    """
    if isinstance(source, (list, tuple)):
        urls = [url for item in source for url in find_shards(item, split)]
        if not urls:
            raise FileNotFoundError("the list of shard sources is empty")
        return urls
    source = os.fspath(source)
    if is_remote(source):
        return wds.shardlists.expand_urls(source)
    if os.path.isdir(source):
        folder = source
        if split is not None and os.path.isdir(os.path.join(source, split)):
            folder = os.path.join(source, split)
        urls = sorted(glob(os.path.join(escape(folder), "*.tar")))
        if not urls:
            subfolders = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
            if split is None and subfolders:
                raise FileNotFoundError(f"no .tar shards directly in {folder}, which holds the subfolders "
                                        f"{subfolders}: name one of them, e.g. {os.path.join(source, subfolders[0])}")
            raise FileNotFoundError(
                f"no .tar shards in {folder}"
                + (f" (no '{split}' subfolder either)" if split is not None and folder == source else "")
                + f"; expected the released layout with train/, validation/ or test/ subfolders of "
                f"data-NNNNNN.tar files (subfolders found: {subfolders})")
        return urls
    if "{" in source:
        urls = wds.shardlists.expand_urls(source)
        missing = [u for u in urls if not os.path.isfile(u)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of the {len(urls)} shards of {source} do not exist, "
                                    f"e.g. {missing[0]}")
        return urls
    if any(c in source for c in "*?["):
        urls = sorted(glob(source))
        if not urls:
            raise FileNotFoundError(f"no shards match {source}")
        return urls
    if os.path.isfile(source):
        return [source]
    raise FileNotFoundError(f"shard source {source} does not exist: give a directory with train/, validation/ "
                            "or test/ subfolders, a brace pattern, a glob, a tar file or a URL")


def _worker():
    """(index, count) of this DataLoader worker within its process ((0, 1) outside workers)."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def sample_quota(max_samples, rank, world_size):
    """This process's share of ``max_samples`` over all processes (shares add up to it); None: no limit."""
    if max_samples is None:
        return None
    return max_samples // world_size + (rank < max_samples % world_size)


class ShardPlan:
    """How the shards of a pass are divided among ``world_size`` processes x their workers.

    Consumer ``rank * num_workers + worker`` of ``world_size * num_workers``: with
    at least as many shards as consumers, each consumer reads every
    consumer-count-th shard; with fewer (MPI's test split is one shard), every
    consumer reads all shards and keeps every consumer-count-th sample. Either way
    each sample goes to exactly one consumer.

    ``first`` = N (evaluation with ``max_samples``): only the pass's first N
    samples are read, divided by sample (consumer c keeps samples c, c + count,
    ... below N), so the same N samples are scored whatever the number of
    processes and workers.
    """

    def __init__(self, num_shards, rank=0, world_size=1, first=None):
        self.num_shards, self.rank, self.world_size, self.first = num_shards, rank, world_size, first

    def consumer(self, worker=None, num_workers=None):
        """(index, count) of a consumer; by default of the DataLoader worker that calls it."""
        if worker is None:
            worker, num_workers = _worker()
        return self.rank * num_workers + worker, self.world_size * num_workers

    def by_shard(self, count):
        """True when ``count`` consumers divide the shards, False when they divide the samples."""
        return self.num_shards >= count and self.first is None

    def process_share(self, shard_counts, num_workers=0):
        """Samples this process's ``max(num_workers, 1)`` consumers read, given each shard's count (pass order)."""
        assert len(shard_counts) == self.num_shards, (
            f"expected {self.num_shards} shard counts, got {len(shard_counts)}")
        workers = max(num_workers, 1)
        total = sum(shard_counts) if self.first is None else min(sum(shard_counts), self.first)
        share = 0
        for worker in range(workers):
            index, count = self.consumer(worker, workers)
            if self.by_shard(count):
                share += sum(shard_counts[index::count])
            else:
                share += len(range(index, total, count))
        return share


def _split_shards(shards, plan, skips):
    index, count = plan.consumer()
    for i, shard in enumerate(shards):
        if not plan.by_shard(count) or i % count == index:
            skips.current_shard = shard["url"]
            yield shard


def _split_samples(samples, plan):
    index, count = plan.consumer()
    for i, sample in enumerate(samples):
        if plan.first is not None and i >= plan.first:
            return
        if plan.by_shard(count) or i % count == index:
            yield sample


class _SkipLog:
    """Exception handler of the pipeline: raises ``ShardDataError`` or records a ``SkipRecord``.

    Records travel to the main process inside batches (``_attach_skips``), so
    skips that happen in DataLoader workers are counted too.
    """

    def __init__(self, skip_bad):
        self.skip_bad = skip_bad
        self.records = []
        self.current_shard = None
        self.broken_shards = set()

    def __call__(self, exn):
        if isinstance(exn, ShardDataError):
            if not self.skip_bad:
                exn.args = exn.args[:1]  # WebDataset's outer stages append the stream and URL
                raise exn
            record = SkipRecord(exn.shard, exn.key, exn.problem)
        else:
            # Raised while reading the tar itself (truncated, corrupt, missing file).
            detail = str(exn.args[0]) if exn.args else type(exn).__name__
            error = bad_sample(self.current_shard, None, f"cannot read the tar file ({type(exn).__name__}: "
                                                   f"{detail.split(' @ ')[0]}); samples after this point are lost")
            if not self.skip_bad:
                raise error from exn
            if self.current_shard in self.broken_shards:
                return True
            self.broken_shards.add(self.current_shard)
            record = SkipRecord(self.current_shard, None, error.problem)
        self.records.append(record)
        return True

    def take(self):
        records, self.records = self.records, []
        return records


def _attach_skips(batches, skips):
    for batch in batches:
        batch["skipped"] = skips.take()
        yield batch
    remaining = skips.take()
    if remaining:
        yield {"skipped": remaining}  # no samples: only carries the last records out


def default_num_workers():
    """DataLoader workers for this process: one per core it may run on, less one for itself (at least 1)."""
    return max(len(os.sched_getaffinity(0)) - 1, 1)


class _Decoder:
    """Picklable ``decode_sample`` stage with a per-consumer, per-epoch flip generator."""

    def __init__(self, dataset, train, seed, epoch, plan, uint8_crops=True):
        self.dataset, self.train, self.seed, self.epoch, self.plan = dataset, train, seed, epoch, plan
        self.uint8_crops = uint8_crops
        self.rng = None

    def __call__(self, sample):
        if self.rng is None:
            self.rng = np.random.default_rng([self.seed, self.epoch, self.plan.consumer()[0]])
        return decode_sample(sample, self.dataset, self.train, self.rng, uint8_crops=self.uint8_crops)


class ShardLoader:
    """Iterable of collated batches over WebDataset shards; see ``build_loader``.

    Attributes after (or during) a pass:
        skipped: list of ``SkipRecord`` of this pass (empty unless ``skip_bad``).
        num_samples: samples yielded by this pass.
        epoch: the epoch whose shuffle the next pass uses; advances after each pass.
    """

    def __init__(self, urls, dataset, train, batch_size, num_workers=0, shuffle_buffer=1000,
                 max_samples=None, skip_bad=False, seed=0, rank=None, world_size=None, uint8_crops=True):
        check_dataset(dataset)
        num_workers = default_num_workers() if num_workers is None else num_workers
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        if max_samples is not None and max_samples < 0:
            raise ValueError(f"max_samples must be None or 0 or more, got {max_samples}")
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = (torch.distributed.get_rank() if distributed else 0) if rank is None else rank
            world_size = (torch.distributed.get_world_size() if distributed else 1) if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.urls = list(urls)
        self.dataset, self.train, self.batch_size = dataset, train, batch_size
        self.num_workers, self.shuffle_buffer, self.skip_bad, self.seed = num_workers, shuffle_buffer, skip_bad, seed
        self.rank, self.world_size = rank, world_size
        self.max_samples = max_samples
        self.uint8_crops = uint8_crops
        self.epoch = 0
        self.skipped = []
        self.num_samples = 0

    def set_epoch(self, epoch):
        """Choose the shuffle of the next pass (training); passes otherwise advance it by one."""
        self.epoch = epoch

    def shard_order(self):
        """The shard URLs in the order the next pass reads them: shuffled per epoch in training."""
        urls = list(self.urls)
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        return urls

    def first_samples(self):
        """N when a pass reads exactly its first N samples (evaluation with ``max_samples``), else None.

        Training keeps each process's quota of its own shards (``sample_quota``).
        """
        return None if self.train else self.max_samples

    def pipeline(self):
        """The WebDataset pipeline of one pass (yields collated batches with a ``skipped`` list)."""
        plan = ShardPlan(len(self.urls), self.rank, self.world_size, self.first_samples())
        skips = _SkipLog(self.skip_bad)
        shuffle = self.train and self.shuffle_buffer > 1
        stages = [
            wds.SimpleShardList(self.shard_order()),
            wds.pipelinefilter(_split_shards)(plan, skips),
            wds.tarfile_to_samples(handler=skips),
            wds.pipelinefilter(_split_samples)(plan),
        ]
        if shuffle:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer),
                                      seed=f"{self.seed}-{self.epoch}-{self.rank}-shuffle"))
        stages += [
            wds.map(_Decoder(self.dataset, self.train, self.seed, self.epoch, plan, self.uint8_crops),
                    handler=skips),
            wds.batched(self.batch_size, collation_fn=collate_samples, partial=True),
            wds.pipelinefilter(_attach_skips)(skips),
        ]
        return wds.DataPipeline(*stages)

    def __iter__(self):
        pipeline = self.pipeline()
        if self.num_workers > 0:
            # Pinned pages let device_images copy a batch to the GPU asynchronously.
            batches = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=self.num_workers,
                                                  pin_memory=torch.cuda.is_available())
        else:
            batches = pipeline
        self.skipped, self.num_samples = [], 0
        quota = None if self.first_samples() is not None else sample_quota(self.max_samples, self.rank, self.world_size)
        seen = set()
        try:
            for batch in batches:
                for record in batch.pop("skipped"):
                    if record not in seen:  # a broken shard read by several workers counts once
                        seen.add(record)
                        self.skipped.append(record)
                if "key" not in batch:
                    continue
                size = len(batch["key"])
                if quota is not None and self.num_samples + size >= quota:
                    keep = quota - self.num_samples
                    if keep > 0:
                        self.num_samples += keep
                        yield {name: value[:keep] for name, value in batch.items()}
                    break
                self.num_samples += size
                yield batch
        finally:
            self.epoch += 1
        self._report()

    def _report(self):
        if not self.skipped:
            return
        samples = sum(r.key is not None for r in self.skipped)
        shards = len(self.skipped) - samples
        first = "; ".join(f"{r.shard}, {r.key or 'tar'}: {r.reason}" for r in self.skipped[:3])
        log.warning("skipped %d bad samples and %d unreadable shard tails (%d samples read); first: %s",
                    samples, shards, self.num_samples, first)


def build_loader(source, dataset, train, batch_size, num_workers=0, shuffle_buffer=1000, max_samples=None,
                 skip_bad=False, seed=0, split=None, rank=None, world_size=None, uint8_crops=True):
    """Batches of decoded samples from released-layout shards.

    Args:
        source: anything ``find_shards`` takes; for a directory, ``split``
            defaults to ``train`` in training and ``validation`` (h36m) or ``test``
            (mpi) in evaluation.
        dataset: ``"h36m"`` or ``"mpi"``.
        train: training (random flip, shuffled shards and samples, new order per
            epoch) or evaluation (fixed order, flipped second view).
        batch_size: samples per batch; the last batch of a pass may be smaller.
        num_workers: DataLoader worker processes (0 decodes in this process; None:
            ``default_num_workers()``, one per available core less one).
        shuffle_buffer: samples held for shuffling in training (0 or 1: none).
        max_samples: stop after this many samples over all processes (each
            process yields its share); None reads everything.
        skip_bad: skip unreadable samples (counted in ``.skipped`` and logged at
            the end of the pass) instead of raising ``ShardDataError``.
        seed: seeds shard order, sample shuffle and flips, with the epoch.
        rank, world_size: this process among several; default to
            torch.distributed's (0 and 1 when it is not initialized).
        uint8_crops: batches carry the 8-bit crops, ``crop`` (B, 256, 192, 3) uint8,
            instead of ``image`` (the default: training, evaluation and the pipeline read
            so): an eighth of the bytes (a sixteenth in evaluation, where the mirror image
            is not made here); ``samples.device_images`` normalises them (and adds the
            mirror view) on the device, for the whole batch at once. False: normalised
            ``image`` (B, 3, 256, 192), or (B, 2, 3, 256, 192) in test mode.
    Returns:
        ShardLoader: iterating gives dicts with ``crop`` (B, 256, 192, 3) uint8 (or
        ``image``, see ``uint8_crops``), ``keypoints_3d`` (B, 1, 17, 3),
        ``keypoints_2d``/``keypoints_2d_crop``/``ref`` (B, 17, 2) or (B, 2, 17, 2),
        and lists ``key``, ``subject``, ``action``. Across processes and workers,
        an evaluation pass yields every sample exactly once.
    """
    check_dataset(dataset)
    urls = find_shards(source, split or DEFAULT_SPLITS[dataset, bool(train)])
    return ShardLoader(urls, dataset, train, batch_size, num_workers=num_workers, shuffle_buffer=shuffle_buffer,
                       max_samples=max_samples, skip_bad=skip_bad, seed=seed, rank=rank, world_size=world_size,
                       uint8_crops=uint8_crops)

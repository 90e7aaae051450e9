"""Progress-bar totals: sample counts of shards (recorded by their writer, or tar headers, cached) and each process's share."""
import json
import os

import pytest
import torch
from data_helpers import write_split
from model_fixtures import single_thread  # noqa: F401

from common.data import counts as sample_count
from common.data.counts import CACHE_NAME, count_samples, process_share, samples_per_pass
from common.data.loader import build_loader
from common.synthetic.world import generate_dataset


def _samples_read(loader):
    return sum(len(batch["key"]) for batch in loader)


def test_tar_header_count_matches_the_samples_read_and_is_cached(tmp_path):
    urls = write_split(tmp_path / "train", "h36m", [3, 1, 2])
    counts = count_samples(urls)
    loader = build_loader(tmp_path, "h36m", train=True, batch_size=2)
    assert counts == [3, 1, 2] and sum(counts) == _samples_read(loader)
    cache = json.loads((tmp_path / "train" / CACHE_NAME).read_text())
    assert sorted(cache) == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]

    # A second run takes the cached number while the shard is unchanged...
    cache["data-000001.tar"]["samples"] = 99
    (tmp_path / "train" / CACHE_NAME).write_text(json.dumps(cache))
    assert count_samples(urls) == [3, 99, 2]
    # ...and counts again once the shard is rewritten.
    write_split(tmp_path / "train", "h36m", [3, 4])
    assert count_samples(urls[:2]) == [3, 4]


def test_read_only_shard_folder_is_counted_without_a_cache(tmp_path, monkeypatch):
    urls = write_split(tmp_path / "test", "mpi", [2, 3])

    def refuse(*args):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(sample_count.os, "replace", refuse)
    assert count_samples(urls) == [2, 3]
    assert sorted(os.listdir(tmp_path / "test")) == ["data-000000.tar", "data-000001.tar"]


def test_recorded_counts_are_trusted_only_for_shards_of_the_recorded_size(tmp_path):
    urls = write_split(tmp_path, "h36m", [2, 2])
    sample_count.record_counts(tmp_path, {"data-000000.tar": 7, "data-000001.tar": 7})
    # The numbers prove where they came from: both recorded, until shard 1 changes.
    assert count_samples(urls) == [7, 7]
    with open(urls[1], "ab") as shard:
        shard.write(b"\0" * 1024)
    assert count_samples(urls) == [7, 2]


def test_the_synthetic_generator_records_its_counts_so_no_shard_is_read(tmp_path, monkeypatch):
    shards = generate_dataset(tmp_path, "mpi", num_train=5, num_test=1, samples_per_shard=2, workers=1,
                              progress=False)
    monkeypatch.setattr(sample_count, "count_tar_samples", lambda path: pytest.fail(f"{path} was read"))
    assert count_samples(shards["train"]) == [2, 2, 1]
    monkeypatch.undo()
    loader = build_loader(tmp_path, "mpi", train=True, batch_size=2, shuffle_buffer=0)
    assert _samples_read(loader) == 5


@pytest.mark.parametrize("counts,world,workers,max_samples", [
    ([2, 3, 1, 4], 2, 0, None),  # shards divided among processes
    ([2, 3, 1, 4], 2, 0, 5),  # --max-samples shared among them
    ([5], 2, 0, None),  # fewer shards than processes: samples divided
    ([2, 3, 1], 1, 2, None),  # two DataLoader workers
    ([3, 2], 2, 2, 7),  # fewer shards than consumers, with a cap
])
def test_each_process_share_matches_what_its_loader_reads(tmp_path, counts, world, workers, max_samples):
    urls = write_split(tmp_path, "mpi", counts)
    assert count_samples(urls) == counts
    shares = []
    for rank in range(world):
        loader = build_loader(urls, "mpi", train=True, batch_size=2, num_workers=workers, shuffle_buffer=0,
                              max_samples=max_samples, rank=rank, world_size=world)
        expected = samples_per_pass(loader)
        assert expected == _samples_read(loader) == loader.num_samples
        shares.append(expected)
    assert sum(shares) == min(sum(counts), max_samples or sum(counts))


def test_remote_shards_have_no_total():
    assert count_samples(["pipe:cat data-000000.tar"]) is None
    assert process_share([4, 4], rank=1, world_size=2, max_samples=3) == 1


def test_training_and_evaluation_bars_have_sample_totals(tiny_config, tmp_path, capsys, single_thread):
    from common.run.training import train

    cfg = tiny_config(tmp_path / "run", train__epochs=1, train__validate_every=1)
    train(cfg, device=torch.device("cpu"))
    bars = capsys.readouterr().err
    # tiny_shards: 2 + 2 training samples, 3 validation samples.
    assert "epoch 1/1: 100%" in bars and "4/4 [" in bars
    assert "validate 1: 100%" in bars and "3/3 [" in bars
    log = (tmp_path / "run" / "training_log.txt").read_text()
    epoch_loss = next(line for line in log.splitlines() if line.startswith("epoch")).split("loss ")[1].split()[0]
    assert f"loss={epoch_loss}" in bars  # the bar ends on the loss the log records

"""benchmarks.loader: the original's way it re-implements, and a tiny run that prints every row."""
import numpy as np
import torch

import webdataset as wds
from benchmarks import loader as benchmark
from common.data.samples import decode_sample


def test_original_way_matches_decode_sample(parity_dir):
    """The re-implemented original steps give what the project's per-sample path gives."""
    raws = list(wds.DataPipeline(wds.SimpleShardList([str(parity_dir / "wds_h36m" / "data-000000.tar")]),
                                 wds.tarfile_to_samples()))
    for raw in raws:
        image, crop = benchmark.original_sample(raw)
        decoded = decode_sample(raw, "h36m", train=False)
        assert image.shape == (2, 3, 256, 192) and crop.dtype == np.uint8
        torch.testing.assert_close(torch.from_numpy(image), decoded["image"], rtol=0, atol=0)


def test_tiny_run_prints_the_table_and_the_ratios_last(tmp_path, capsys):
    assert benchmark.main(["--data", str(tmp_path / "data"), "--samples", "3", "--repeats", "1",
                           "--batch-size", "2", "--workers", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("3 evaluation samples")
    assert sum("samples/s per core" in line for line in lines) == 4
    assert "largest crop difference against the original's: 0 grey levels" in lines
    assert lines[-2].startswith("whole loader, 0 workers") and lines[-1].startswith("ratios vs the original's way")

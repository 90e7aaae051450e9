"""The atomic writer: a failed or full-disk write keeps the previous file and leaves no temporary."""
import errno

import pytest

from common.core.files import DiskFullError, atomic_write, write_text


def _fill_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    target = write_text(tmp_path / "metrics.json", "good")
    monkeypatch.setattr("os.fsync", _fill_disk)
    with pytest.raises(DiskFullError, match="disk is full while writing .*metrics.json.*previous file there is kept"):
        write_text(target, "new")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    target = write_text(tmp_path / "predictions.npz", "good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as stream:
            stream.write(b"half")
            raise KeyboardInterrupt
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.npz"]


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from model_fixtures import tiny_denoiser

    from common.model.checkpoints import save_checkpoint
    model = tiny_denoiser()
    path = save_checkpoint(tmp_path / "latest_epoch.bin", model, epoch=1)
    before = path.read_bytes()
    monkeypatch.setattr("os.fsync", _fill_disk)
    with pytest.raises(DiskFullError, match="latest_epoch.bin"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest_epoch.bin"]

"""One layout for the released files: the configs, the entry scripts and inference default to it,
and a file where older instructions put it is still found, with a note."""
import logging
from pathlib import Path

import pytest

from common.core import layout
from common.core.layout import find_released
from common.infer.cli import build_parser as infer_parser
from common.pipeline.config import load_config
from common.run.cli import resolve_checkpoint_file

REPO_ROOT = Path(__file__).resolve().parents[2]


def touch(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_the_configs_and_inference_default_to_the_layout():
    for config, dataset in (("human36m_train.yaml", "h36m"), ("human36m_train.yaml", "mpi"), ("mpi_train.yaml", "mpi")):
        cfg = load_config(REPO_ROOT / "config" / config, dataset=dataset)
        assert (cfg.checkpoint, cfg.data.root, cfg.context_weights) == (
            layout.CHECKPOINT_DIRS[dataset], layout.DATA_ROOTS[dataset], layout.CONTEXT_WEIGHTS[dataset])
        assert layout.BACKBONE_WEIGHTS == cfg.backbone_weights[0]
    for dataset, weights in layout.SNAPPOSE_WEIGHTS.items():
        assert str(Path(layout.CHECKPOINT_DIRS[dataset]) / Path(weights).name) == weights
    assert infer_parser().parse_args(["photo.jpg"]).checkpoint == layout.SNAPPOSE_WEIGHTS["h36m"]


def test_a_file_at_its_place_is_used_without_a_note(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    touch(layout.SNAPPOSE_WEIGHTS["h36m"])
    touch("checkpoint/best_h36m.bin")
    with caplog.at_level(logging.WARNING):
        assert find_released(layout.SNAPPOSE_WEIGHTS["h36m"]) == Path(layout.SNAPPOSE_WEIGHTS["h36m"])
    assert caplog.records == []


@pytest.mark.parametrize("given, present", [
    ("checkpoint/human36m/best_h36m.bin", "checkpoint/best_h36m.bin"),
    ("checkpoint/best_h36m.bin", "checkpoint/human36m/best_h36m.bin"),
    ("checkpoint/mpi-inf-3dhpe/best_mpi.bin", "checkpoint/mpi/best_mpi.bin"),
    ("checkpoint/mpi/best_mpi.bin", "checkpoint/mpi-inf-3dhpe/best_mpi.bin"),
])
def test_a_file_at_another_known_place_is_used_with_a_note(tmp_path, monkeypatch, caplog, given, present):
    monkeypatch.chdir(tmp_path)
    touch(present)
    with caplog.at_level(logging.WARNING, logger="snappose"):
        assert find_released(given) == Path(present)
    expected = "checkpoint/human36m/best_h36m.bin" if "h36m" in given else "checkpoint/mpi-inf-3dhpe/best_mpi.bin"
    assert [r.getMessage() for r in caplog.records] == [
        f"{given}: not found; using {present} (the released layout expects {expected})"]


def test_a_file_in_a_folder_of_ones_own_is_never_swapped_for_a_released_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(layout.SNAPPOSE_WEIGHTS["h36m"])
    assert find_released("runs/a/best_h36m.bin") == Path("runs/a/best_h36m.bin")
    with pytest.raises(FileNotFoundError, match="runs/a/best_h36m.bin"):
        resolve_checkpoint_file("best_h36m.bin", "runs/a", "--evaluate")


def test_evaluate_with_an_older_folder_finds_the_released_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(layout.SNAPPOSE_WEIGHTS["mpi"])
    assert resolve_checkpoint_file("best_mpi.bin", "checkpoint/mpi", "--evaluate") == Path(layout.SNAPPOSE_WEIGHTS["mpi"])

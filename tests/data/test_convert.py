import argparse
import errno
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from data_helpers import h36m_key, make_h36m_sample

import webdataset as wds
from common.data import convert
from common.data.loader import find_shards
from common.data.samples import decode_sample

# Subjects 1 and 5 are training subjects; frames cycle through a few actions and cameras.
TRAIN_FRAMES = [(1, 2, 1, 0), (1, 3, 2, 1), (5, 4, 1, 2), (5, 16, 2, 3), (1, 2, 1, 3), (5, 9, 1, 0), (1, 11, 2, 1)]


def write_toolbox(root, frames, name="h36m_train.pkl", seed=0):
    """A fake CA-PF label file and H36M-Toolbox frame tree.

    Args:
        frames: (subject, action, subaction, camera_id) per label; image_id is its position.
    Returns:
        (label path, images folder, list of label dicts as pickled: float64 arrays, numpy ints).
    """
    rng = np.random.default_rng(seed)
    images = Path(root) / "images"
    labels = []
    for image_id, (subject, action, subaction, camera_id) in enumerate(frames):
        key = h36m_key(subject, action, image_id, subaction=subaction, camera=camera_id + 1)
        sample = make_h36m_sample(key, rng)
        pyd = sample["pyd"]
        labels.append({
            "subject": np.int64(subject), "action": action, "subaction": subaction, "camera_id": camera_id,
            "image_id": image_id, "video_id": 7,
            "center": pyd["center"].astype(np.float64), "scale": pyd["scale"].astype(np.float64),
            "joints_3d": pyd["joints_3d"].astype(np.float64),
            "joints_2d_cpn": pyd["joints_2d_cpn"].astype(np.float64),
            "joints_2d_cpn_crop": pyd["joints_2d_cpn_crop"].astype(np.float64),
            "joints_2d_gt": pyd["joints_2d_cpn"].astype(np.float64) + 0.01,
            "joints_2d_gt_crop": pyd["joints_2d_cpn_crop"].astype(np.float64) + 1.0,
        })
        path = Path(convert.frame_path(str(images), key))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sample["jpg"])
    label_path = Path(root) / name
    label_path.write_bytes(pickle.dumps(labels))
    return str(label_path), str(images), labels


def read_samples(folder):
    """All raw samples of the shards in ``folder``, in shard order, with the shard URL."""
    return [sample for url in find_shards(folder)
            for sample in wds.WebDataset(url, shardshuffle=False, empty_check=False)]


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.tar"))}


@pytest.fixture
def toolbox(tmp_path):
    return write_toolbox(tmp_path / "toolbox", TRAIN_FRAMES)


def test_round_trip_through_the_reader(toolbox, tmp_path):
    label_path, images, labels = toolbox
    out = tmp_path / "train"
    report = convert.convert_h36m(label_path, images, out, shard_size=3, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]
    assert report["summary"]["frames_written"] == len(labels)
    assert report["summary"]["shards"] == 3 and report["summary"]["frames_skipped"] == 0
    assert report["summary"]["per_subject_action"]["S5"] == {"Eating": 1, "Purchases": 1, "Walking": 1}
    assert json.loads((out / convert.REPORT_NAME).read_text())["summary"] == report["summary"]

    by_key = {convert.sample_key(label): label for label in labels}
    samples = read_samples(out)
    assert sorted(s["__key__"] for s in samples) == sorted(by_key)
    for sample in samples:
        label = by_key[sample["__key__"]]
        source = Path(convert.frame_path(images, sample["__key__"])).read_bytes()
        assert sample["jpg"] == source  # the original bytes, not re-encoded
        pyd = pickle.loads(sample["pyd"])
        assert set(pyd) == set(label)
        for name, value in label.items():
            if isinstance(value, np.ndarray):
                assert pyd[name].dtype == np.float32
                np.testing.assert_array_equal(pyd[name], value.astype(np.float32))
            else:
                assert pyd[name] == value and type(pyd[name]) is int
        decoded = decode_sample(sample, "h36m", train=False)
        assert decoded["subject"] == label["subject"] and decoded["action"] == label["action"]
        expected_3d = label["joints_3d"] - label["joints_3d"][:1]
        np.testing.assert_allclose(decoded["keypoints_3d"][0].numpy(), expected_3d, atol=1e-6)
        np.testing.assert_allclose(decoded["keypoints_2d"][0].numpy(), label["joints_2d_cpn"], atol=1e-6)
        np.testing.assert_allclose(decoded["keypoints_2d_crop"][0].numpy(), label["joints_2d_cpn_crop"], atol=1e-4)
        assert decoded["image"].shape == (2, 3, 256, 192)


def test_train_is_shuffled_by_seed_and_validation_keeps_order(tmp_path):
    frames = [(1 + 4 * (i % 2), 2 + i % 15, 1, i % 4) for i in range(20)]
    label_path, images, labels = write_toolbox(tmp_path / "toolbox", frames)
    in_order = [convert.sample_key(label) for label in labels]

    def keys(out, **options):
        convert.convert_h36m(label_path, images, tmp_path / out, shard_size=6, progress=False, **options)
        return [s["__key__"] for s in read_samples(tmp_path / out)]

    shuffled = keys("a", split="train", seed=1)
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    assert keys("b", split="train", seed=1) == shuffled
    assert keys("c", split="train", seed=2) != shuffled
    assert keys("d", split="validation", subjects=[1, 5]) == in_order


def test_bad_inputs_are_skipped_and_reported(toolbox, tmp_path):
    label_path, images, labels = toolbox
    labels = [dict(label) for label in labels]
    keys = [convert.sample_key(label) for label in labels]
    Path(convert.frame_path(images, keys[0])).unlink()  # missing frame
    truncated = Path(convert.frame_path(images, keys[1]))
    truncated.write_bytes(truncated.read_bytes()[:300])  # unreadable frame
    del labels[2]["joints_3d"]  # missing field
    labels[3]["joints_2d_cpn"] = labels[3]["joints_2d_cpn"][:16]  # wrong shape
    labels[4]["action"] = 17  # out of range
    labels.append(dict(labels[5]))  # duplicate key
    nine = dict(labels[6], subject=9, image_id=99)  # validation subject in the training split
    labels.append(nine)
    Path(label_path).write_bytes(pickle.dumps(labels))

    out = tmp_path / "train"
    report = convert.convert_h36m(label_path, images, out, shard_size=2, progress=False)
    assert report["summary"]["skipped_by_reason"] == {
        "missing_field": 1, "bad_shape": 1, "bad_value": 1, "duplicate_key": 1, "subject_not_in_split": 1,
        "missing_frame": 1, "unreadable_frame": 1}
    assert report["summary"]["frames_written"] == 2
    assert sorted(s["__key__"] for s in read_samples(out)) == sorted(keys[5:7])
    written = json.loads((out / convert.REPORT_NAME).read_text())
    skipped = {entry["reason"]: entry for entry in written["skipped"]}
    assert skipped["missing_frame"]["key"] == keys[0]
    assert "joints_2d_cpn" in skipped["bad_shape"]["detail"]

    with pytest.raises(convert.ConversionError, match="missing_field") as refused:
        convert.convert_h36m(label_path, images, tmp_path / "strict", strict=True, progress=False)
    assert str(refused.value).startswith(f"{label_path}: label "), "a --strict refusal names the label file"
    labels = [label for i, label in enumerate(labels) if i in (0, 5, 6)]
    Path(label_path).write_bytes(pickle.dumps(labels))
    with pytest.raises(convert.ConversionError, match=keys[0]):
        convert.convert_h36m(label_path, images, tmp_path / "strict2", strict=True, progress=False)
    assert not list((tmp_path / "strict2").glob("*.partial"))


def test_bad_label_files_and_options(tmp_path, toolbox):
    label_path, images, _ = toolbox
    with pytest.raises(convert.ConversionError, match="not found"):
        convert.convert_h36m(tmp_path / "none_train.pkl", images, tmp_path / "o", progress=False)
    (tmp_path / "junk_train.pkl").write_bytes(b"not a pickle")
    with pytest.raises(convert.ConversionError, match="does not unpickle"):
        convert.convert_h36m(tmp_path / "junk_train.pkl", images, tmp_path / "o", progress=False)
    (tmp_path / "labels.pkl").write_bytes(pickle.dumps([]))
    with pytest.raises(convert.ConversionError, match="split"):
        convert.convert_h36m(tmp_path / "labels.pkl", images, tmp_path / "o", progress=False)
    with pytest.raises(convert.ConversionError, match="images/ folder"):
        convert.convert_h36m(label_path, tmp_path / "nowhere", tmp_path / "o", progress=False)


def test_interrupted_run_resumes_to_the_same_shards(toolbox, tmp_path, monkeypatch):
    label_path, images, _ = toolbox
    reference = convert.convert_h36m(label_path, images, tmp_path / "whole", shard_size=2, progress=False)

    out = tmp_path / "resumed"
    calls = {"n": 0}
    original = convert.check_frame

    def crash_in_third_shard(data):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        original(data)

    monkeypatch.setattr(convert, "check_frame", crash_in_third_shard)
    with pytest.raises(KeyboardInterrupt):
        convert.convert_h36m(label_path, images, out, shard_size=2, progress=False)
    monkeypatch.setattr(convert, "check_frame", original)
    assert sorted(p.name for p in out.glob("*.tar")) == ["data-000000.tar", "data-000001.tar"]
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / "data-000002.tar.partial").write_bytes(b"half a shard from a killed process")

    resumed = convert.convert_h36m(label_path, images, out, shard_size=2, progress=False)
    assert shard_bytes(out) == shard_bytes(tmp_path / "whole")
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("data-00000[01].tar")} == kept  # not rewritten
    assert not list(out.glob("*.partial"))
    assert resumed["summary"] == reference["summary"]

    with pytest.raises(convert.ConversionError, match="different conversion"):
        convert.convert_h36m(label_path, images, out, shard_size=2, seed=5, progress=False)


def test_shard_bytes_caps_shard_size(toolbox, tmp_path):
    label_path, images, labels = toolbox
    frame = max(Path(convert.frame_path(images, convert.sample_key(label))).stat().st_size for label in labels)
    cap = 2 * convert._estimated_bytes(frame)
    out = tmp_path / "capped"
    report = convert.convert_h36m(label_path, images, out, shard_bytes=cap, progress=False)
    assert report["summary"]["shards"] >= len(labels) // 2
    assert report["summary"]["frames_written"] == len(labels)
    tar_record = 20 * 512  # tar pads every archive to whole 10 KiB records
    assert all(p.stat().st_size <= cap + tar_record for p in out.glob("*.tar"))


def test_parallel_workers_write_the_same_shards(toolbox, tmp_path):
    label_path, images, _ = toolbox
    convert.convert_h36m(label_path, images, tmp_path / "serial", shard_size=2, progress=False)
    convert.convert_h36m(label_path, images, tmp_path / "parallel", shard_size=2, workers=2, progress=False)
    assert shard_bytes(tmp_path / "parallel") == shard_bytes(tmp_path / "serial")


def test_command_line_convert_and_validate(toolbox, tmp_path, capsys):
    label_path, images, labels = toolbox
    out = tmp_path / "train"
    assert convert.main(["h36m", "--labels", label_path, "--images", images, "--out", str(out),
                         "--shard-size", "4", "--workers", "0"]) == 0
    assert f"{len(labels)} frames written in 2 shards" in capsys.readouterr().out

    assert convert.main(["--validate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(labels)} samples in 2 shards, 0 failures" in printed
    assert "S1: 4" in printed and "S5: 3" in printed

    report = convert.validate_shards(out, progress=False)
    assert report["per_subject_action"]["S5"] == {"Eating": 1, "Purchases": 1, "Walking": 1}
    broken = out / "data-000001.tar"
    samples = read_samples(out)
    with wds.TarWriter(str(broken), encoder=False, mtime=0) as sink:
        sink.write({"__key__": samples[-1]["__key__"], "jpg": b"not a jpeg", "pyd": samples[-1]["pyd"]})
    assert convert.main(["--validate", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_full_disk_stops_with_exit_2_keeping_the_finished_shards(toolbox, tmp_path, monkeypatch, capsys):
    label_path, images, _ = toolbox
    convert.convert_h36m(label_path, images, tmp_path / "whole", shard_size=2, progress=False)
    out = tmp_path / "full"
    synced = []

    def fsync_until_full(descriptor):
        synced.append(descriptor)
        if len(synced) == 3:  # shard 0, the report after it, then shard 1: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("common.core.files.os.fsync", fsync_until_full)
    command = ["h36m", "--labels", label_path, "--images", images, "--out", str(out), "--shard-size", "2",
               "--workers", "0"]
    assert convert.main(command) == 2
    assert "the disk is full while writing" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["conversion_report.json", "data-000000.tar"]  # no partials
    assert (out / "data-000000.tar").read_bytes() == (tmp_path / "whole" / "data-000000.tar").read_bytes()
    monkeypatch.undo()
    assert convert.main(command) == 0  # resumes once there is room
    assert shard_bytes(out) == shard_bytes(tmp_path / "whole")


def test_ctrl_c_on_the_command_line_keeps_finished_shards_and_says_how_to_resume(toolbox, tmp_path, monkeypatch,
                                                                                 capsys):
    label_path, images, _ = toolbox
    original = convert.check_frame
    calls = []

    def interrupt_in_second_shard(data):
        calls.append(data)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(data)

    monkeypatch.setattr(convert, "check_frame", interrupt_in_second_shard)
    out = tmp_path / "out"
    command = ["h36m", "--labels", label_path, "--images", images, "--out", str(out), "--shard-size", "2",
               "--workers", "0"]
    assert convert.main(command) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["conversion_report.json", "data-000000.tar"]


def test_subjects_are_given_as_s9_or_9():
    from common.data.convert import subject_number
    assert [subject_number(s) for s in ("S9", "s11", "9", "1")] == [9, 11, 9, 1]
    for bad in ("S", "nine", "S9a", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a subject"):
            subject_number(bad)

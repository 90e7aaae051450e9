"""Files from others cannot run code: a pickled payload in a shard's pyd or in any kind of weight file
is refused before it runs (it would write a marker file), with and without --skip-bad; full unpickling
happens only when asked for explicitly."""
import contextlib
import logging
import pickle

import numpy as np
import pytest
import torch
from data_helpers import h36m_key, make_h36m_sample, write_shard
from model_fixtures import single_thread, tiny_denoiser  # noqa: F401

import main_diffusers_h36m
from common.core import safe_pickle
from common.data.convert import ConversionError, _load_labels
from common.data.loader import build_loader
from common.data.samples import ShardDataError
from common.model.backbone import PoseHRNet
from common.model.checkpoints import (
    CheckpointError,
    load_backbone_weights,
    load_context_weights,
    load_snappose_weights,
    read_checkpoint,
    save_checkpoint,
)
from common.model.networks import build_model
from common.pipeline.config import save_config


class Payload:
    """Unpickling this runs ``exec``, which writes ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_the_payload_is_real(tmp_path):
    pickle.loads(pickle.dumps(Payload(tmp_path / "marker")))  # what a plain unpickler does
    assert (tmp_path / "marker").exists()


def _as_numpy1(data):
    """The same pickle as numpy 1 (which wrote the released shards) writes it: ``numpy.core`` names."""
    if data[1] == 2:  # GLOBAL opcodes: text lines
        return data.replace(b"numpy._core.", b"numpy.core.")
    # Protocol 4: length-prefixed names inside one frame whose length shrinks with them.
    renamed = data.replace(b"\x16numpy._core.multiarray", b"\x15numpy.core.multiarray")
    assert data[2:3] == pickle.FRAME and len(data) < 2**16
    frame = int.from_bytes(data[3:11], "little") - (len(data) - len(renamed))
    return renamed[:3] + frame.to_bytes(8, "little") + renamed[11:]


def test_restricted_unpickler_reads_labels_of_both_numpy_spellings():
    labels = {"joints_3d": np.arange(51, dtype=np.float32).reshape(17, 3), "camera_id": np.int64(2),
              "center": np.array([1.5, 2.5]), "name": "S9", "ids": [1, (2, 3)], "bytes": b"\x00\xff"}
    pickles = [pickle.dumps(labels, protocol=p) for p in (2, 4, 5)]
    pickles += [_as_numpy1(pickles[0]), _as_numpy1(pickles[1])]
    assert b"numpy.core.multiarray" in pickles[-1] and b"numpy.core.multiarray" in pickles[-2]
    for data in pickles:
        loaded = safe_pickle.loads(data)
        assert loaded.keys() == labels.keys() and loaded["name"] == "S9" and loaded["bytes"] == b"\x00\xff"
        np.testing.assert_array_equal(loaded["joints_3d"], labels["joints_3d"])
        assert loaded["camera_id"] == 2 and loaded["ids"] == [1, (2, 3)]


@pytest.mark.parametrize("danger", [Payload, "os.system", "numpy.load", "_codecs.decode"])
def test_restricted_unpickler_refuses_other_globals(danger, tmp_path):
    if danger is Payload:
        data, name = pickle.dumps({"x": Payload(tmp_path / "marker")}), "builtins.exec"
    else:
        module, attribute = danger.rsplit(".", 1)
        data, name = f"c{module}\n{attribute}\n.".encode(), danger  # protocol 0: GLOBAL, STOP
    with pytest.raises(safe_pickle.RefusedGlobal) as refused:
        safe_pickle.loads(data)
    assert refused.value.name == name
    assert not (tmp_path / "marker").exists()


@pytest.fixture
def payload_shards(tmp_path):
    """validation/ with one shard: a good sample, one whose pyd carries a payload, another good one."""
    rng = np.random.default_rng(0)
    samples = [make_h36m_sample(h36m_key(9, 2 + i, i), rng) for i in range(3)]
    marker = tmp_path / "marker"
    samples[1]["pyd"] = pickle.dumps({**samples[1]["pyd"], "extra": Payload(marker)})
    write_shard(tmp_path / "shards" / "validation" / "data-000000.tar", samples)
    return tmp_path / "shards", marker, samples[1]["__key__"]


def test_a_pyd_payload_does_not_run(payload_shards):
    root, marker, key = payload_shards
    with pytest.raises(ShardDataError, match=f"{key}.*builtins.exec.*--skip-bad") as error:
        list(build_loader(root, "h36m", train=False, batch_size=3))
    assert error.value.key == key
    assert not marker.exists()

    loader = build_loader(root, "h36m", train=False, batch_size=3, skip_bad=True)
    keys = [k for batch in loader for k in batch["key"]]
    assert len(keys) == 2 and key not in keys
    assert [(r.key, "builtins.exec" in r.reason) for r in loader.skipped] == [(key, True)]
    assert not marker.exists()


def test_a_label_file_payload_does_not_run(tmp_path):
    path = tmp_path / "h36m_validation.pkl"
    path.write_bytes(pickle.dumps([{"subject": 9, "center": np.zeros(2)}, Payload(tmp_path / "marker")]))
    with pytest.raises(ConversionError, match="builtins.exec"):
        _load_labels(path)
    assert not (tmp_path / "marker").exists()


def _backbone_file(path, payload):
    torch.save({**PoseHRNet(8).state_dict(), "payload": payload}, path)


def _contextpose_file(path, payload):
    torch.save({"model": {"module.volume_net.coord_embed.weight": torch.zeros(32, 2)}, "payload": payload}, path)


def _snappose_file(path, payload):
    torch.save({"epoch": 3, "lr": payload, "optimizer": None, "model_pos": tiny_denoiser().state_dict()}, path)


def _plain_pickle(path, payload):
    with open(path, "wb") as handle:
        pickle.dump({"model_pos": payload}, handle, protocol=2)


WRITERS = {"backbone": (_backbone_file, lambda p, **kw: load_backbone_weights(PoseHRNet(8), p, **kw)),
           "contextpose": (_contextpose_file, lambda p, **kw: load_context_weights(tiny_denoiser(), p, **kw)),
           "snappose": (_snappose_file, lambda p, **kw: load_snappose_weights(tiny_denoiser(), p, **kw)),
           "plain pickle": (_plain_pickle, read_checkpoint)}


@pytest.mark.parametrize("kind", WRITERS)
def test_a_checkpoint_payload_does_not_run(kind, tmp_path):
    write, load = WRITERS[kind]
    marker = tmp_path / "marker"
    path = tmp_path / "weights.bin"
    write(path, Payload(marker))
    with pytest.raises(CheckpointError, match=r"object (builtins\.)?exec,.*not loaded.*--trust-checkpoint"):
        load(path)
    assert not marker.exists()
    # Only an explicit trust unpickles fully (and so runs the payload, which is why it is not the default).
    with contextlib.suppress(CheckpointError):  # the payload leaves the file incomplete for some loaders
        load(path, trust=True)
    assert marker.exists()


@pytest.fixture
def tiny_run(tiny_config, tiny_shards, tmp_path):
    """(config file, shard root, a SnapPose file of the tiny model) for the entry script."""
    cfg = tiny_config(tmp_path / "ck")
    config = save_config(cfg, tmp_path / "tiny.yaml")
    _, denoiser = build_model(cfg.model)
    return str(config), str(tiny_shards["h36m"]), denoiser


@pytest.mark.usefixtures("single_thread")
def test_the_cli_refuses_a_payload_unless_trusted(tiny_run, tmp_path, caplog):
    config, root, denoiser = tiny_run
    marker = tmp_path / "marker"
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser, epoch=1, lr=Payload(marker))
    argv = ["--config", config, "-c", str(tmp_path / "ck"), "-w", root, "--evaluate", str(weights),
            "-num_proposals", "1", "--max-samples", "1"]
    for extra in ([], ["--skip-bad"]):
        with caplog.at_level(logging.ERROR):
            assert main_diffusers_h36m.main(argv + extra) == 2
        assert "object exec" in caplog.text and "--trust-checkpoint" in caplog.text
        assert not marker.exists()
    assert main_diffusers_h36m.main(argv + ["--trust-checkpoint"]) == 0
    assert marker.exists()


@pytest.mark.usefixtures("single_thread")
def test_the_cli_stops_on_a_pyd_payload_and_skips_it_with_skip_bad(tiny_run, payload_shards, tmp_path, caplog):
    config, _, denoiser = tiny_run
    root, marker, key = payload_shards
    weights = save_checkpoint(tmp_path / "best_h36m.bin", denoiser)
    argv = ["--config", config, "-c", str(tmp_path / "ck"), "-w", str(root), "--evaluate", str(weights),
            "-num_proposals", "1"]
    with caplog.at_level(logging.ERROR):
        assert main_diffusers_h36m.main(argv) == 2
    assert key in caplog.text and "builtins.exec" in caplog.text and "--skip-bad" in caplog.text
    assert main_diffusers_h36m.main(argv + ["--skip-bad"]) == 0
    assert not marker.exists()

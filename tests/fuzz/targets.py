"""What the fuzzer attacks: every reader of files from others, and every command's file and path arguments.

A target is ``name -> function(data, sandbox) -> harness.Run``: it draws a
hostile input with hypothesis's ``data`` (see ``mutate``), writes it into the
sandbox and says how to call the reader or command on it, which input errors
it may raise and which names its message must contain.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import seeds
import torch
import yaml
from harness import Run, evil_pickle
from hypothesis import strategies as st
from mutate import materialize, mutated_bytes, mutated_tree

# ---------------------------------------------------------------- paths

PATH_KINDS = ["valid", "missing", "folder", "under_a_file", "spaces", "unicode", "dash", "dangling_link",
              "unreadable", "empty"]


def hostile_path(data, sandbox, path):
    """A path argument for the valid file ``path`` (inside the sandbox): itself, or one of ``PATH_KINDS``."""
    path = Path(path)
    kind = data.draw(st.sampled_from(PATH_KINDS), label="path kind")
    if kind == "valid":
        return str(path)
    if kind == "missing":
        return str(path.with_name("missing " + path.name))
    if kind == "folder":
        folder = path.with_name("folder " + path.name)
        folder.mkdir()
        return str(folder)
    if kind == "under_a_file":
        return str(path / "inner" / path.name)
    if kind in ("spaces", "unicode", "dash"):
        name = {"spaces": "a  file " + path.name, "unicode": "naïve 文件 " + path.name, "dash": "-" + path.name}[kind]
        target = (sandbox.cwd if kind == "dash" else path.parent) / name
        (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        return name if kind == "dash" else str(target)
    if kind == "dangling_link":
        link = path.with_name("link " + path.name)
        link.symlink_to(path.with_name("gone " + path.name))
        return str(link)
    if kind == "unreadable":
        path.chmod(0)
        return str(path)
    return ""


def hostile_folder(data, sandbox, name="run"):
    """An output folder argument: new, nested, existing, a file, with spaces or unicode; and a full disk or not."""
    kind = data.draw(st.sampled_from(["new", "nested", "exists", "is_a_file", "unicode", "dash"]), label="out kind")
    sandbox.out.mkdir(exist_ok=True)
    folder = sandbox.out / {"new": name, "nested": f"a/b c/{name}", "exists": name, "is_a_file": name,
                            "unicode": f"résultat 出力 {name}", "dash": f"-{name}"}[kind]
    if kind == "exists":
        folder.mkdir(parents=True)
    if kind == "is_a_file":
        folder.write_text("a file where a folder goes")
    disk_full = data.draw(st.booleans(), label="full disk") if kind in ("new", "exists") else False
    return str(folder), disk_full


def _write(data, sandbox, name, valid_tree, dump, text=False, evil=True):
    """Write a hostile version of ``valid_tree`` to ``sandbox/in/name``: tree edits, byte damage or a code-running pickle."""
    choices = ["valid", "tree", "tree", "bytes"] + (["evil"] if evil else [])
    how = data.draw(st.sampled_from(choices), label="mutation")
    if how == "evil":
        content = evil_pickle(sandbox, valid_tree if isinstance(valid_tree, dict) else None)
    elif how == "valid":
        content = dump(valid_tree)
    else:
        tree = materialize(data.draw(mutated_tree(valid_tree), label="tree")) if how == "tree" else valid_tree
        try:
            content = dump(tree)
        except Exception:  # noqa: B902 - whatever a writer refuses, it cannot be a file to read
            content = dump(valid_tree)  # the writer refused the tree; damage its bytes instead
            how = "bytes"
        if how == "bytes":
            content = data.draw(mutated_bytes(content, text=text), label="bytes")
    path = sandbox.inputs / name
    path.write_bytes(content)
    return path


def _json(tree):
    return json.dumps(tree).encode()


def _yaml(tree):
    return yaml.safe_dump(tree, allow_unicode=True).encode()


def _npz(tree):
    if not isinstance(tree, dict):
        tree = {"array": np.asarray(tree, dtype=object)}
    return seeds.npz_bytes({str(k): np.asarray(v) for k, v in tree.items()})


def _torch(tree):
    import io
    buffer = io.BytesIO()
    torch.save(seeds.to_torch(tree), buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- readers

def reader_config(data, sandbox):
    from common.pipeline.config import ConfigError, load_config

    valid = data.draw(st.sampled_from(["project", "original"]), label="format")
    tree = seeds.project_config() if valid == "project" else seeds.ORIGINAL_CONFIG
    path = hostile_path(data, sandbox, _write(data, sandbox, "config.yaml", tree, _yaml, text=True, evil=False))
    dataset = data.draw(st.sampled_from(["h36m", "mpi"]), label="dataset")
    return Run(lambda: load_config(path, dataset=dataset), names=(path,), expected=(ConfigError,))


def reader_checkpoint(data, sandbox):
    from common.model.checkpoints import CheckpointError, load_snappose_weights
    path = hostile_path(data, sandbox, _write(data, sandbox, "best_h36m.bin", seeds.checkpoint_tree(), _torch))
    denoiser = seeds.tiny_denoiser()
    return Run(lambda: load_snappose_weights(denoiser, path), names=(path,),
               expected=(CheckpointError, FileNotFoundError))


def reader_shard_sample(data, sandbox):
    from common.data.samples import ShardDataError, decode_sample

    dataset = data.draw(st.sampled_from(["h36m", "mpi"]), label="dataset")
    sample = seeds.h36m_sample() if dataset == "h36m" else seeds.mpi_sample()
    image = "jpg" if dataset == "h36m" else "png"
    pyd = _write(data, sandbox, "sample.pyd", sample["pyd"], seeds.pickle_bytes).read_bytes()
    picture = sample[image]
    if data.draw(st.booleans(), label="damage image"):
        picture = data.draw(mutated_bytes(picture), label="image")
    raw = {"__key__": sample["__key__"], "__url__": "shard-000.tar", image: picture, "pyd": pyd}
    train = data.draw(st.booleans(), label="train")
    return Run(lambda: decode_sample(raw, dataset, train, rng=np.random.default_rng(0)),
               names=("shard-000.tar",), expected=(ShardDataError,))


def reader_annotations(data, sandbox):
    from common.infer.inputs import InputError, read_annotations

    kind = data.draw(st.sampled_from(["coco_annotations", "coco_results", "mmpose", "ours", "npz"]), label="format")
    if kind == "npz":
        path = _write(data, sandbox, "keypoints.npz", seeds.keypoint_npz(), _npz, evil=False)
    else:
        path = _write(data, sandbox, "keypoints.json", seeds.annotation_files()[kind], _json, text=True, evil=False)
    path = hostile_path(data, sandbox, path)
    return Run(lambda: read_annotations(path), names=(path,), expected=(InputError,))


def reader_image(data, sandbox):
    from common.infer.inputs import InputError, read_image

    fmt = data.draw(st.sampled_from(["png", "jpg"]), label="format")
    path = sandbox.inputs / f"person.{fmt}"
    path.write_bytes(data.draw(st.one_of(st.just(seeds.person_image(fmt)), mutated_bytes(seeds.person_image(fmt))),
                               label="image"))
    path = hostile_path(data, sandbox, path)
    return Run(lambda: read_image(path), names=(path,), expected=(InputError,))


def reader_video(data, sandbox):
    from common.infer.inputs import InputError, video_frames

    path = sandbox.inputs / "clip.gif"
    path.write_bytes(data.draw(st.one_of(st.just(seeds.gif_bytes()), mutated_bytes(seeds.gif_bytes())), label="gif"))
    path = hostile_path(data, sandbox, path)
    every = data.draw(st.sampled_from([1, 2]), label="every")
    return Run(lambda: list(video_frames(path, every=every, max_frames=5)), names=(path,), expected=(InputError,))


def reader_predictions(data, sandbox):
    from common.analysis.report import load_predictions

    path = hostile_path(data, sandbox, _write(data, sandbox, "predictions.npz", seeds.predictions(), _npz))
    return Run(lambda: load_predictions(path), names=(path,), expected=(ValueError, FileNotFoundError))


def reader_labels(data, sandbox):
    from common.data.convert import ConversionError, _load_labels, check_label

    path = hostile_path(data, sandbox, _write(data, sandbox, "h36m_train.pkl", seeds.labels(), seeds.pickle_bytes))

    def read():
        return [check_label(label) for label in _load_labels(path)]
    return Run(read, names=(path,), expected=(ConversionError,))


READERS = {
    "config": reader_config, "checkpoint": reader_checkpoint, "shard_sample": reader_shard_sample,
    "annotations": reader_annotations, "image": reader_image, "video": reader_video,
    "predictions": reader_predictions, "labels": reader_labels,
}

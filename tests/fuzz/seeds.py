"""Valid files the fuzzer starts from, built once per process in a template folder.

Each is the smallest real example of a format SnapPose reads: run configs in
both formats, a SnapPose checkpoint of a tiny model, shard samples (pyd labels
and JPEG/PNG images), annotation files (COCO annotations and results, MMPose,
our JSON, npz), evaluation predictions, converter label pickles, a tiny
dataset root and a GIF video.
"""
import functools
import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from data_helpers import encode_image, h36m_key, make_h36m_sample, make_mpi_sample, write_split
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

ORIGINAL_CONFIG = {
    "title": "human36m_vol_softmax_single", "kind": "human36m",
    "model": {"name": "vol", "image_shape": [192, 256], "backbone": {"name": "resnet152", "checkpoint": ""},
              "poseformer": {"embed_dim_ratio": 32, "depth": 4, "levels": 4, "mask_pose": False,
                             "mask_context": True, "shuffle_context": False}},
    "dataset": {"kind": "human36m", "root": "datasets/Human3.6M/images/"},
    "train": {"n_epochs": 3, "batch_size": 4, "num_workers": 0},
    "val": {"batch_size": 4, "flip_test": False, "num_workers": 0},
}

# A tiny model and schedule: a run that the fuzzer lets through ends in seconds.
TINY = {
    "device": "cpu", "seed": 0,
    "data": {"batch_size": 2, "eval_batch_size": 3, "num_workers": 0, "shuffle_buffer": 4,
             "max_train_samples": 2, "max_eval_samples": 2},
    "model": {"backbone_width": 8, "res_depth": 1, "joint_depth": 1, "embed_dim": 32},
    "weights": {"pretrained_backbone": False, "pretrained_context": False},
    "train": {"epochs": 1, "validate_every": 0, "val_proposals": 2, "val_timesteps": 1},
    "evaluation": {"num_proposals": 2, "timesteps": 1},
}


def project_config():
    """The parsed config/human36m_train.yaml (this project's format)."""
    return yaml.safe_load((REPO / "config" / "human36m_train.yaml").read_text())


def h36m_sample():
    sample = make_h36m_sample(h36m_key(9, 2, 0), np.random.default_rng(0))
    return sample


def mpi_sample():
    return make_mpi_sample("TS1_000000", np.random.default_rng(0))


def annotation_files():
    """{name: parsed JSON} of the keypoint and box formats ``common.infer`` reads, for image ``person.png``."""
    keypoints = np.random.default_rng(0).uniform(20, 100, size=(17, 2)).round(1)
    flat = [float(v) for xy in keypoints for v in (*xy, 2)]
    box = [10.0, 10.0, 100.0, 100.0]
    return {
        "coco_annotations": {"images": [{"id": 1, "file_name": "person.png"}],
                             "annotations": [{"image_id": 1, "keypoints": flat, "bbox": box, "num_keypoints": 17}]},
        "coco_results": [{"image_id": 1, "keypoints": flat, "bbox": box, "score": 0.9}],
        "mmpose": {"meta_info": {}, "instance_info": [{"keypoints": keypoints.tolist(),
                                                        "keypoint_scores": [0.9] * 17, "bbox": [[10, 10, 110, 110]]}]},
        "ours": {"person.png": [{"bbox": box, "keypoints": keypoints.tolist()}]},
    }


def keypoint_npz():
    keypoints = np.random.default_rng(0).uniform(20, 100, size=(1, 17, 3)).astype(np.float32)
    keypoints[..., 2] = 1
    return {"keypoints": keypoints, "names": np.array(["person.png"]), "boxes": np.array([[10.0, 10, 100, 100]]),
            "format": np.array("coco")}


def predictions():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, 17, 3)) * 0.2
    return {"keys": np.array([h36m_key(9, 2, i) for i in range(3)]),
            "hypotheses": (truth[:, None] + rng.normal(size=(3, 4, 17, 3)) * 0.02).astype(np.float32),
            "ground_truth": truth.astype(np.float32)}


def labels():
    """CA-PF label dicts (a list of two), as ``common.convert h36m --labels`` reads them."""
    rng = np.random.default_rng(0)
    result = []
    for image_id in range(2):
        pyd = make_h36m_sample(h36m_key(1, 2, image_id), rng)["pyd"]
        result.append({"subject": 1, "action": 2, "subaction": 1, "camera_id": 0, "image_id": image_id,
                       **{name: pyd[name].astype(np.float64) for name in
                          ("center", "scale", "joints_3d", "joints_2d_cpn", "joints_2d_cpn_crop")}})
    return result


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def person_image(fmt="png"):
    rng = np.random.default_rng(0)
    return encode_image(rng.integers(0, 255, size=(120, 120, 3)).astype(np.uint8), fmt)


def gif_bytes(frames=3):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)) for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def templates():
    """A folder (built once) with dataset roots, a tiny checkpoint and its config: ``{name: Path}``."""
    from common.model.checkpoints import save_checkpoint
    from common.model.networks import build_model
    from common.pipeline.config import config_from_dict, save_config

    root = Path(tempfile.mkdtemp(prefix="fuzz-templates "))
    paths = {}
    for dataset, train, test in (("h36m", [2], "validation"), ("mpi", [2], "test")):
        write_split(root / dataset / "train", dataset, train, seed=1)
        write_split(root / dataset / test, dataset, [2], seed=2)
        paths[f"root_{dataset}"] = root / dataset
    values = {**TINY, "dataset": "h36m"}
    cfg = config_from_dict(values)
    torch.manual_seed(0)
    _, denoiser = build_model(cfg.model)
    paths["checkpoint"] = root / "model" / "best_h36m.bin"
    save_checkpoint(paths["checkpoint"], denoiser, epoch=1, lr=1e-4)
    save_config(cfg, paths["checkpoint"].parent / "config.yaml")
    paths["config"] = paths["checkpoint"].parent / "config.yaml"
    return paths


@functools.lru_cache(maxsize=None)
def tiny_denoiser():
    """The denoiser of ``TINY`` (built once; loading weights into it replaces them all or fails)."""
    from common.model.networks import build_model
    from common.pipeline.config import config_from_dict

    return build_model(config_from_dict({**TINY, "dataset": "h36m"}).model)[1]


@functools.lru_cache(maxsize=None)
def _checkpoint_tree():
    obj = torch.load(templates()["checkpoint"], map_location="cpu", weights_only=False)
    return _to_numpy(obj)


def checkpoint_tree():
    """The tiny checkpoint's content with tensors as numpy arrays (for ``mutate.mutated_tree``)."""
    import copy
    return copy.deepcopy(_checkpoint_tree())


def _to_numpy(tree):
    if isinstance(tree, torch.Tensor):
        return tree.numpy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree


def to_torch(tree):
    """Numeric numpy arrays back to tensors (others stay numpy, which a safe loader must refuse)."""
    if isinstance(tree, np.ndarray) and tree.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(tree))
    if isinstance(tree, dict):
        return {k: to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_torch(v) for v in tree)
    return tree


def pickle_bytes(tree):
    return pickle.dumps(tree, protocol=4)

"""Writers of weight files in the released layouts, for loader and parity tests.

Each takes a state dict (names as in the specification's key lists) and
writes it the way the authors' files store it.
"""
import torch


def random_state_dict(keys, seed=0):
    """Random tensors with the names and shapes of a key list [(name, shape)]."""
    g = torch.Generator().manual_seed(seed)
    return {name: (torch.zeros((), dtype=torch.long) if name.endswith("num_batches_tracked")
                   else torch.randn(shape, generator=g))
            for name, shape in keys}


def write_hrnet(path, state_dict):
    """PoseHRNet: a plain state dict (``final_layer`` included when given)."""
    torch.save(dict(state_dict), path)
    return path


def write_contextpose(path, state_dict, lifter="volume_net"):
    """CA-PF: ``{"model": ...}`` with names as in its key list (``module.backbone.``,
    ``module.volume_net.``); ``lifter`` renames ``volume_net`` (e.g. "pose_estimator")."""
    model = {name.replace("module.volume_net.", f"module.{lifter}.", 1): t for name, t in state_dict.items()}
    torch.save({"model": model}, path)
    return path


def write_snappose(path, state_dict, prefix="", epoch=7, lr=5e-5):
    """SnapPose: ``{"epoch", "lr", "optimizer", "model_pos"}``, names optionally prefixed."""
    torch.save({"epoch": epoch, "lr": lr, "optimizer": {"state": {}, "param_groups": []},
                "model_pos": {prefix + name: t for name, t in state_dict.items()}}, path)
    return path


"""Reading the released weight files and writing this project's checkpoints.

Layouts (names and shapes of each are listed in the specification's key lists):

- PoseHRNet (``pose_hrnet_w32_256x192.pth``): a plain state dict, with the
  heatmap head ``final_layer`` (loaded only into a backbone built with one).
- Context-Aware PoseFormer (``human36m_nips_retrain.bin``,
  ``mpi-inf_nips_retrain.bin``): ``{"model": state_dict}`` with names under
  ``module.backbone.`` (an HRNet) and ``module.volume_net.`` (some files say
  ``module.pose_estimator.``), CA-PF's own lifter, of which only coord_embed,
  feat_embed, Spatial_pos_embed and context_blocks fit the denoiser.
- SnapPose (``best_h36m.bin``, ``best_mpi.bin``, ``latest_epoch.bin``):
  ``{"epoch", "lr", "optimizer", "model_pos": state_dict}``, possibly with
  ``module.`` / ``_orig_mod.`` prefixes from a wrapped model.

Every file is read without running code from it (``read_checkpoint``) unless
the caller trusts it explicitly.

Unlike the original code (``strict=False``), a missing, unexpected or
mis-shaped tensor is an error that names it and the file.
"""
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from common.core import safe_pickle
from common.core.errors import BadInput
from common.core.files import atomic_write, remove_orphaned_temporaries
from common.model.denoiser import CONTEXT_PREFIXES

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CONTEXT_LIFTER_PREFIXES = ("volume_net.", "pose_estimator.")
SNAPPOSE_RESERVED_KEYS = ("epoch", "lr", "optimizer", "model_pos")
_MAX_LISTED = 8


class CheckpointError(BadInput):
    """A weight file that is not what the loader expects (format, names or shapes)."""


TRUST_HINT = ("If you trust where the file comes from, pass --trust-checkpoint (trust=True in Python) to "
              "unpickle it fully, which lets it run code")


WEIGHT_SOURCES = {
    "backbone": ("the PoseHRNet-W32 backbone weights (pose_hrnet_w32_256x192.pth, released with "
                 "HRNet and SnapPose)", "--backbone-weights"),
    "context": ("the Context-Aware PoseFormer weights (human36m_nips_retrain.bin or "
                "mpi-inf_nips_retrain.bin, released with Context-Aware PoseFormer)", "--context-weights"),
}


def require_weight_file(candidates, kind):
    """The first existing file of ``candidates`` (a path or a sequence of paths, in search order).

    Raises:
        FileNotFoundError: a candidate is a folder, or none exists; the message
            lists every place looked at, what the file is and how to point elsewhere.
    """
    candidates = [candidates] if isinstance(candidates, (str, Path)) else list(candidates)
    what, flag = WEIGHT_SOURCES[kind]
    for path in candidates:
        if Path(path).is_dir():
            raise FileNotFoundError(f"weight file {path} is a folder; it should be the file holding {what} "
                                    f"(pass the file itself with {flag})")
        if Path(path).is_file():
            return Path(path)
    where = (f"weight file {candidates[0]} not found" if len(candidates) == 1 else
             f"weight file not found at any of the places looked at ({', '.join(map(str, candidates))})")
    raise FileNotFoundError(
        f"{where}: it should hold {what}. Put it {'there' if len(candidates) == 1 else 'at one of them'}, "
        f"pass its path with {flag}, or set weights.pretrained_{kind}: false in the config to run with "
        f"random weights")


def read_checkpoint(path, trust=False):
    """Load a checkpoint file onto the CPU without running code from it.

    The file is read with ``torch.load(weights_only=True)``, which builds only
    tensors, containers and numbers, plus the numpy arrays, scalars and dtypes
    of ``common.core.safe_pickle.torch_safe_globals`` (older checkpoints keep e.g.
    the learning rate as a numpy scalar). Anything else is refused; ``trust``
    unpickles the file fully instead, which can run code from it: only for
    files from a trusted source. There is no fallback from one to the other.

    Returns:
        the loaded object (a dict for every supported layout).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, not a PyTorch checkpoint, not a dict, or
            (without ``trust``) an object outside the allow-list.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a weight file (e.g. best_h36m.bin inside it)")
    if not path.is_file():
        raise FileNotFoundError(
            f"weight file {path} not found: download the released weights (PoseHRNet, "
            f"Context-Aware PoseFormer, SnapPose) and pass their path, or train one first")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        if trust:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(safe_pickle.torch_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointError(f"{path} is not a PyTorch checkpoint ({error})") from error
        raise CheckpointError(f"{path} holds {_refused_object(error)}, which weight files do not need and "
                              f"which could run code: not loaded. {TRUST_HINT}.") from None
    except Exception as error:  # torch.load raises many types for corrupt or foreign files
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict (a state dict or checkpoint)")
    return obj


def _refused_object(error):
    """What torch's weights-only unpickler refused, from its message (which names it in one of two ways)."""
    text = str(error)
    match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Can only build .*?but got (<[^>]*>)", text)
    return f"the Python object {match.group(1)}" if match else "Python objects besides tensors"


def _looks_like_torch_file(path):
    # torch.save writes a zip archive; files of torch < 1.6 are a bare pickle (protocol 2+ starts with 0x80).
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def nonfinite_tensors(state):
    """Names of the floating-point tensors of a state dict that hold NaN or infinity."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]


def strip_wrapper_prefixes(state_dict, path="the weight file"):
    """Remove leading ``module.`` / ``_orig_mod.`` (DataParallel, DDP, torch.compile) from every name.

    CheckpointError naming ``path`` if a name is not a string (a state dict it is not).
    """
    stripped = {}
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: a tensor is named {name!r}, not a string: not a state dict")
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        stripped[name] = tensor
    return stripped


def unwrap_model(model):
    """The plain module inside DataParallel / DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _listing(names):
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _check_tensors(expected, found, path, what, hint=""):
    """Raise CheckpointError unless ``found`` has exactly the names and shapes of ``expected``, all finite."""
    problems = []
    missing = expected.keys() - found.keys()
    unexpected = found.keys() - expected.keys()
    mismatched = [name for name in expected.keys() & found.keys()
                  if not isinstance(found[name], torch.Tensor) or found[name].shape != expected[name].shape]
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    for name in sorted(mismatched)[:_MAX_LISTED]:
        shape = tuple(found[name].shape) if isinstance(found[name], torch.Tensor) else type(found[name]).__name__
        problems.append(f"tensor {name} has shape {shape}, the model expects {tuple(expected[name].shape)}")
    if problems:
        raise CheckpointError(f"{path} does not fit the {what}: " + "; ".join(problems) + (f". {hint}" if hint else ""))
    bad = nonfinite_tensors(found)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} of {len(found)} tensors hold NaN or infinite values "
                              f"({_listing(bad)}); the run that wrote it diverged: use an earlier checkpoint")


def load_backbone_weights(backbone, path, trust=False):
    """Load a released PoseHRNet file (or the HRNet inside a CA-PF file) into ``backbone``.

    ``final_layer`` (the heatmap head) is loaded when ``backbone`` has one
    (then the file must hold it) and ignored otherwise. Returns ``backbone``.
    ``trust``: unpickle fully (see ``read_checkpoint``).

    Raises:
        CheckpointError: not a checkpoint, or a tensor missing / unexpected / mis-shaped
            (e.g. a W48 file for a W32 network).
    """
    obj = read_checkpoint(path, trust)
    if isinstance(obj.get("model"), dict):  # a CA-PF file carries its HRNet under backbone.
        inner = strip_wrapper_prefixes(obj["model"], path)
        state = {name[len("backbone."):]: t for name, t in inner.items() if name.startswith("backbone.")}
        if not state:
            raise CheckpointError(f"{path} has a 'model' dict without backbone.* tensors: not a PoseHRNet or CA-PF file")
    elif isinstance(obj.get("state_dict"), dict):
        state = strip_wrapper_prefixes(obj["state_dict"], path)
    else:
        state = strip_wrapper_prefixes(obj, path)
    backbone = unwrap_model(backbone)
    if getattr(backbone, "final_layer", None) is None:
        state = {name: t for name, t in state.items() if not name.startswith("final_layer.")}
    hint = ""
    stem_out = state.get("transition1.0.0.weight")
    if isinstance(stem_out, torch.Tensor) and stem_out.shape[0] != backbone.width:
        hint = f"The file is a W{stem_out.shape[0]} network: build PoseHRNet(width={stem_out.shape[0]})."
    elif getattr(backbone, "final_layer", None) is not None and "final_layer.weight" not in state:
        hint = ("The file has no heatmap head (final_layer), which finding 2D keypoints needs: use the released "
                "pose_hrnet_w32_256x192.pth, or give the 2D keypoints yourself.")
    _check_tensors(backbone.state_dict(), state, path, f"PoseHRNet-W{backbone.width}", hint)
    backbone.load_state_dict(state)
    return backbone


def load_context_weights(denoiser, path, trust=False):
    """Load coord_embed, feat_embed, Spatial_pos_embed and context_blocks from a CA-PF file, then freeze them.

    Returns:
        sorted list of the denoiser's state-dict names that were loaded.
    ``trust``: unpickle fully (see ``read_checkpoint``).
    Raises:
        CheckpointError: not a CA-PF file (no ``model`` dict with a
            volume_net / pose_estimator lifter), or a context tensor missing or mis-shaped.
    """
    obj = read_checkpoint(path, trust)
    if not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"{path} is not a Context-Aware PoseFormer file (*_nips_retrain.bin): it has no 'model' "
            f"state dict; found keys {_listing(obj.keys())}")
    inner = strip_wrapper_prefixes(obj["model"], path)
    lifter = next((p for p in CONTEXT_LIFTER_PREFIXES if any(n.startswith(p) for n in inner)), None)
    if lifter is None:
        raise CheckpointError(
            f"{path} has no volume_net.* or pose_estimator.* tensors: not a Context-Aware PoseFormer file")
    state = {name[len(lifter):]: t for name, t in inner.items()
             if name.startswith(lifter) and name[len(lifter):].startswith(CONTEXT_PREFIXES)}
    denoiser = unwrap_model(denoiser)
    expected = {name: t for name, t in denoiser.state_dict().items() if name.startswith(CONTEXT_PREFIXES)}
    _check_tensors(expected, state, path, "denoiser's context layers",
                   "The backbone width of the denoiser must match the file's (32 for the released ones).")
    denoiser.load_state_dict(state, strict=False)
    denoiser.freeze_context()
    return sorted(state)


def load_snappose_weights(denoiser, path, trust=False):
    """Load a SnapPose checkpoint (released ``best_*.bin`` or one written by ``save_checkpoint``).

    A plain state dict is accepted too. Returns the checkpoint dict (epoch, lr,
    optimizer state and any extra keys, ``model_pos`` included).
    ``trust``: unpickle fully (see ``read_checkpoint``).

    Raises:
        CheckpointError: not a checkpoint, a CA-PF file, or a tensor missing / unexpected / mis-shaped.
    """
    obj = read_checkpoint(path, trust)
    if "model_pos" in obj:
        state = obj["model_pos"]
    elif "model" in obj:
        raise CheckpointError(
            f"{path} has a 'model' entry but no 'model_pos': it looks like a Context-Aware PoseFormer "
            f"file, which load_context_weights reads")
    elif obj and all(isinstance(t, torch.Tensor) for t in obj.values()):
        state, obj = obj, {"model_pos": obj}
    else:
        raise CheckpointError(f"{path} has no 'model_pos' state dict; found keys {_listing(obj.keys())}")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'model_pos' is a {type(state).__name__}, expected a state dict")
    state = strip_wrapper_prefixes(state, path)
    denoiser = unwrap_model(denoiser)
    _check_tensors(denoiser.state_dict(), state, path, "SnapPose denoiser",
                   "Check that the model config (backbone width, res/joint depth) matches the file.")
    denoiser.load_state_dict(state)
    return obj


def save_checkpoint(path, denoiser, optimizer=None, epoch=0, lr=None, **extra):
    """Write ``{"epoch", "lr", "optimizer", "model_pos", **extra}`` atomically.

    The file is written beside ``path`` under a temporary name and moved into
    place with ``os.replace``, so an interrupted save never leaves a truncated
    checkpoint. Wrapper prefixes are not written (the model is unwrapped).
    Weights holding NaN or infinity are never written (CheckpointError), so a
    diverged run cannot replace a good file.
    ``optimizer`` is stored as its ``state_dict()`` (or None).

    Returns:
        the path written, as a ``Path``.
    """
    clashes = set(extra) & set(SNAPPOSE_RESERVED_KEYS)
    if clashes:
        raise ValueError(f"extra checkpoint keys {sorted(clashes)} clash with {SNAPPOSE_RESERVED_KEYS}")
    path = Path(path)
    state = unwrap_model(denoiser).state_dict()
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"refusing to write {path}: {len(bad)} of {len(state)} tensors of the model hold "
                              f"NaN or infinite values ({_listing(bad)}); the files already there are kept")
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "epoch": epoch,
        "lr": lr,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "model_pos": state,
        **extra,
    }
    with atomic_write(path) as stream:
        torch.save(checkpoint, stream)
    remove_orphaned_temporaries(path)
    return path

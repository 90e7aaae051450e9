"""Configuration files in the original repository's format, read into this project's schema.

The original SnapPose reads its YAML files (``config/human36m_train.yaml`` and
the ablation configs) with Context-Aware PoseFormer's loader: sections such as
``model: {backbone: {checkpoint}, poseformer: {embed_dim_ratio, depth, levels,
mask_pose, ...}, volume_net: {...}}``, ``loss``, ``dataset``, ``train: {batch_size,
num_workers, ...}`` and ``val: {batch_size, flip_test, num_workers, ...}``. Most of
those keys served CA-PF's own training and have no meaning here. A user who
brings such a file (perhaps one they edited) gets the keys that do mean
something mapped onto ours, and one warning that lists the rest as ignored.
This project's own format stays strict: only a file recognised as the
original's is read this way.

Mapped keys (original -> here):

- ``model.poseformer.embed_dim_ratio`` -> ``model.embed_dim``
- ``model.poseformer.depth`` -> ``model.res_depth`` and ``model.joint_depth``
- ``model.poseformer.levels`` -> must be 4 (the four PoseHRNet feature maps)
- ``model.poseformer.mask_pose`` / ``mask_context`` / ``shuffle_context`` -> ``model.*``
- ``model.backbone.checkpoint`` -> ``weights.backbone`` when that file exists;
  the original code printed this path but always loaded
  ``checkpoint/posehrnet/pose_hrnet_w32_256x192.pth``, and its ablation configs
  name paths that exist nowhere else, so a missing file leaves the default
  search (which includes the original's place) with a warning
- ``train.batch_size`` -> ``data.batch_size``; ``val.batch_size`` -> ``data.eval_batch_size``
- ``train.num_workers`` (else ``val.num_workers``) -> ``data.num_workers``
- ``val.flip_test`` -> ``evaluation.flip_test``

The dataset is the entry script's, as in the original (``kind`` and
``dataset.kind`` are ignored); the number of epochs and the folders come from
the flags (``-e``, ``-c``, ``-w``), as there.
"""
import logging
from pathlib import Path

from common.core.errors import ConfigError

log = logging.getLogger(__name__)

# Top-level sections that exist only in the original's format.
ORIGINAL_ONLY_SECTIONS = ("title", "kind", "azureroot", "batch_output", "vis_freq", "vis_n_elements",
                          "loss", "val")
# The original built its denoiser with these whatever its file said (pose_dformer.PoseTransformer).
ORIGINAL_EMBED_DIM, ORIGINAL_DEPTH, LEVELS = 128, 4, 4


def is_original_format(values):
    """Whether a parsed YAML mapping is in the original repository's format (see the module docstring)."""
    model = values.get("model")
    return (any(key in values for key in ORIGINAL_ONLY_SECTIONS)
            or isinstance(values.get("dataset"), dict)
            or (isinstance(model, dict) and ("poseformer" in model or "volume_net" in model)))


def _flatten(values, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}; mappings are walked, everything else is a leaf."""
    flat = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# The smallest value each mapped original key may take (the rest are booleans).
ORIGINAL_MINIMUM = {"model.poseformer.embed_dim_ratio": 1, "model.poseformer.depth": 1, "train.batch_size": 1,
                    "val.batch_size": 1, "train.num_workers": 0, "val.num_workers": 0}


def _check_original(key, value, source):
    """ConfigError naming the original key when its value has the wrong type or is out of range."""
    if key in ORIGINAL_MINIMUM:
        low = ORIGINAL_MINIMUM[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{source}: {key} = {value!r} ({type(value).__name__}): expected an integer "
                              f">= {low}")
    elif not isinstance(value, bool):
        raise ConfigError(f"{source}: {key} = {value!r} ({type(value).__name__}): expected true or false")


def translate(values, source="config"):
    """Map an original-format mapping onto this project's nested config keys.

    Args:
        values: the parsed YAML mapping.
        source: name of the file, for messages.
    Returns:
        A nested mapping in this project's format (only the mapped keys).
    Raises:
        ConfigError: ``model.poseformer.levels`` other than 4, or a mapped key of the wrong
            type or out of range (``ORIGINAL_MINIMUM``; the switches and ``val.flip_test`` are booleans).
    """
    flat = _flatten(values)
    out = {}
    used = set()

    def put(dotted, value):
        section, key = dotted.split(".")
        out.setdefault(section, {})[key] = value

    def take(original, *ours):
        if original in flat:
            _check_original(original, flat[original], source)
            used.add(original)
            for dotted in ours:
                put(dotted, flat[original])

    levels = flat.get("model.poseformer.levels", LEVELS)
    if levels != LEVELS:
        raise ConfigError(f"{source}: model.poseformer.levels = {levels!r}, but the model has {LEVELS} context "
                          f"levels (one per PoseHRNet feature map); remove the key or set it to {LEVELS}")
    used.add("model.poseformer.levels")
    take("model.poseformer.embed_dim_ratio", "model.embed_dim")
    take("model.poseformer.depth", "model.res_depth", "model.joint_depth")
    for switch in ("mask_pose", "mask_context", "shuffle_context"):
        take(f"model.poseformer.{switch}", f"model.{switch}")
    take("train.batch_size", "data.batch_size")
    take("val.batch_size", "data.eval_batch_size")
    take("val.flip_test", "evaluation.flip_test")
    if "train.num_workers" in flat:
        take("train.num_workers", "data.num_workers")
    else:
        take("val.num_workers", "data.num_workers")

    model = out.get("model", {})
    if model.get("embed_dim", ORIGINAL_EMBED_DIM) != ORIGINAL_EMBED_DIM or \
            model.get("res_depth", ORIGINAL_DEPTH) != ORIGINAL_DEPTH:
        log.warning("%s: model.poseformer sets embed_dim_ratio %s, depth %s; the original code built its "
                    "denoiser with %d and %d whatever the file said, so the released weights and numbers "
                    "are for those; this run uses the file's values", source, model.get("embed_dim"),
                    model.get("res_depth"), ORIGINAL_EMBED_DIM, ORIGINAL_DEPTH)

    backbone = flat.get("model.backbone.checkpoint")
    if backbone is not None and not isinstance(backbone, str):
        raise ConfigError(f"{source}: model.backbone.checkpoint = {backbone!r} ({type(backbone).__name__}): "
                          f"expected a file path (a string)")
    if backbone:
        used.add("model.backbone.checkpoint")
        if Path(backbone).is_file():
            put("weights.backbone", backbone)
        else:
            log.warning("%s: model.backbone.checkpoint %s does not exist; the original code loaded "
                        "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth whatever this key said, so the "
                        "default places are searched (--backbone-weights names another file)", source, backbone)

    ignored = sorted(key for key in flat if key not in used)
    log.info("%s is in the original repository's format; read: %s", source,
             ", ".join(sorted(used & set(flat))) or "nothing")
    if ignored:
        log.warning("%s: %d keys of the original format have no meaning here and are ignored: %s",
                    source, len(ignored), ", ".join(ignored))
    return out

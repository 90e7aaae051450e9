"""Where the released files go: the one layout that the README, the docs, the configs and every default use.

Paths are relative to the folder the commands run in (the repository root). The
released files keep the original repository's names; the SnapPose weights live
in the folders the original README's commands name with ``-c``. A file found in
one of ``OTHER_PLACES`` (where older instructions put it) is still used, with a
one-line note saying where it was expected.
"""
import logging
import os
from pathlib import Path

BACKBONE_WEIGHTS = "checkpoint/pose_hrnet_w32_256x192.pth"
# The original README's place, searched after BACKBONE_WEIGHTS without a note: both are documented.
ORIGINAL_BACKBONE_WEIGHTS = "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth"
CONTEXT_WEIGHTS = {"h36m": "checkpoint/human36m_nips_retrain.bin", "mpi": "checkpoint/mpi-inf_nips_retrain.bin"}
CHECKPOINT_DIRS = {"h36m": "checkpoint/human36m", "mpi": "checkpoint/mpi-inf-3dhpe"}
SNAPPOSE_WEIGHTS = {"h36m": "checkpoint/human36m/best_h36m.bin", "mpi": "checkpoint/mpi-inf-3dhpe/best_mpi.bin"}
DATA_ROOTS = {"h36m": "webdataset/Human36m", "mpi": "webdataset/mpi_inf_3dhp"}
SPLIT_FOLDERS = {"h36m": ("train", "validation"), "mpi": ("train", "test")}

# expected place -> other places where earlier instructions put the same file
OTHER_PLACES = {
    SNAPPOSE_WEIGHTS["h36m"]: ("checkpoint/best_h36m.bin",),
    SNAPPOSE_WEIGHTS["mpi"]: ("checkpoint/mpi/best_mpi.bin", "checkpoint/best_mpi.bin"),
}

log = logging.getLogger("snappose")


def released_files():
    """Every released weight file at its place in the layout (the backbone's first place only)."""
    return [BACKBONE_WEIGHTS, *CONTEXT_WEIGHTS.values(), *SNAPPOSE_WEIGHTS.values()]


def _places(path):
    """The group of known places ``path`` belongs to, expected place first; () for any other path."""
    name = Path(os.path.normpath(path)).as_posix()
    for expected, others in OTHER_PLACES.items():
        if name == expected or name in others:
            return (expected, *others)
    return ()


def find_released(path):
    """``path`` if it exists; else the same released file at another known place, with a note; else ``path``.

    Only a path that is one of the known places (``SNAPPOSE_WEIGHTS`` and
    ``OTHER_PLACES``) is looked for elsewhere, so a file the user names in a
    folder of their own is never swapped for a released one. Returns a Path;
    the caller reports a file that is nowhere.
    """
    path = Path(path)
    if path.exists():
        return path
    for other in _places(path):
        if Path(other).is_file():
            log.warning("%s: not found; using %s (the released layout expects %s)",
                        path, other, _places(path)[0])
            return Path(other)
    return path

"""Atomic file writes: a file is either the previous good one or the whole new one, never a part.

Every writer of results (checkpoints, metrics.json, predictions, shards) goes
through ``atomic_write``: the data goes to a temporary beside the target, is
fsynced and moved into place with ``os.replace``; the temporary is removed on
any failure (an error, Ctrl-C). A full disk becomes a ``DiskFullError`` naming
the file and saying the previous file was kept.
"""
import contextlib
import errno
import glob
import os
from pathlib import Path

from common.core.errors import BadInput


class DiskFullError(OSError):
    """The disk filled up while writing a file; the previous file at that path is untouched."""


class OutputFolderError(BadInput):
    """An output folder that is a file, cannot be created or cannot be written."""


def output_folder(folder, what, error=OutputFolderError):
    """Create ``folder`` if needed and return it as a Path; ``error`` unless this process can write into it.

    The one check of every command's output folder, before any work. ``what`` says
    in the message which argument it is (e.g. "--out folder").
    """
    text = str(folder)
    folder = Path(folder)
    if not text:
        raise error(f"{what}: an empty path was given; name a folder")
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise error(f"{what} {folder}: {blocking} is a file, expected a folder: choose another path or move the file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exn:
        if exn.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exn.errno, f"the disk is full while creating {what} {folder}; free space or "
                                f"write elsewhere") from None
        raise error(f"{what} {folder} cannot be created ({exn.strerror}): choose a path you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{what} {folder} is not writable by this user: choose another folder or fix its permissions")
    return folder


@contextlib.contextmanager
def atomic_write(path, mode="wb", temporary=None):
    """Yield an open stream (``mode`` "wb" or "w") whose content replaces ``path`` only when the block ends.

    ``temporary``: where the data goes first (default ``.<name>.tmp-<pid>`` beside
    ``path``; it must be on the same file system), for writers whose resume step
    looks for their own leftovers.

    Raises:
        DiskFullError: the write hit ENOSPC (or EDQUOT); nothing was replaced.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}") if temporary is None else Path(temporary)
    try:
        with open(temporary, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the rename, so a power cut leaves one whole file
        os.replace(temporary, path)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous file there is kept" if path.exists() else "no file was written"
            raise DiskFullError(error.errno, f"the disk is full while writing {path} ({kept}); free space "
                                f"on {path.parent} or write elsewhere, then run again") from error
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path, text):
    """Atomically replace ``path`` with ``text`` (UTF-8); see ``atomic_write``."""
    with atomic_write(path, "w") as stream:
        stream.write(text)
    return Path(path)


def remove_orphaned_temporaries(path):
    """Delete ``atomic_write``'s default temporaries of ``path`` left by killed writers (kill -9, power cut).

    Only those whose process is gone; a writer still running keeps its temporary.
    """
    path = Path(path)
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        pid = orphan.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            orphan.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

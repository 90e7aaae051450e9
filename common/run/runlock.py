"""One run at a time per output folder: an exclusive lock file in ``-c``.

Two trainings writing into the same folder would mix their checkpoints,
``config.yaml`` and logs; two evaluations would overwrite each other's metrics.
``run_lock(folder, "training")`` holds ``<folder>/training.lock`` (an
``fcntl.flock`` lock, which the system releases when the process dies, even by
kill -9) and writes the holder's pid, host and start time into it, so that a
second run fails at once and says who holds the folder. A lock file left by a
process that died is taken over with a warning. Training and evaluation use
separate locks: evaluating a checkpoint while its training goes on is fine.

Taking the lock also checks the folder before any work: it must be a folder
(created if missing) where this process may write.
"""
import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from common.core.files import output_folder

log = logging.getLogger(__name__)


class RunLockError(RuntimeError):
    """The output folder is held by another run, or cannot be written."""


def check_output_dir(folder, what):
    """Create ``folder`` if needed; raise RunLockError unless it is a folder this process can write to.

    ``what`` says in the message what the folder is for (e.g. "-c (checkpoint folder)").
    """
    return output_folder(folder, what, RunLockError)


def _holder(path):
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder):
    if not isinstance(holder, dict):
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _open_locked(path):
    """Open ``path`` and hold an exclusive flock on it; None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous holder may have removed the file between our open and flock: lock the new one then.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def run_lock(folder, purpose):
    """Hold ``<folder>/<purpose>.lock`` for the duration of the block.

    Raises:
        RunLockError: the folder is not a writable folder, or another live
            process holds the lock (the message names its pid, host and start time).
    """
    folder = check_output_dir(folder, "output folder (-c)")
    path = folder / f"{purpose}.lock"
    fd = _open_locked(path)
    if fd is None:
        raise RunLockError(
            f"{folder} is in use: {_describe(_holder(path))} is running {purpose} there ({path}). Wait for it "
            f"to finish, stop it, or choose another -c folder")
    try:
        stale = _holder(path)
        if stale:
            log.warning("%s: taking over the lock of %s, which ended without releasing it", path, _describe(stale))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "purpose": purpose}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        yield path
    finally:
        # Remove before unlocking, so that no one can lock the old file after we let go of it.
        path.unlink(missing_ok=True)
        os.close(fd)
